# Preprocessing: each configuration's training cases, in batches of
# `preprocessing.cases_per_job` (one process per batch, `threads` workers inside it). Case files
# go to <results>/preprocessed/<configuration>/; a batch's manifest is written last and lists
# its complete cases.
rule preprocess:
    input:
        unpack(preprocess_batch_inputs),
        plans=LAYOUT.plans,
        dataset_json=DATASET / "dataset.json",
    output:
        LAYOUT.preprocess_manifest("{configuration}", "{batch}"),
    params:
        report=LAYOUT.dataset_report,
        case_ids=lambda wc: " ".join(preprocess_batches()[wc.batch]),
        out_dir=lambda wc: LAYOUT.preprocessed(wc.configuration),
    threads: config["preprocessing"]["threads"]
    resources:
        mem_mb=preprocess_mem_mb,
    conda:
        "../../envs/cpu.yaml"
    log:
        LOGS / "preprocess" / "{configuration}" / "{batch}.log",
    shell:
        "python -m segflow --log {log} preprocess --plans {input.plans}"
        " --configuration {wildcards.configuration} --dataset-json {input.dataset_json}"
        " --dataset-report {params.report} --case-ids {params.case_ids}"
        " --workers {threads} --out-dir {params.out_dir} --manifest {output}"
