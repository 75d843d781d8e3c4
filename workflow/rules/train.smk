# Training: one job per model (configuration, or configuration and experiment) and fold (nnU-Net's trainer). A rerun after a crash,
# a kill or a preemption resumes from <fold folder>/checkpoint_latest.pt.
rule train:
    input:
        unpack(train_inputs),
        # The model's experiment's plans (plans.json, or its own planning's).
        plans=model_plans_file,
        splits=LAYOUT.splits,
        dataset_json=DATASET / "dataset.json",
        # Fine-tuning: the weights decide the result, so changing the file retrains.
        pretrained=pretrained_weights,
        # The cascade's second stage: the previous stage's CV segmentations on its grid.
        previous_stage=previous_stage_input,
    output:
        checkpoint=LAYOUT.checkpoint("{configuration}", "{fold}"),
        progress=report(
            LAYOUT.progress_plot("{configuration}", "{fold}"),
            caption="../report/learning_curves.rst",
            category="3. Training",
            subcategory="{configuration}",
            labels={"configuration": "{configuration}", "fold": "{fold}"},
        ),
    log:
        LOGS / "train" / "{configuration}" / "fold_{fold}.log",
    conda:
        "../../envs/gpu.yaml"
    container:
        config["containers"]["gpu"]
    threads: config["training"]["threads"]
    resources:
        # One GPU per data-parallel process of the fold (training.num_processes).
        gpu=0 if config["training"]["device"] == "cpu" else config["training"]["num_processes"],
    params:
        preprocessed=lambda wc: LAYOUT.preprocessed(preprocessed_configuration(wc.configuration)),
        out_dir=lambda wc: LAYOUT.fold_model(wc.configuration, wc.fold),
        configuration=lambda wc: plans_configuration(wc.configuration),
        # Per model: changing one experiment's overrides reruns only its jobs.
        options=lambda wc: training_options(
            model_experiment(wc.configuration), wc.configuration, wc.fold
        ),
        previous_stage=previous_stage_option,
    shell:
        "python -m segflow --log={log:q} train --plans={input.plans:q}"
        " --configuration={params.configuration:q} --fold={wildcards.fold:q}"
        " --dataset-json={input.dataset_json:q} --splits={input.splits:q}"
        " --preprocessed={params.preprocessed:q} --out-dir={params.out_dir:q}"
        " --threads={threads:q} {params.options:q} {params.previous_stage:q}"
