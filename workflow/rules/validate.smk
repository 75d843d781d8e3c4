# Dataset intake: every problem of the raw dataset in one report, before any other work.
checkpoint validate_dataset:
    input:
        dataset_files,
    output:
        LAYOUT.dataset_report,
    log:
        LOGS / "validate_dataset.log",
    conda:
        "../../envs/cpu.yaml"
    threads: config["validation"]["threads"]
    params:
        dataset=DATASET,
    shell:
        "python -m segflow --log={log:q} validate-dataset --dataset={params.dataset:q}"
        " --workers={threads:q} --out={output:q}"
