"""What a finished run says last: where its results are, its headline numbers, and how to
build the report.

The Snakefile's ``onsuccess`` handler calls :func:`write_run_summary` once (a plain
``snakemake`` run, not only ``make demo``); ``scripts/demo_summary.py`` prints the same text.
Everything comes from the run's own files: a result that does not exist yet (a run that
stopped at ``snakemake preprocessed``, a dataset without test labels) is left out, never
guessed. Standard library only: the Snakefile imports it at every start.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from segflow.layout import SUMMARY_FILE, Results

__all__ = ["report_command", "run_summary_lines", "write_run_summary"]


def _read(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _dice(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def _size(path: Path) -> str:
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        total = path.stat().st_size
    return f"{total / 1e6:.1f} MB"


def report_command(results: Path, configfiles: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The command that builds this run's report (``snakemake --report``), with its config
    files."""
    words = ["snakemake", "--report", str(results / "report.html")]
    for configfile in configfiles:
        words += ["--configfile", str(configfile)]
    return shlex.join(words)


def _crossval_lines(layout: Results) -> list[str]:
    lines = []
    for summary_path in sorted(layout.crossval.glob(f"*/{SUMMARY_FILE}")):
        summary = _read(summary_path) or {}
        folds = sorted(p.name for p in summary_path.parent.glob("fold_*") if p.is_dir())
        lines.append(
            f"  cross-validation {summary_path.parent.name}: mean foreground Dice "
            f"{_dice(summary.get('mean_foreground_dice'))} ({summary.get('num_cases', '?')} "
            f"cases, {len(folds)} fold(s)) -> {summary_path}"
        )
    return lines


def _selection_lines(layout: Results) -> list[str]:
    lines = []
    selection = _read(layout.selection)
    if isinstance(selection, dict) and isinstance(selection.get("selected"), dict):
        selected = selection["selected"]
        candidates = len(selection.get("candidates") or [])
        lines.append(
            f"  selected: {selected.get('name')} (cross-validation Dice "
            f"{_dice(selected.get('mean_foreground_dice'))}, best of {candidates} "
            f"candidate(s)) -> {layout.selection}"
        )
    postprocessing = _read(layout.postprocessing)
    if isinstance(postprocessing, dict):
        rules = postprocessing.get("rules") or "none"
        lines.append(f"  postprocessing rules kept: {rules} -> {layout.postprocessing}")
    return lines


def _test_lines(layout: Results) -> list[str]:
    lines = []
    test = _read(layout.test_summary)
    if isinstance(test, dict):
        per_class = ", ".join(
            f"{name} {_dice(values.get('dice'))}"
            for name, values in (test.get("mean") or {}).items()
            if isinstance(values, dict)
        )
        lines.append(
            f"  test set ({test.get('num_cases', '?')} cases): mean foreground Dice "
            f"{_dice(test.get('mean_foreground_dice'))} ({per_class}) -> {layout.test_metrics}"
        )
    if layout.predictions.is_dir():
        # Hidden files (Snakemake's .snakemake_timestamp) are not predictions.
        count = sum(
            1 for p in layout.predictions.iterdir() if p.is_file() and not p.name.startswith(".")
        )
        lines.append(f"  test predictions: {count} case(s) in {layout.predictions}/")
    return lines


def run_summary_lines(
    results: str | os.PathLike[str], configfiles: Sequence[str | os.PathLike[str]] = ()
) -> list[str]:
    """The summary of the run whose results folder is ``results``, one line each."""
    layout = Results(results)
    lines = [f"segflow: the run finished; its results are in {layout.root}/"]
    lines += _crossval_lines(layout)
    lines += _selection_lines(layout)
    lines += _test_lines(layout)
    for what, path in (("exported model", layout.model), ("model zip", layout.model_zip)):
        if path.exists():
            lines.append(f"  {what}: {path} ({_size(path)})")
    lines.append(f"  logs of every job (training's epoch by epoch): {layout.logs}/")
    report = layout.root / "report.html"
    if report.is_file():
        lines.append(f"  report: {report}")
    else:
        command = report_command(layout.root, configfiles)
        lines.append(f"  report (plans, learning curves, tables): {command}")
    return lines


def write_run_summary(
    results: str | os.PathLike[str],
    configfiles: Sequence[str | os.PathLike[str]] = (),
    stream: TextIO | None = None,
) -> None:
    """Write :func:`run_summary_lines` to ``stream`` (standard error: where Snakemake's own
    messages go)."""
    stream = stream if stream is not None else sys.stderr
    stream.write("\n" + "\n".join(run_summary_lines(results, configfiles)) + "\n")
    stream.flush()
