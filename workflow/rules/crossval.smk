# Cross-validation: each fold predicts the cases it held out (final checkpoint, test-time
# mirroring) and scores them against the raw labels; crossval merges the folds per configuration.
rule validate:
    input:
        unpack(train_inputs),
        checkpoint=RESULTS / "models" / "{configuration}" / "fold_{fold}" / "checkpoint_final.pt",
        plans=RESULTS / "plans.json",
        splits=RESULTS / "splits.json",
        dataset_json=DATASET / "dataset.json",
        dataset_report=RESULTS / "dataset_report.json",
    output:
        metrics=RESULTS / "crossval" / "{configuration}" / "fold_{fold}" / "metrics.csv",
        summary=RESULTS / "crossval" / "{configuration}" / "fold_{fold}" / "summary.json",
        predictions=directory(
            RESULTS / "crossval" / "{configuration}" / "fold_{fold}" / "predictions"
        ),
        # Class probabilities for ensembles: empty unless SAVE_CV_PROBABILITIES; deleted once
        # `select` has read them unless inference.save_probabilities keeps them.
        probabilities=cv_probabilities_output(),
    params:
        preprocessed=lambda wc: RESULTS / "preprocessed" / preprocessed_configuration(wc.configuration),
        out_dir=lambda wc: RESULTS / "crossval" / wc.configuration / f"fold_{wc.fold}",
        options=inference_options(),
    threads: config["inference"]["threads"]
    resources:
        gpu=0 if config["inference"]["device"] == "cpu" else 1,
    conda:
        "../../envs/gpu.yaml"
    container:
        config["containers"]["gpu"]
    log:
        LOGS / "validate" / "{configuration}" / "fold_{fold}.log",
    shell:
        "python -m segflow --log={log:q} validate-fold --plans={input.plans:q}"
        " --configuration={wildcards.configuration:q} --fold={wildcards.fold:q}"
        " --dataset-json={input.dataset_json:q} --dataset-report={input.dataset_report:q}"
        " --splits={input.splits:q} --preprocessed={params.preprocessed:q}"
        " --checkpoint={input.checkpoint:q} --out-dir={params.out_dir:q} --threads={threads:q}"
        " {params.options:q}"


rule crossval:
    input:
        lambda wc: expand(
            RESULTS / "crossval" / "{configuration}" / "fold_{fold}" / "metrics.csv",
            configuration=wc.configuration,
            fold=training_folds(),
        ),
    output:
        metrics=RESULTS / "crossval" / "{configuration}" / "metrics.csv",
        summary=RESULTS / "crossval" / "{configuration}" / "summary.json",
    params:
        out_dir=lambda wc: RESULTS / "crossval" / wc.configuration,
    conda:
        "../../envs/cpu.yaml"
    log:
        LOGS / "crossval" / "{configuration}.log",
    shell:
        "python -m segflow --log={log:q} crossval --configuration={wildcards.configuration:q}"
        " --fold-metrics {input:q} --out-dir={params.out_dir:q}"
