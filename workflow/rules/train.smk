# Training: one job per configuration and fold (nnU-Net's trainer). A rerun after a crash,
# a kill or a preemption resumes from <fold folder>/checkpoint_latest.pt.
rule train:
    input:
        unpack(train_inputs),
        plans=RESULTS / "plans.json",
        splits=RESULTS / "splits.json",
        dataset_json=DATASET / "dataset.json",
    output:
        checkpoint=RESULTS / "models" / "{configuration}" / "fold_{fold}" / "checkpoint_final.pt",
        progress=report(
            RESULTS / "models" / "{configuration}" / "fold_{fold}" / "progress.png",
            caption="../report/learning_curves.rst",
            category="3. Training",
            subcategory="{configuration}",
            labels={"configuration": "{configuration}", "fold": "{fold}"},
        ),
    params:
        preprocessed=lambda wc: RESULTS / "preprocessed" / preprocessed_configuration(wc.configuration),
        out_dir=lambda wc: RESULTS / "models" / wc.configuration / f"fold_{wc.fold}",
        options=training_options(),
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    conda:
        "../../envs/gpu.yaml"
    container:
        config["containers"]["gpu"]
    log:
        LOGS / "train" / "{configuration}" / "fold_{fold}.log",
    shell:
        "python -m segflow --log={log:q} train --plans={input.plans:q}"
        " --configuration={wildcards.configuration:q} --fold={wildcards.fold:q}"
        " --dataset-json={input.dataset_json:q} --splits={input.splits:q}"
        " --preprocessed={params.preprocessed:q} --out-dir={params.out_dir:q}"
        " --threads={threads:q} {params.options:q}"
