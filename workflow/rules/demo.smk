# Builds the synthetic demo dataset when the config has a `demo` section.
if DEMO:

    rule make_demo_dataset:
        output:
            DATASET / "dataset.json",
        params:
            dataset=DATASET,
            cases=config["demo"]["cases"],
            test_cases=config["demo"]["test_cases"],
            seed=config["demo"]["seed"],
        conda:
            "../../envs/cpu.yaml"
        log:
            LOGS / "make_demo_dataset.log",
        shell:
            "python -m segflow --log={log:q} make-demo --out={params.dataset:q}"
            " --cases={params.cases:q} --test-cases={params.test_cases:q} --seed={params.seed:q}"
