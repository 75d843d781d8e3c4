"""Fingerprinting a batch of training cases in one job, and reading batches back.

The workflow fingerprints the training cases in batches (``fingerprint.cases_per_job``): one
job per batch writes ``fingerprint/batches/<batch>.json``, which holds each case's fingerprint
exactly as :func:`~segflow.fingerprint.case.fingerprint_case` makes it, so that a changed case
refingerprints only its batch and the job start-up is paid once per batch instead of once per
case. The gather (:func:`~segflow.fingerprint.gather.gather_fingerprint`) reads batch files and
single-case files alike through :func:`read_case_fingerprints`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segflow import __version__
from segflow.batches import cases_of_batch
from segflow.errors import Problem, SegflowError
from segflow.fingerprint.case import fingerprint_case, to_json
from segflow.io.atomic import read_json, write_text
from segflow.io.dataset import DatasetJson, load_dataset_json
from segflow.workers import map_in_workers

__all__ = [
    "CaseFiles",
    "cases_from_report",
    "fingerprint_batch",
    "fingerprint_cases",
    "gather_files",
    "read_case_fingerprints",
    "write_batch_fingerprints",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseFiles:
    """A training case's id, channel files (channel 0 first) and label file."""

    case_id: str
    images: tuple[Path, ...]
    label: Path


def cases_from_report(entries: Sequence[Mapping[str, Any]], dataset_dir: Path) -> list[CaseFiles]:
    """Training-case entries of ``dataset_report.json`` as files under ``dataset_dir``."""
    return [
        CaseFiles(
            e["case_id"], tuple(dataset_dir / p for p in e["images"]), dataset_dir / e["label"]
        )
        for e in entries
    ]


def _one_case(case: CaseFiles, dataset: DatasetJson, seed: int, num_samples: int):
    """``(fingerprint, None)``, or ``(None, problems)`` when the case cannot be fingerprinted."""
    try:
        fp = fingerprint_case(case.case_id, case.images, case.label, dataset, seed, num_samples)
    except SegflowError as err:
        # Plain data: it crosses back from a worker process whatever the exception's class.
        return None, [(f"case '{case.case_id}'", err.render())]
    return fp, None


def fingerprint_cases(
    cases: Sequence[CaseFiles],
    dataset: DatasetJson,
    seed: int,
    num_samples: int,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Fingerprint several cases, ``workers`` at a time.

    Each case's fingerprint is what :func:`~segflow.fingerprint.case.fingerprint_case` gives
    for it alone: the sample it draws depends on the seed and its id only, not on the batch,
    the worker or the order.

    Args:
        cases: the cases.
        dataset: the dataset description.
        seed: the run's seed.
        num_samples: the most foreground voxels sampled per channel.
        workers: worker processes; 1 runs in this process.

    Returns:
        The fingerprints, in the order of ``cases``.

    Raises:
        SegflowError: naming every case that could not be fingerprinted and why (the other
            cases are still done first, so the report is complete).
    """
    cases = list(cases)
    workers = max(1, min(workers, len(cases)))
    results = list(map_in_workers(_one_case, cases, workers, job=(dataset, seed, num_samples)))
    problems = [Problem(where, text) for _, failed in results if failed for where, text in failed]
    if problems:
        raise SegflowError(f"cannot fingerprint {len(problems)} of {len(cases)} case(s)", problems)
    logger.info("fingerprinted %d case(s) with %d worker(s)", len(cases), workers)
    return [fp for fp, _ in results]


def write_batch_fingerprints(
    path: str | Path, batch: str, fingerprints: Sequence[Mapping[str, Any]]
) -> Path:
    """Write a batch's case fingerprints atomically (``fingerprint/batches/<batch>.json``).

    The file is ``{"segflow_version", "batch", "cases": [...]}``; each entry of ``cases`` is
    a case fingerprint, formatted as ``fingerprint-case`` writes one.
    """
    content = {"segflow_version": __version__, "batch": batch, "cases": list(fingerprints)}
    return write_text(path, to_json(content) + "\n")


def read_case_fingerprints(paths: Sequence[str | Path]) -> tuple[list[Any], list[str]]:
    """The case fingerprints in batch files and single-case files, and where each came from.

    A file holding ``{"cases": [...]}`` is a batch (:func:`write_batch_fingerprints`); any
    other JSON is one case fingerprint (``segflow fingerprint-case``), checked by the gather.

    Returns:
        ``(fingerprints, sources)``: sources name the file, and the case inside a batch file.

    Raises:
        SegflowError: naming every file that cannot be read as JSON.
    """
    fingerprints: list[Any] = []
    sources: list[str] = []
    problems = []
    for path in paths:
        try:
            content = read_json(path)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            problems.append(Problem(str(path), f"cannot read as JSON: {err}"))
            continue
        if isinstance(content, Mapping) and "cases" in content and "case_id" not in content:
            entries = content["cases"]
            if not isinstance(entries, list):
                problems.append(Problem(f"{path}:cases", "must be a list of case fingerprints"))
                continue
            for i, fp in enumerate(entries):
                case_id = fp.get("case_id") if isinstance(fp, Mapping) else None
                name = f"'{case_id}'" if isinstance(case_id, str) else f"#{i}"
                fingerprints.append(fp)
                sources.append(f"{path}:cases/{name}")
        else:
            fingerprints.append(content)
            sources.append(str(path))
    if problems:
        raise SegflowError("unreadable case fingerprint files", problems)
    return fingerprints, sources


def fingerprint_batch(
    dataset_json: Path,
    dataset_report: Path,
    batch: str,
    cases_per_job: int,
    seed: int,
    num_samples: int,
    workers: int,
    out: Path,
) -> Path:
    """``segflow fingerprint-batch``: fingerprint one batch of a dataset report's training
    cases (batches as :func:`segflow.batches.case_batches` makes them) into ``out``."""
    dataset = load_dataset_json(dataset_json)
    report = read_json(dataset_report)
    entries = cases_of_batch(report, batch, cases_per_job, str(dataset_report))
    cases = cases_from_report(entries, Path(report["dataset"]))
    fingerprints = fingerprint_cases(cases, dataset, seed, num_samples, workers=workers)
    return write_batch_fingerprints(out, batch, fingerprints)


def gather_files(dataset_json: Path, files: Sequence[Path], seed: int, out: Path) -> Path:
    """``segflow fingerprint``: gather batch (or single-case) fingerprint files into
    ``fingerprint.json``, checked against its schema before it is written."""
    from segflow.fingerprint.gather import gather_fingerprint
    from segflow.io.atomic import write_json
    from segflow.io.schema import check_against_schema

    dataset = load_dataset_json(dataset_json)
    case_fps, sources = read_case_fingerprints(files)
    fingerprint = gather_fingerprint(case_fps, dataset, seed=seed, sources=sources)
    check_against_schema(fingerprint, "fingerprint", str(out))
    return write_json(out, fingerprint)
