"""write_report_pages: every file under its fixed name, test pages only with test metrics,
and the real demo run's files where they exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.layout import REPORT_FILES, TEST_REPORT_FILES
from segflow.report import write_report_pages

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "results" / "demo"
DEMO_DATASET_JSON = REPO / "resources" / "demo" / "Dataset990_SegflowDemo" / "dataset.json"


def _inputs(json_files, crossval_csvs):
    return {
        "dataset_json": json_files["dataset_json"],
        "dataset_report": json_files["dataset_report"],
        "fingerprint": json_files["fingerprint"],
        "plans": json_files["plans"],
        "crossval_metrics": crossval_csvs,
        "selection": json_files["selection"],
        "postprocessing": json_files["postprocessing"],
    }


def test_writes_every_page_with_test_metrics(tmp_path, json_files, crossval_csvs, test_csv):
    out = tmp_path / "report"
    paths = write_report_pages(
        **_inputs(json_files, crossval_csvs), test_metrics=test_csv, out_dir=out
    )
    expected = {**REPORT_FILES, **TEST_REPORT_FILES}
    assert paths == {name: out / file for name, file in expected.items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected.values())
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_without_test_metrics_no_test_pages(tmp_path, json_files, crossval_csvs):
    out = tmp_path / "report"
    paths = write_report_pages(**_inputs(json_files, crossval_csvs), out_dir=out)
    assert set(paths) == set(REPORT_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES.values())
    assert not (out / "test.html").exists() and not (out / "test_dice.png").exists()


@pytest.mark.skipif(
    not (DEMO / "crossval" / "2d" / "metrics.csv").is_file() or not DEMO_DATASET_JSON.is_file(),
    reason="no finished demo run in results/demo",
)
def test_the_demo_run(tmp_path, selection, postprocessing, self_contained):
    """The demo's real artifacts; selection and postprocessing are fabricated (the demo run
    does not make them yet) and 3d_fullres's table stands in for test metrics."""
    configurations = sorted(
        p.name for p in (DEMO / "crossval").iterdir() if (p / "metrics.csv").is_file()
    )
    metrics = {c: DEMO / "crossval" / c / "metrics.csv" for c in configurations}
    paths = write_report_pages(
        dataset_json=DEMO_DATASET_JSON,
        dataset_report=DEMO / "dataset_report.json",
        fingerprint=DEMO / "fingerprint.json",
        plans=DEMO / "plans.json",
        crossval_metrics=metrics,
        selection=selection,
        postprocessing=postprocessing,
        test_metrics=metrics[configurations[0]],
        out_dir=tmp_path,
    )
    for name, path in paths.items():
        if path.suffix == ".html":
            self_contained(path.read_text(encoding="utf-8"))
        else:
            assert path.read_bytes()[:4] == b"\x89PNG", name
    crossval = paths["crossval"].read_text(encoding="utf-8")
    for configuration in configurations:
        # The page's means agree with the summary the cross-validation wrote.
        summary = json.loads((DEMO / "crossval" / configuration / "summary.json").read_text())
        assert f"{summary['mean_foreground_dice']:.3f}" in crossval
        for name in summary["classes"]:
            assert f"{summary['mean'][name]['dice']:.3f} ± " in crossval
    plans = json.loads((DEMO / "plans.json").read_text())
    plans_page = paths["plans"].read_text(encoding="utf-8")
    for name in plans["configurations"]:
        assert f"<tr><td>{name}</td>" in plans_page
