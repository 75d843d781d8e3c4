# Cross-validation: each fold predicts the cases it held out (final checkpoint, test-time
# mirroring) and scores them against the raw labels; crossval merges the folds per configuration.
rule validate:
    input:
        unpack(train_inputs),
        checkpoint=LAYOUT.checkpoint("{configuration}", "{fold}"),
        plans=model_plans_file,
        splits=LAYOUT.splits,
        dataset_json=DATASET / "dataset.json",
        dataset_report=LAYOUT.dataset_report,
        previous_stage=previous_stage_input,
    output:
        metrics=LAYOUT.fold_metrics("{configuration}", "{fold}"),
        summary=LAYOUT.fold_summary("{configuration}", "{fold}"),
        predictions=directory(LAYOUT.fold_predictions("{configuration}", "{fold}")),
        # Class probabilities for ensembles: empty unless RUN.save_cv_probabilities; deleted once
        # `select` has read them unless inference.save_probabilities keeps them.
        probabilities=cv_probabilities_output(),
    log:
        LOGS / "validate" / "{configuration}" / "fold_{fold}.log",
    conda:
        "../../envs/gpu.yaml"
    container:
        config["containers"]["gpu"]
    threads: config["inference"]["threads"]
    resources:
        gpu=0 if config["inference"]["device"] == "cpu" else 1,
    params:
        preprocessed=lambda wc: LAYOUT.preprocessed(preprocessed_configuration(wc.configuration)),
        out_dir=lambda wc: LAYOUT.validation_folder(wc.configuration, wc.fold),
        configuration=lambda wc: plans_configuration(wc.configuration),
        options=inference_options(),
        previous_stage=previous_stage_option,
    shell:
        "python -m segflow --log={log:q} validate-fold --plans={input.plans:q}"
        " --configuration={params.configuration:q} --fold={wildcards.fold:q}"
        " --dataset-json={input.dataset_json:q} --dataset-report={input.dataset_report:q}"
        " --splits={input.splits:q} --preprocessed={params.preprocessed:q}"
        " --checkpoint={input.checkpoint:q} --out-dir={params.out_dir:q} --threads={threads:q}"
        " {params.options:q} {params.previous_stage:q}"


# The cascade: the previous stage's cross-validation segmentations (each case predicted by the
# fold that held it out), on the grid of the cascade stage; its every fold waits for them all.
rule previous_stage:
    input:
        unpack(previous_stage_inputs),
        plans=model_plans_file,
        splits=LAYOUT.splits,
        dataset_json=DATASET / "dataset.json",
    output:
        directory(LAYOUT.previous_stage("{configuration}")),
    log:
        LOGS / "previous_stage" / "{configuration}.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        preprocessed=lambda wc: LAYOUT.preprocessed(preprocessed_configuration(wc.configuration)),
        configuration=lambda wc: plans_configuration(wc.configuration),
    shell:
        "python -m segflow --log={log:q} previous-stage --plans={input.plans:q}"
        " --configuration={params.configuration:q} --dataset-json={input.dataset_json:q}"
        " --splits={input.splits:q} --fold-predictions {input.predictions:q}"
        " --preprocessed={params.preprocessed:q} --out-dir={output:q}"


rule crossval:
    input:
        metrics=lambda wc: expand(
            LAYOUT.fold_metrics("{configuration}", "{fold}"),
            configuration=wc.configuration,
            fold=training_folds(),
        ),
        # For the ablation table: the model's parameters and seconds per iteration.
        checkpoints=lambda wc: expand(
            LAYOUT.checkpoint("{configuration}", "{fold}"),
            configuration=wc.configuration,
            fold=training_folds(),
        ),
    output:
        metrics=LAYOUT.crossval_metrics("{configuration}"),
        summary=LAYOUT.crossval_summary("{configuration}"),
    log:
        LOGS / "crossval" / "{configuration}.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        out_dir=lambda wc: LAYOUT.crossval_folder(wc.configuration),
    shell:
        "python -m segflow --log={log:q} crossval --configuration={wildcards.configuration:q}"
        " --fold-metrics {input.metrics:q} --checkpoints {input.checkpoints:q}"
        " --out-dir={params.out_dir:q}"
