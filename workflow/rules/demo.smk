# Builds the synthetic demo dataset when the config has a `demo` section.
if DEMO:

    rule make_demo_dataset:
        output:
            DATASET / "dataset.json",
        log:
            LOGS / "make_demo_dataset.log",
        conda:
            "../../envs/cpu.yaml"
        params:
            dataset=DATASET,
            cases=config["demo"]["cases"],
            test_cases=config["demo"]["test_cases"],
            seed=config["demo"]["seed"],
        shell:
            "python -m segflow --log={log:q} make-demo --out={params.dataset:q}"
            " --cases={params.cases:q} --test-cases={params.test_cases:q} --seed={params.seed:q}"
