# The dataset fingerprint: one job per batch of `fingerprint.cases_per_job` training cases
# (scatter; `threads` worker processes inside each), then one gather. A changed case
# refingerprints only its batch.
rule fingerprint_batch:
    input:
        unpack(fingerprint_batch_inputs),
        dataset_json=DATASET / "dataset.json",
    output:
        LAYOUT.fingerprint_batch("{batch}"),
    log:
        LOGS / "fingerprint" / "{batch}.log",
    conda:
        "../../envs/cpu.yaml"
    threads: config["fingerprint"]["threads"]
    resources:
        mem_mb=fingerprint_batch_mem_mb,
    params:
        # The report names the batch's cases; their files are the inputs above, so the report
        # itself, rewritten whenever any case changes, does not rerun every batch.
        report=LAYOUT.dataset_report,
        cases_per_job=config["fingerprint"]["cases_per_job"],
        seed=config["seed"],
        samples=config["fingerprint"]["samples_per_case"],
    shell:
        "python -m segflow --log={log:q} fingerprint-batch --dataset-json={input.dataset_json:q}"
        " --dataset-report={params.report:q} --batch={wildcards.batch:q}"
        " --cases-per-job={params.cases_per_job:q} --seed={params.seed:q}"
        " --samples={params.samples:q} --workers={threads:q} --out={output:q}"


rule fingerprint:
    input:
        dataset_json=DATASET / "dataset.json",
        batches=lambda wc: [LAYOUT.fingerprint_batch(b) for b in fingerprint_batches()],
    output:
        LAYOUT.fingerprint,
    log:
        LOGS / "fingerprint.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=fingerprint_mem_mb,
    params:
        seed=config["seed"],
    shell:
        "python -m segflow --log={log:q} fingerprint --dataset-json={input.dataset_json:q}"
        " --batches {input.batches:q} --seed={params.seed:q} --out={output:q}"
