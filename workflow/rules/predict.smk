# Test images (imagesTs): the selected model predicts each case (its configurations' folds
# ensembled), postprocessing is applied to all of them, and cases with a label are scored.
rule predict:
    input:
        images=test_case_images,
        selection=LAYOUT.selection,
        models=trained_models,
    output:
        LAYOUT.raw_prediction("{case}", "{ending}"),
    log:
        LOGS / "predict" / "{case}{ending}.log",
    conda:
        "../../envs/gpu.yaml"
    container:
        config["containers"]["gpu"]
    threads: config["inference"]["threads"]
    resources:
        gpu=0 if config["inference"]["device"] == "cpu" else 1,
    params:
        models=LAYOUT.models,
        out_dir=LAYOUT.raw_predictions,
        options=prediction_options(),
    shell:
        "python -m segflow --log={log:q} predict -i {input.images:q} --output={params.out_dir:q}"
        " --model={params.models:q} --selection={input.selection:q} --no-postprocessing"
        " --threads={threads:q} {params.options:q}"


rule apply_postprocessing:
    input:
        raw=raw_test_predictions,
        postprocessing=LAYOUT.postprocessing,
        dataset_json=DATASET / "dataset.json",
    output:
        directory(LAYOUT.predictions),
    log:
        LOGS / "apply_postprocessing.log",
    conda:
        "../../envs/cpu.yaml"
    shell:
        "python -m segflow --log={log:q} apply-postprocessing"
        " --postprocessing={input.postprocessing:q} -i {input.raw:q} --output={output:q}"
        " --dataset-json={input.dataset_json:q}"


rule evaluate:
    input:
        predictions=LAYOUT.predictions,
        labels=test_labels,
        dataset_json=DATASET / "dataset.json",
    output:
        metrics=LAYOUT.test_metrics,
        summary=LAYOUT.test_summary,
    log:
        LOGS / "evaluate.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        cases=labelled_test_predictions,
        references=DATASET / "labelsTs",
    shell:
        "python -m segflow --log={log:q} evaluate --references={params.references:q}"
        " --predictions {params.cases:q} --dataset-json={input.dataset_json:q}"
        " --metrics-out={output.metrics:q} --summary-out={output.summary:q}"
