"""Every page and figure of the Snakemake report, written in one call.

The workflow's report rule calls :func:`write_report_pages` and marks each file it returns
with ``report(..., caption="../report/<name>.rst")``; the captions live in
``workflow/report/`` under the same names as the keys of
:data:`segflow.layout.REPORT_FILES`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from segflow.layout import REPORT_FILES, TEST_REPORT_FILES
from segflow.report.evaluation_pages import crossval_page, selection_page, test_page
from segflow.report.inputs import JsonSource
from segflow.report.planning_pages import dataset_page, plans_page
from segflow.report.plots import crossval_boxplot, test_boxplot

__all__ = ["write_report_pages"]


def write_report_pages(
    *,
    dataset_json: JsonSource,
    dataset_report: JsonSource,
    fingerprint: JsonSource,
    plans: JsonSource,
    crossval_metrics: Mapping[str, str | os.PathLike[str]],
    selection: JsonSource,
    postprocessing: JsonSource,
    test_metrics: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
) -> dict[str, Path]:
    """Write the report's pages and figures into ``out_dir`` under fixed names.

    Args:
        dataset_json: ``dataset.json`` of the raw dataset.
        dataset_report: ``dataset_report.json``.
        fingerprint: ``fingerprint.json``.
        plans: ``plans.json``.
        crossval_metrics: configuration -> its merged cross-validation ``metrics.csv``.
        selection: ``selection.json``.
        postprocessing: ``postprocessing.json``.
        test_metrics: ``test_metrics.csv``; None when there is no labelled test set, and then
            no test pages are written.
        out_dir: the folder to write into (created if needed).

    Returns:
        Item name (the keys of :data:`segflow.layout.REPORT_FILES`, plus ``TEST_REPORT_FILES``
        with test metrics) -> the file written.

    Raises:
        SegflowError: an input is missing or malformed.
    """
    out = Path(out_dir)
    paths = {name: out / file for name, file in REPORT_FILES.items()}
    dataset_page(dataset_json, dataset_report, fingerprint, paths["dataset"])
    plans_page(plans, paths["plans"])
    crossval_page(crossval_metrics, paths["crossval"])
    crossval_boxplot(crossval_metrics, paths["crossval_dice"])
    selection_page(selection, postprocessing, paths["selection"])
    if test_metrics is not None:
        paths.update({name: out / file for name, file in TEST_REPORT_FILES.items()})
        test_page(test_metrics, paths["test"])
        test_boxplot(test_metrics, paths["test_dice"])
    return paths
