# Cross-validation folds: written once, before any fold trains.
rule split:
    input:
        report=LAYOUT.dataset_report,
        extra=[config["splits"][k] for k in ("manual", "groups") if config["splits"][k]],
    output:
        LAYOUT.splits,
    log:
        LOGS / "split.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        num_folds=config["splits"]["num_folds"],
        seed=config["seed"],
        options=[
            f"--{k}={argument_path(config['splits'][k])}"
            for k in ("manual", "groups")
            if config["splits"][k]
        ],
    shell:
        "python -m segflow --log={log:q} split --dataset-report={input.report:q}"
        " --num-folds={params.num_folds:q} --seed={params.seed:q} {params.options:q}"
        " --out={output:q}"
