"""Holding out labelled training cases as a test set, without copying any image.

The held-out dataset is a new raw dataset folder whose ``imagesTr/labelsTr/imagesTs/labelsTs``
entries are symbolic links to the original files; only ``dataset.json`` (``numTraining``
updated, and ``numTest`` where it has one; every other key kept) and ``holdout.json`` (which
cases were held out, and how) are real files. A source that has test cases of its own
(``imagesTs``) either keeps them beside the held-out ones (``existing_test_cases="keep"``,
the default: logged, counted in ``numTest`` and listed apart in ``holdout.json``) or leaves
them out (``"drop"``: the test set is the held-out cases only). The folder is built under a
temporary name beside its destination and renamed into place, so it exists complete or not at
all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from segflow import __version__
from segflow.errors import DatasetError, Problem, SegflowError
from segflow.io.dataset import load_dataset_json
from segflow.validation.layout import (
    IMAGES_TEST,
    IMAGES_TRAINING,
    LABELS_TEST,
    LABELS_TRAINING,
    CaseFiles,
    DatasetLayout,
    check_folders,
    discover_cases,
)

__all__ = ["EXISTING_TEST_CASES", "HOLDOUT_FILE", "choose_test_cases", "make_holdout"]

logger = logging.getLogger(__name__)

HOLDOUT_FILE = "holdout.json"
# What makes two holdouts the same; the version that wrote it does not.
_IDENTITY_KEYS = ("source", "seed", "num_test", "test_cases", "training_cases")
#: What becomes of the test cases the source already has: kept beside the held-out ones, or
#: left out.
EXISTING_TEST_CASES = ("keep", "drop")


def choose_test_cases(case_ids: list[str], num_test: int, seed: int) -> list[str]:
    """Pick ``num_test`` case ids by a seeded random choice over the sorted ids.

    The same ids, count and seed give the same choice on every machine (numpy's PCG64).

    Returns:
        The chosen ids, sorted.
    """
    ids = sorted(case_ids)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ids), size=num_test, replace=False)
    return sorted(ids[i] for i in chosen)


def make_holdout(
    dataset_dir: str | Path,
    output_dir: str | Path,
    num_test: int,
    seed: int = 12345,
    existing_test_cases: str = "keep",
) -> dict[str, Any]:
    """Write ``output_dir`` as ``dataset_dir`` with ``num_test`` training cases held out.

    Held-out cases move to ``imagesTs/labelsTs``; test cases the source already had stay test
    cases (``existing_test_cases="keep"``) or are left out (``"drop"``). Rerunning with the
    same arguments on the same source finds the same holdout and leaves it as it is.

    Args:
        dataset_dir: the raw dataset (nnU-Net v2 layout) to hold cases out of.
        output_dir: the folder to create; it must not exist, be empty, or hold the same holdout.
        num_test: how many training cases to hold out (at least 1, fewer than all).
        seed: seeds the choice.
        existing_test_cases: ``keep`` or ``drop`` the source's own test cases.

    Returns:
        The holdout record written to ``output_dir/holdout.json``.

    Raises:
        SegflowError: bad arguments, a dataset whose file names break the layout, or an
            ``output_dir`` that holds something else or lies in ``dataset_dir``.
    """
    if existing_test_cases not in EXISTING_TEST_CASES:
        raise SegflowError(
            "cannot hold out cases",
            [
                Problem(
                    "--existing-test-cases",
                    f"{existing_test_cases!r}: expected one of {', '.join(EXISTING_TEST_CASES)}",
                )
            ],
        )
    source = Path(dataset_dir).resolve()
    output = Path(output_dir).absolute()
    if output.resolve() == source or source in output.resolve().parents:
        where = "is" if output.resolve() == source else "lies inside"
        raise SegflowError(
            "the output folder is taken",
            [Problem(str(output), f"{where} the source dataset {source}; the raw data stays "
                     "read-only: give a folder outside it")],
        )  # fmt: skip
    layout = _read_layout(source)
    training_ids = [c.case_id for c in layout.training]
    _check_num_test(num_test, len(training_ids), source)
    test_ids = choose_test_cases(training_ids, num_test, seed)
    own = sorted(c.case_id for c in layout.test) if existing_test_cases == "keep" else []
    record = {
        "source": str(source),
        "seed": seed,
        "num_test": num_test,
        "test_cases": test_ids,
        "training_cases": sorted(set(training_ids) - set(test_ids)),
        # The source's own test cases in imagesTs/labelsTs beside the held-out ones.
        "source_test_cases": own,
        "existing_test_cases": existing_test_cases,
        "segflow_version": __version__,
    }
    if layout.test:
        logger.warning(
            "%s already has %d test cases in %s: %s; the test set of %s is %d cases",
            source, len(layout.test), IMAGES_TEST,
            "kept beside the held-out ones (--existing-test-cases=drop leaves them out)"
            if own else "left out (--existing-test-cases=drop)",
            output, num_test + len(own),
        )  # fmt: skip
    if _is_same_holdout(output, record):
        if (output / "dataset.json").is_file():
            logger.info("%s already holds this holdout; left as it is", output)
            return record
        # Its dataset.json is gone (Snakemake removes a job's output before rerunning it):
        # rebuild the same holdout.
        _remove_links_folder(output)
    _check_output_free(output)
    _build(source, output, layout, record)
    logger.info(
        "%s: %d training and %d held-out test cases (seed %d), linked to %s",
        output, len(record["training_cases"]), num_test, seed, source,
    )  # fmt: skip
    return record


def _read_layout(source: Path) -> DatasetLayout:
    dataset = load_dataset_json(source / "dataset.json")
    problems = check_folders(source)
    if problems:
        raise DatasetError(f"{source} is not a raw dataset", problems)
    layout = discover_cases(source, dataset)
    if layout.problems:
        raise DatasetError(
            f"{source}: the file names break the nnU-Net v2 layout; "
            "run `segflow validate-dataset` for the full report",
            layout.problems,
        )
    return layout


def _check_num_test(num_test: int, num_cases: int, source: Path) -> None:
    if not 0 < num_test < num_cases:
        raise SegflowError(
            "cannot hold out that many cases",
            [
                Problem(
                    "--num-test",
                    f"{num_test} requested; {source} has {num_cases} training cases, so "
                    f"expected 1 to {num_cases - 1} (at least one case must stay for training)",
                )
            ],
        )


def _identity(record: Any) -> Any:
    if not isinstance(record, dict):
        return None
    # A holdout written before the choice existed kept the source's test cases.
    return {
        **{k: record.get(k) for k in _IDENTITY_KEYS},
        "existing_test_cases": record.get("existing_test_cases", "keep"),
    }


def _is_same_holdout(output: Path, record: dict[str, Any]) -> bool:
    try:
        previous = json.loads((output / HOLDOUT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return _identity(previous) == _identity(record)


def _check_output_free(output: Path) -> None:
    if not output.exists() and not output.is_symlink():
        return
    if output.is_dir() and not output.is_symlink() and not any(output.iterdir()):
        return
    previous = output / HOLDOUT_FILE
    what = (
        f"a different holdout ({HOLDOUT_FILE} records another source, seed or choice)"
        if previous.is_file()
        else "something other than an earlier holdout"
    )
    raise SegflowError(
        "the output folder is taken",
        [Problem(str(output), f"holds {what}; give an empty or new folder, or remove this one")],
    )


def _remove_links_folder(output: Path) -> None:
    """Remove a holdout folder made by :func:`make_holdout`: links and its own JSON files only."""
    own = {"dataset.json", HOLDOUT_FILE}
    for root, _, files in os.walk(output):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink() and not (Path(root) == output and name in own):
                raise SegflowError(
                    "the output folder is taken",
                    [Problem(str(path), "is not part of a holdout; remove the folder by hand")],
                )
    shutil.rmtree(output)


def _links(layout: DatasetLayout, test_ids: set[str], keep_test: bool) -> list[tuple[str, str]]:
    """``(source path, destination path)``, relative to the dataset folders, of every case file."""
    links = []

    def add(case: CaseFiles, images: str, labels: str) -> None:
        for image in case.images:
            links.append((image, f"{images}/{Path(image).name}"))
        if case.label is not None:
            links.append((case.label, f"{labels}/{Path(case.label).name}"))

    for case in layout.training:
        held_out = case.case_id in test_ids
        add(
            case,
            IMAGES_TEST if held_out else IMAGES_TRAINING,
            LABELS_TEST if held_out else LABELS_TRAINING,
        )
    for case in layout.test:
        if keep_test:
            add(case, IMAGES_TEST, LABELS_TEST)
    return links


def _build(source: Path, output: Path, layout: DatasetLayout, record: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{output.name}-", dir=output.parent))
    try:
        keep_test = bool(record["source_test_cases"])
        for src, dst in _links(layout, set(record["test_cases"]), keep_test):
            (tmp / dst).parent.mkdir(exist_ok=True)
            # Link to the file itself, so that a holdout of a holdout still reaches the data.
            os.symlink((source / src).resolve(), tmp / dst)
        for folder in (IMAGES_TRAINING, LABELS_TRAINING, IMAGES_TEST, LABELS_TEST):
            (tmp / folder).mkdir(exist_ok=True)
        dataset_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
        dataset_json["numTraining"] = len(record["training_cases"])
        if "numTest" in dataset_json:  # optional in nnU-Net v2; kept true where present
            dataset_json["numTest"] = len(record["test_cases"]) + len(record["source_test_cases"])
        for name, data in (("dataset.json", dataset_json), (HOLDOUT_FILE, record)):
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private
        # rename(2) replaces an empty folder; a non-empty one (a race) makes it fail.
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
