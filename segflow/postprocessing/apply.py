"""Apply a ``postprocessing.json`` to segmentation files.

Each segmentation gets the file's rules applied in order (keep only the largest connected
component of each rule's labels) and is written under the same name into an output folder,
with exactly the input's geometry: spacing, origin and direction, and a 2D file stays 2D.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.io.atomic import atomic_path
from segflow.io.dataset import load_dataset_json
from segflow.io.image import ImageData, ImageReadError, read_image, write_image
from segflow.postprocessing.components import CONNECTIVITY, apply_postprocessing
from segflow.postprocessing.decide import load_postprocessing

__all__ = ["run_apply"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _segmentation_files(
    inputs: Sequence[PathLike], ending: str, problems: list[Problem]
) -> list[Path]:
    """The files named by ``inputs``: files as given, folders as their ``*<ending>`` files
    (hidden files, such as unfinished atomic writes, left out); each file once."""
    files: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [
                f
                for f in sorted(path.iterdir())
                if f.is_file() and f.name.endswith(ending) and not f.name.startswith(".")
            ]
            if not found:
                problems.append(Problem(str(path), f"folder holds no *{ending} segmentation"))
            files.update((f.resolve(), f) for f in found)
        elif path.is_file():
            files[path.resolve()] = path
        else:
            problems.append(Problem(str(path), "input does not exist"))
    return list(files.values())


def _rule_label_problems(
    rules: Sequence[dict[str, Any]], foreground: Sequence[int], where: str, dataset_json: str
) -> list[Problem]:
    problems = []
    for i, rule in enumerate(rules):
        unknown = sorted(set(rule["labels"]) - set(foreground))
        if unknown:
            problems.append(
                Problem(
                    where,
                    f"rule {i} names label(s) {unknown} that are not foreground labels of "
                    f"{dataset_json} ({list(foreground)}); is it the same dataset?",
                )
            )
    return problems


def _write_like(path: Path, segmentation: np.ndarray, image: ImageData) -> None:
    """Write a ``(z, y, x)`` label map with ``image``'s geometry, atomically."""
    array, spacing = segmentation, tuple(image.spacing)
    if image.is_2d:
        array, spacing = segmentation[0], spacing[1:]
    with atomic_path(path) as tmp:
        write_image(tmp, np.ascontiguousarray(array), spacing, image.origin, image.direction)


def run_apply(
    postprocessing_json: PathLike,
    inputs: Sequence[PathLike],
    output_dir: PathLike,
    dataset_json_path: PathLike,
) -> list[Path]:
    """Postprocess segmentation files with the rules of a ``postprocessing.json``.

    Args:
        postprocessing_json: the decision (:func:`segflow.postprocessing.run_decide`).
        inputs: segmentation files, or folders of ``*<ending>`` files (``ending``:
            dataset.json's ``file_ending``).
        output_dir: where each result goes, under its input's name.
        dataset_json_path: the dataset's ``dataset.json``.

    Returns:
        The written files, in input order.

    Raises:
        SegflowError: before anything is written, listing every problem: an input missing or
            unreadable, two inputs of the same name, an output that would overwrite its
            input, or rules naming labels the dataset does not have.
    """
    decision = load_postprocessing(postprocessing_json)
    dataset = load_dataset_json(dataset_json_path)
    rules = decision["rules"]
    connectivity = decision.get("connectivity", CONNECTIVITY)
    output_dir = Path(output_dir)
    problems = _rule_label_problems(
        rules, dataset.foreground_labels, str(postprocessing_json), str(dataset_json_path)
    )
    if not inputs:
        problems.append(Problem("inputs", "no segmentation file or folder given"))
    files = _segmentation_files(inputs, dataset.file_ending, problems)

    # Every input is read (and dropped) before anything is written, so that all problems
    # show at once while at most one segmentation is held in memory.
    by_name: dict[str, Path] = {}
    for path in files:
        target = output_dir / path.name
        if path.name in by_name:
            message = f"has the same name as {by_name[path.name]}; both would go to {target}"
            problems.append(Problem(str(path), message))
        by_name.setdefault(path.name, path)
        if target.resolve() == path.resolve():
            message = "the output would overwrite this input; choose another output folder"
            problems.append(Problem(str(path), message))
        try:
            image = read_image(path)
        except ImageReadError as err:
            problems.extend(err.problems)
            continue
        if image.num_channels != 1:
            problems.append(
                Problem(str(path), f"{image.num_channels} channels; expected a label map")
            )
    if problems:
        raise SegflowError("cannot apply the postprocessing", problems)

    written = []
    for path in files:
        image = read_image(path)
        segmentation = apply_postprocessing(image.array[0], rules, connectivity)
        target = output_dir / path.name
        _write_like(target, segmentation, image)
        written.append(target)
    logger.info(
        "postprocessed %d segmentation(s) into %s with rules %s",
        len(written),
        output_dir,
        [rule["labels"] for rule in rules] or "none",
    )
    return written
