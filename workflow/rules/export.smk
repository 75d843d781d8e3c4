# The exportable model: the selected configurations' final checkpoints (inference-only),
# plans, fingerprint, selection, postprocessing and a README, as a folder and a zip that
# `segflow predict -m` and `segflow import-model` take on another machine.
rule export:
    input:
        dataset_json=DATASET / "dataset.json",
        plans=LAYOUT.plans,
        # The experiments' own plans (experiments.<name>.planning), for the models they trained.
        experiment_plans=lambda wc: [plans_file(p) for p in used_plans() if p is not None],
        fingerprint=LAYOUT.fingerprint,
        selection=LAYOUT.selection,
        postprocessing=LAYOUT.postprocessing,
        models=trained_models,
        crossval=crossval_summaries,
    output:
        model=directory(LAYOUT.model),
        zip=LAYOUT.model_zip,
    log:
        LOGS / "export.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        models=LAYOUT.models,
        crossval=LAYOUT.crossval,
        model_plans=lambda wc: [
            f"--model-plans={model}={plans_file(model_plans(model))}"
            for model in trained_configurations()
            if model_plans(model) is not None
        ],
    shell:
        "python -m segflow --log={log:q} export --dataset-json={input.dataset_json:q}"
        " --plans={input.plans:q} --fingerprint={input.fingerprint:q}"
        " --selection={input.selection:q} --postprocessing={input.postprocessing:q}"
        " --models={params.models:q} --crossval={params.crossval:q} --out={output.model:q}"
        " --zip={output.zip:q} {params.model_plans:q}"
