"""The validate_dataset stage: check a raw dataset once, list every problem, or describe it.

The report it returns (``<results>/dataset_report.json``) names each case's files exactly,
so that later stages never look at the raw folder's names again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from segflow import __version__
from segflow.errors import DatasetError, Problem, SegflowError
from segflow.io.dataset import DatasetJson, parse_dataset_json, read_dataset_json_file
from segflow.io.image import ImageReadError, sitk_path
from segflow.io.schema import check_against_schema
from segflow.validation.checks import (
    CaseCheck,
    check_case,
    check_dimensionality,
    check_intensities,
    check_label_declarations,
    check_resampled_sizes,
    check_test_case_ids,
    label_warnings,
)
from segflow.validation.layout import CaseFiles, check_folders, discover_cases
from segflow.workers import map_in_workers

__all__ = ["DATASET_JSON", "validate_dataset"]

logger = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"


def validate_dataset(dataset_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Check a raw dataset in nnU-Net v2 layout and describe it.

    Nothing is written; the caller writes the returned report.

    Args:
        dataset_dir: folder with ``dataset.json``, ``imagesTr/``, ``labelsTr/`` and optionally
            ``imagesTs/`` and ``labelsTs/``.
        workers: cases read in parallel, in worker processes.

    Returns:
        The dataset report (see ``segflow/schemas/dataset_report.schema.json``): dataset
        name, file ending, channels, labels, whether it is 2D, each training and test case's
        files (relative to ``dataset_dir``, channels in order) and warnings.

    Raises:
        DatasetError: listing every problem found, each naming its file.
        SegflowError: ``workers`` is below 1.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SegflowError(f"workers must be a whole number of at least 1, got {workers!r}")
    root = Path(os.path.abspath(dataset_dir))
    try:
        sitk_path(root)
    except ImageReadError as err:
        raise DatasetError(f"no usable raw dataset at {root}", err.problems) from None
    if not root.is_dir():
        state = (
            "is a file, not a folder"
            if root.exists()
            else "is a broken symbolic link or a link loop"
            if root.is_symlink()
            else "folder does not exist"
        )
        raise DatasetError(
            f"no raw dataset at {root}",
            [
                Problem(
                    str(root),
                    f"{state}; expected a raw dataset folder holding "
                    f"{DATASET_JSON}, imagesTr/ and labelsTr/",
                )
            ],
        )

    dataset, problems = _read_dataset_json(root)
    problems += check_folders(root)
    if dataset is None:
        raise _failure(root, problems)

    warnings: list[str] = []
    declaration_problems, declaration_warnings = check_label_declarations(dataset)
    problems += declaration_problems
    warnings += declaration_warnings
    layout = discover_cases(root, dataset)
    problems += layout.problems
    warnings += layout.warnings
    problems += check_test_case_ids(layout.test)

    cases = [*layout.training, *layout.test]
    logger.info(
        "checking %d training and %d test cases in %s with %d worker(s)",
        len(layout.training),
        len(layout.test),
        root,
        workers,
    )
    results = _check_cases(root, cases, dataset, workers)
    for result in results:
        problems += result.problems
    problems += check_dimensionality(results)
    problems += check_resampled_sizes(results, dataset.num_channels)
    intensity_problems, intensity_warnings = check_intensities(results, dataset)
    problems += intensity_problems
    warnings += label_warnings(results, dataset) + intensity_warnings

    if problems:
        raise _failure(root, problems)
    for warning in warnings:
        logger.warning("%s", warning)
    report = _report(root, dataset, layout.training, layout.test, results, warnings)
    check_against_schema(report, "dataset_report", "dataset_report.json")
    return report


def _failure(root: Path, problems: list[Problem]) -> DatasetError:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return DatasetError(f"{root} is not a valid nnU-Net v2 raw dataset ({count})", problems)


def _read_dataset_json(root: Path) -> tuple[DatasetJson | None, list[Problem]]:
    """Parse dataset.json, collecting (not raising) what is wrong with it."""
    raw, problems = read_dataset_json_file(root / DATASET_JSON, DATASET_JSON)
    if raw is None:
        if problems[0].message == "file does not exist":
            problems = [
                Problem(
                    DATASET_JSON,
                    "file missing; a raw dataset needs one with channel_names, "
                    "labels, numTraining and file_ending",
                )
            ]
        return None, problems
    # Partial: the keys that locate and describe the files are used even when others are
    # broken, so that the file-level problems are listed in the same report.
    dataset, more = parse_dataset_json(raw, DATASET_JSON, partial=True)
    problems += more
    if isinstance(raw, dict):
        problems += _v1_hints(raw)
    return dataset, problems


def _v1_hints(raw: dict[str, Any]) -> list[Problem]:
    """Point out the usual nnU-Net v1 leftovers, which v2 needs changed."""
    hints = []
    if "modality" in raw and "channel_names" not in raw:
        hints.append(
            Problem(
                DATASET_JSON,
                "'modality' is the nnU-Net v1 name; v2 calls it "
                '\'channel_names\' (same content, e.g. {"0": "CT"})',
            )
        )
    labels = raw.get("labels")
    if (
        isinstance(labels, dict)
        and labels
        and all(k.isdigit() and isinstance(v, str) for k, v in labels.items())
    ):
        hints.append(
            Problem(
                DATASET_JSON,
                "'labels' maps values to names (nnU-Net v1); v2 maps names "
                'to values, e.g. {"background": 0, "tumor": 1}',
            )
        )
    return hints


def _check_one(case: CaseFiles, root: Path, dataset: DatasetJson) -> CaseCheck:
    return check_case(root, case, dataset=dataset)


def _check_cases(
    root: Path, cases: list[CaseFiles], dataset: DatasetJson, workers: int
) -> list[CaseCheck]:
    """Check every case, ``workers`` processes at a time (SimpleITK's readers are not safe in
    threads, see :mod:`segflow.workers`); results come back in the order of ``cases``."""
    step = max(1, len(cases) // 10)
    results = []
    checked = map_in_workers(_check_one, cases, workers, job=(root, dataset))
    for done, result in enumerate(checked, start=1):
        results.append(result)
        if done % step == 0 or done == len(cases):
            logger.info("checked %d/%d cases", done, len(cases))
    return results


def _report(
    root: Path,
    dataset: DatasetJson,
    training: list[CaseFiles],
    test: list[CaseFiles],
    results: list[CaseCheck],
    warnings: list[str],
) -> dict[str, Any]:
    def entry(case: CaseFiles) -> dict[str, Any]:
        return {"case_id": case.case_id, "images": list(case.images), "label": case.label}

    return {
        "segflow_version": __version__,
        "dataset": str(root),
        "name": dataset.name or root.name,
        "file_ending": dataset.file_ending,
        "num_channels": dataset.num_channels,
        "labels": {k: list(v) if isinstance(v, tuple) else v for k, v in dataset.labels.items()},
        "is_2d": bool(results) and all(r.is_2d for r in results),
        "training_cases": [entry(c) for c in sorted(training, key=lambda c: c.case_id)],
        "test_cases": [entry(c) for c in sorted(test, key=lambda c: c.case_id)],
        "warnings": warnings,
    }
