# Model selection and postprocessing, both decided on the cross-validation predictions.
rule select:
    input:
        unpack(selection_inputs),
        dataset_json=DATASET / "dataset.json",
        dataset_report=LAYOUT.dataset_report,
    output:
        selection=LAYOUT.selection,
        predictions=directory(LAYOUT.selection_predictions),
    log:
        LOGS / "select.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        crossval=crossval_folders,
        options=[] if config["selection"]["ensembles"] else ["--no-ensembles"],
    shell:
        "python -m segflow --log={log:q} select --crossval {params.crossval:q}"
        " --dataset-json={input.dataset_json:q} --dataset-report={input.dataset_report:q}"
        " --out={output.selection:q} --predictions-out={output.predictions:q} {params.options:q}"


rule postprocess:
    input:
        predictions=LAYOUT.selection_predictions,
        dataset_json=DATASET / "dataset.json",
    output:
        LAYOUT.postprocessing,
    log:
        LOGS / "postprocess.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        references=DATASET / "labelsTr",
        options=[] if config["postprocessing"]["largest_component"] else ["--no-largest-component"],
    shell:
        "python -m segflow --log={log:q} postprocess --predictions {input.predictions:q}"
        " --references={params.references:q} --dataset-json={input.dataset_json:q}"
        " --out={output:q} {params.options:q}"
