# Dataset intake: every problem of the raw dataset in one report, before any other work.
checkpoint validate_dataset:
    input:
        dataset_files,
    output:
        LAYOUT.dataset_report,
    params:
        dataset=DATASET,
    threads: config["validation"]["threads"]
    conda:
        "../../envs/cpu.yaml"
    log:
        LOGS / "validate_dataset.log",
    shell:
        "python -m segflow --log={log:q} validate-dataset --dataset={params.dataset:q}"
        " --workers={threads:q} --out={output:q}"
