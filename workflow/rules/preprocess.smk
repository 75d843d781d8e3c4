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
    log:
        LOGS / "preprocess" / "{configuration}" / "{batch}.log",
    conda:
        "../../envs/cpu.yaml"
    threads: config["preprocessing"]["threads"]
    resources:
        mem_mb=preprocess_mem_mb,
    params:
        report=LAYOUT.dataset_report,
        # One `--case-ids=<id>` each: an id beginning with '-' is still a value.
        case_ids=lambda wc: [f"--case-ids={c}" for c in preprocess_batches()[wc.batch]],
        out_dir=lambda wc: LAYOUT.preprocessed(wc.configuration),
    shell:
        "python -m segflow --log={log:q} preprocess --plans={input.plans:q}"
        " --configuration={wildcards.configuration:q} --dataset-json={input.dataset_json:q}"
        " --dataset-report={params.report:q} {params.case_ids:q}"
        " --workers={threads:q} --out-dir={params.out_dir:q} --manifest={output:q}"


# The data of an experiment's own plans (experiments.<name>.planning) that no configuration of
# plans.json preprocesses alike (segflow/preprocessing/sharing.py): <configuration>__<plans>/.
rule preprocess_experiment:
    input:
        unpack(preprocess_batch_inputs),
        plans=lambda wc: plans_file(wc.plans),
        dataset_json=DATASET / "dataset.json",
    output:
        LAYOUT.preprocess_manifest(model_name("{configuration}", "{plans}"), "{batch}"),
    log:
        LOGS / "preprocess" / model_name("{configuration}", "{plans}") / "{batch}.log",
    conda:
        "../../envs/cpu.yaml"
    threads: config["preprocessing"]["threads"]
    resources:
        mem_mb=preprocess_mem_mb,
    params:
        report=LAYOUT.dataset_report,
        case_ids=lambda wc: [f"--case-ids={c}" for c in preprocess_batches()[wc.batch]],
        out_dir=lambda wc: LAYOUT.preprocessed(model_name(wc.configuration, wc.plans)),
    shell:
        "python -m segflow --log={log:q} preprocess --plans={input.plans:q}"
        " --configuration={wildcards.configuration:q} --dataset-json={input.dataset_json:q}"
        " --dataset-report={params.report:q} {params.case_ids:q}"
        " --workers={threads:q} --out-dir={params.out_dir:q} --manifest={output:q}"


# <configuration>__<plans> matches `preprocess` too, as one configuration name.
ruleorder: preprocess_experiment > preprocess
