"""Batches of training cases: the unit of work of the per-case stages' jobs.

Fingerprinting and preprocessing run one workflow job per batch of cases rather than per case:
starting a job costs a Python interpreter, segflow's imports and Snakemake's bookkeeping, which
on small images is more than the work on a case. The workflow (``common.smk``) and the commands
that run a batch (``segflow fingerprint-batch``) split the dataset report's training cases with
the same function, so a job named by its batch finds the same cases the workflow gave it files
for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from segflow.errors import Problem, SegflowError

__all__ = ["batch_name", "case_batches", "cases_of_batch"]

_BATCH_NAME = re.compile(r"batch_(\d+)")


def batch_name(index: int) -> str:
    """The name of the ``index``-th batch: ``batch_0000``, ``batch_0001``, ..."""
    return f"batch_{index:04d}"


def case_batches(case_ids: Sequence[str], cases_per_batch: int) -> dict[str, list[str]]:
    """Split ``case_ids`` into consecutive batches of ``cases_per_batch`` (the last may be
    shorter), in the order given.

    Raises:
        ValueError: ``cases_per_batch`` is not a positive integer.
    """
    if isinstance(cases_per_batch, bool) or not isinstance(cases_per_batch, int):
        raise ValueError(f"cases per batch must be an integer, got {cases_per_batch!r}")
    if cases_per_batch < 1:
        raise ValueError(f"cases per batch must be at least 1, got {cases_per_batch}")
    ids = list(case_ids)
    return {
        batch_name(i // cases_per_batch): ids[i : i + cases_per_batch]
        for i in range(0, len(ids), cases_per_batch)
    }


def cases_of_batch(
    report: Mapping[str, Any], batch: str, cases_per_batch: int, where: str = "dataset report"
) -> list[dict[str, Any]]:
    """The training cases (the report's entries) of one batch of a dataset report.

    Args:
        report: the content of ``dataset_report.json``.
        batch: the batch's name (:func:`batch_name`).
        cases_per_batch: the batch size the workflow split the cases with.
        where: the report's file, for messages.

    Raises:
        SegflowError: ``batch`` is not a batch name, or the report has no such batch.
    """
    try:
        batches = case_batches([c["case_id"] for c in report["training_cases"]], cases_per_batch)
    except ValueError as err:
        problems = [Problem("cases per job", str(err))]
        raise SegflowError(f"cannot find batch '{batch}'", problems) from None
    if batch not in batches:
        if _BATCH_NAME.fullmatch(batch) is None:
            problem = "not a batch name; expected batch_NNNN"
        elif not batches:
            problem = "no such batch: the report lists no training cases"
        else:
            last = batch_name(len(batches) - 1)
            problem = (
                f"no such batch: {len(report['training_cases'])} training cases in batches of "
                f"{cases_per_batch} make {len(batches)} (batch_0000 to {last})"
            )
        raise SegflowError(f"cannot find batch '{batch}' in {where}", [Problem(batch, problem)])
    entries = {c["case_id"]: c for c in report["training_cases"]}
    return [entries[case_id] for case_id in batches[batch]]
