# Self-supervised pretraining (training.ssl_pretrain): one job per model (configuration, or
# configuration and experiment) and fold, on that fold's training cases only, whose checkpoint
# the fold starts from: its cross-validation is measured on cases its encoder never saw.
rule pretrain:
    input:
        unpack(train_inputs),
        # pretraining.test_images: the dataset report and the test images.
        unpack(pretraining_test_inputs),
        # The model's experiment's plans (plans.json, or its own planning's).
        plans=model_plans_file,
        splits=LAYOUT.splits,
        dataset_json=DATASET / "dataset.json",
    output:
        checkpoint=LAYOUT.ssl_checkpoint("{configuration}", "{fold}"),
        progress=report(
            LAYOUT.ssl_progress_plot("{configuration}", "{fold}"),
            caption="../report/ssl_pretraining.rst",
            category="3. Training",
            subcategory="{configuration}",
            labels={
                "configuration": "{configuration}",
                "fold": "{fold}",
                "stage": "self-supervised pretraining",
            },
        ),
    log:
        LOGS / "pretrain" / "{configuration}" / "fold_{fold}.log",
    conda:
        "../../envs/gpu.yaml"
    container:
        config["containers"]["gpu"]
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    params:
        preprocessed=lambda wc: LAYOUT.preprocessed(preprocessed_configuration(wc.configuration)),
        out_dir=lambda wc: LAYOUT.pretraining(wc.configuration, wc.fold),
        configuration=lambda wc: plans_configuration(wc.configuration),
        options=lambda wc: pretraining_options(model_experiment(wc.configuration)),
        test_images=pretraining_test_option,
    shell:
        "python -m segflow --log={log:q} pretrain --plans={input.plans:q}"
        " --configuration={params.configuration:q} --dataset-json={input.dataset_json:q}"
        " --splits={input.splits:q} --fold={wildcards.fold:q} --preprocessed={params.preprocessed:q}"
        " --out-dir={params.out_dir:q} --threads={threads:q} {params.options:q}"
        " {params.test_images:q}"
