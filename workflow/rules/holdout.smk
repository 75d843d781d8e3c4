# Builds `dataset` from `holdout.source` with `holdout.test_cases` training cases held out
# as imagesTs/labelsTs (symbolic links; no image is copied) when the config has a `holdout`
# section.
if HOLDOUT is not None:

    rule make_holdout:
        output:
            DATASET / "dataset.json",
        log:
            LOGS / "make_holdout.log",
        conda:
            "../../envs/cpu.yaml"
        params:
            source=argument_path(HOLDOUT["source"]),
            dataset=DATASET,
            test_cases=HOLDOUT["test_cases"],
            seed=HOLDOUT["seed"],
            existing=HOLDOUT["existing_test_cases"],
        shell:
            "python -m segflow --log={log:q} holdout --dataset={params.source:q}"
            " --output={params.dataset:q} --num-test={params.test_cases:q} --seed={params.seed:q}"
            " --existing-test-cases={params.existing:q}"
