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
        "python -m segflow --log={log:q} fingerprint-case --dataset-json={input.dataset_json:q}"
        " --case-id={wildcards.case:q} --images {input.images:q} --label={input.label:q}"
        " --seed={params.seed:q} --samples={params.samples:q} --out={output:q}"


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
        "python -m segflow --log={log:q} fingerprint --dataset-json={input.dataset_json:q}"
        " --cases {input.cases:q} --seed={params.seed:q} --out={output:q}"
