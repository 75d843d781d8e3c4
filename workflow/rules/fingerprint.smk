# The dataset fingerprint: one job per training case (scatter), then one gather.
rule fingerprint_case:
    input:
        unpack(training_case_files),
        dataset_json=DATASET / "dataset.json",
    output:
        RESULTS / "fingerprint" / "cases" / "{case}.json",
    params:
        seed=config["seed"],
        samples=config["fingerprint"]["samples_per_case"],
    resources:
        mem_mb=fingerprint_case_mem_mb,
    conda:
        "../../envs/cpu.yaml"
    log:
        LOGS / "fingerprint" / "{case}.log",
    shell:
        "python -m segflow --log {log} fingerprint-case --dataset-json {input.dataset_json}"
        " --case-id {wildcards.case} --images {input.images} --label {input.label}"
        " --seed {params.seed} --samples {params.samples} --out {output}"


rule fingerprint:
    input:
        dataset_json=DATASET / "dataset.json",
        cases=lambda wc: expand(
            RESULTS / "fingerprint" / "cases" / "{case}.json", case=training_case_ids()
        ),
    output:
        RESULTS / "fingerprint.json",
    params:
        seed=config["seed"],
    resources:
        mem_mb=fingerprint_mem_mb,
    conda:
        "../../envs/cpu.yaml"
    log:
        LOGS / "fingerprint.log",
    shell:
        "python -m segflow --log {log} fingerprint --dataset-json {input.dataset_json}"
        " --cases {input.cases} --seed {params.seed} --out {output}"
