"""``crossval {configuration}``: the folds' metrics joined into one table (every training case
once, ``metrics.csv``) and summarized (``summary.json``: means per class and the mean
foreground Dice)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.evaluation.evaluate import summarize
from segflow.evaluation.tables import read_metrics, write_metrics
from segflow.io.atomic import write_json
from segflow.layout import METRICS_FILE, SUMMARY_FILE

__all__ = ["merge_folds"]


def merge_folds(
    fold_metrics: Sequence[str | os.PathLike[str]],
    configuration: str,
    output_folder: str | os.PathLike[str],
    checkpoints: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Join the folds' ``metrics.csv`` into one table and summarize it; with the folds'
    ``checkpoints``, the summary's ``model`` says what the model costs
    (:func:`~segflow.crossval.model_facts.model_facts`), for the ablation table.

    Raises:
        SegflowError: a case appears in two folds' tables.
    """
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    problems = []
    for path in fold_metrics:
        fold_rows = read_metrics(path)
        for case_id in dict.fromkeys(r["case_id"] for r in fold_rows):
            if case_id in seen:
                problems.append(Problem(str(path), f"case '{case_id}' is also in {seen[case_id]}"))
            seen[case_id] = str(path)
        rows += fold_rows
    if problems:
        raise SegflowError("the folds' validation cases overlap", problems)
    output_folder = Path(output_folder)
    write_metrics(output_folder / METRICS_FILE, rows)
    summary = summarize(rows) | {
        "configuration": configuration,
        "folds": sorted({int(r["fold"]) for r in rows}),
    }
    if checkpoints:
        from segflow.crossval.model_facts import model_facts

        summary["model"] = model_facts(checkpoints)
    write_json(output_folder / SUMMARY_FILE, summary)
    return summary
