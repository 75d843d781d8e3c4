"""The text every run ends with: headline numbers and paths from the run's own files, nothing
for a result that does not exist, and the report command."""

from __future__ import annotations

import io
import json
from pathlib import Path

from segflow.run_summary import report_command, run_summary_lines, write_run_summary


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def _finished(root: Path) -> Path:
    for name, dice in (("2d__BL", 0.8081), ("2d__BL+GN", 0.7912)):
        _write(root / "crossval" / name / "summary.json",
               {"mean_foreground_dice": dice, "num_cases": 20})  # fmt: skip
        (root / "crossval" / name / "fold_0").mkdir()
    _write(
        root / "selection.json",
        {
            "candidates": [{}, {}, {}],
            "selected": {"name": "2d__BL", "configurations": ["2d__BL"], "folds": [0],
                         "mean_foreground_dice": 0.8081},
        },
    )  # fmt: skip
    _write(root / "postprocessing.json", {"format": 1, "rules": []})
    _write(
        root / "test_summary.json",
        {"num_cases": 60, "mean_foreground_dice": 0.804,
         "mean": {"anterior": {"dice": 0.81}, "posterior": {"dice": 0.798}}},
    )  # fmt: skip
    (root / "predictions").mkdir()
    for case in ("a", "b"):
        (root / "predictions" / f"{case}.nii.gz").write_bytes(b"x")
    (root / "predictions" / ".snakemake_timestamp").write_bytes(b"")  # not a prediction
    (root / "model" / "2d__BL" / "fold_0").mkdir(parents=True)
    (root / "model" / "2d__BL" / "fold_0" / "checkpoint_final.pt").write_bytes(b"w" * 2_500_000)
    return root


def test_a_finished_run_says_its_numbers_and_paths(tmp_path):
    root = _finished(tmp_path / "out")
    lines = run_summary_lines(root, ["config/drive.yaml"])
    text = "\n".join(lines)
    assert lines[0] == f"segflow: the run finished; its results are in {root}/"
    assert (
        f"cross-validation 2d__BL: mean foreground Dice 0.808 (20 cases, 1 fold(s)) -> "
        f"{root / 'crossval' / '2d__BL' / 'summary.json'}"
    ) in text
    assert "cross-validation 2d__BL+GN: mean foreground Dice 0.791" in text
    assert "selected: 2d__BL (cross-validation Dice 0.808, best of 3 candidate(s))" in text
    assert "postprocessing rules kept: none" in text
    assert (
        "test set (60 cases): mean foreground Dice 0.804 (anterior 0.810, posterior 0.798)" in text
    )
    assert f"test predictions: 2 case(s) in {root / 'predictions'}/" in text
    assert f"exported model: {root / 'model'} (2.5 MB)" in text
    assert f"logs of every job (training's epoch by epoch): {root / 'logs'}/" in text
    # No report yet: the command that builds it, with the run's config file.
    assert lines[-1].endswith(
        f"snakemake --report {root / 'report.html'} --configfile config/drive.yaml"
    )
    (root / "report.html").write_text("<html>")
    assert run_summary_lines(root)[-1] == f"  report: {root / 'report.html'}"


def test_what_a_run_did_not_make_is_left_out(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    lines = run_summary_lines(root)
    assert len(lines) == 3  # the folder, the logs and the report command
    assert not any(w in "\n".join(lines) for w in ("selected", "test set", "exported"))


def test_the_report_command_quotes_paths():
    command = report_command(Path("/r s/out"), ["my config.yaml"])
    assert command == "snakemake --report '/r s/out/report.html' --configfile 'my config.yaml'"


def test_write_run_summary_writes_the_lines(tmp_path):
    root = _finished(tmp_path / "out")
    stream = io.StringIO()
    write_run_summary(root, stream=stream)
    assert stream.getvalue() == "\n" + "\n".join(run_summary_lines(root)) + "\n"
