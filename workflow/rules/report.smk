# The pages and figures of `snakemake --report report.html` (captions in workflow/report/).
# The learning curves are the train jobs' progress.png.
rule report_pages:
    input:
        dataset_json=DATASET / "dataset.json",
        dataset_report=LAYOUT.dataset_report,
        fingerprint=LAYOUT.fingerprint,
        plans=LAYOUT.plans,
        crossval=lambda wc: [LAYOUT.crossval_metrics(c) for c in trained_configurations()],
        selection=LAYOUT.selection,
        postprocessing=LAYOUT.postprocessing,
    output:
        report_outputs(REPORT_FILES),
    log:
        LOGS / "report_pages.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        out_dir=LAYOUT.report,
    shell:
        "python -m segflow --log={log:q} report-pages --part=main"
        " --dataset-json={input.dataset_json:q} --dataset-report={input.dataset_report:q}"
        " --fingerprint={input.fingerprint:q} --plans={input.plans:q}"
        " --crossval-metrics {input.crossval:q} --selection={input.selection:q}"
        " --postprocessing={input.postprocessing:q} --out-dir={params.out_dir:q}"


if HAS_TEST_LABELS:

    rule report_test_pages:
        input:
            metrics=LAYOUT.test_metrics,
        output:
            report_outputs(TEST_REPORT_FILES),
        log:
            LOGS / "report_test_pages.log",
        conda:
            "../../envs/cpu.yaml"
        params:
            out_dir=LAYOUT.report,
        shell:
            "python -m segflow --log={log:q} report-pages --part=test"
            " --test-metrics={input.metrics:q} --out-dir={params.out_dir:q}"
