# Builds `dataset` from `holdout.source` with `holdout.test_cases` training cases held out
# as imagesTs/labelsTs (symbolic links; no image is copied) when the config has a `holdout`
# section.
if HOLDOUT is not None:

    rule make_holdout:
        output:
            DATASET / "dataset.json",
        params:
            source=HOLDOUT["source"],
            dataset=DATASET,
            test_cases=HOLDOUT["test_cases"],
            seed=HOLDOUT["seed"],
        conda:
            "../../envs/cpu.yaml"
        log:
            LOGS / "make_holdout.log",
        shell:
            "python -m segflow --log {log} holdout --dataset {params.source}"
            " --output {params.dataset} --num-test {params.test_cases} --seed {params.seed}"
