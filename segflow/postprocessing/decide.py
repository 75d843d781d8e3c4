"""Decide, on cross-validation predictions, whether keeping only the largest connected
component helps; the decision is ``postprocessing.json``.

The procedure follows nnU-Net. The criterion is the mean foreground Dice: the Dice of every
foreground class (or region) per case, averaged over the cases per class, then over the
classes. Voxels the reference marks with the dataset's ignore label are left out, and a class
absent from both reference and prediction scores 1 (as everywhere in segflow).

1. Baseline: the predictions as they are.
2. The foreground as a whole: keep only the largest component of all foreground labels
   together. The rule is kept when the mean foreground Dice gets strictly greater.
3. Each class in ``dataset.json`` order, on top of the rules kept so far: keep only the largest
   component of the class's label values (a region's values for region-based datasets). Kept
   when the mean foreground Dice gets strictly greater than the best so far.

With a single foreground class the per-class step is the foreground step again and is not
tried. The kept rules, in order, are what inference applies to its predictions
(:func:`segflow.postprocessing.apply_postprocessing`).

``postprocessing.json`` (format 1)::

    {"format": 1, "criterion": "mean_foreground_dice", "connectivity": "face",
     "num_cases": 20, "classes": ["organ", "lesion"],
     "baseline": {"mean_foreground_dice": 0.81, "dice": {"organ": 0.9, "lesion": 0.72}},
     "steps": [{"target": "foreground", "labels": [1, 2], "mean_foreground_dice": 0.82,
                "dice": {...}, "kept": true},
               {"target": "organ", "labels": [1], ...}, {"target": "lesion", ...}],
     "rules": [{"labels": [1, 2]}],
     "final": {"mean_foreground_dice": 0.82, "dice": {...}}}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.evaluation.metrics import region_mask
from segflow.io.atomic import write_json
from segflow.io.dataset import DatasetJson, load_dataset_json
from segflow.io.image import ImageData, ImageReadError, read_image
from segflow.postprocessing.components import CONNECTIVITIES, CONNECTIVITY, _largest_component

__all__ = [
    "CRITERION",
    "FORMAT",
    "decide_postprocessing",
    "load_postprocessing",
    "run_decide",
]

logger = logging.getLogger(__name__)

#: Version of the ``postprocessing.json`` layout.
FORMAT = 1
#: What a rule must improve (strictly) to be kept.
CRITERION = "mean_foreground_dice"
#: The ``target`` of the step that treats all foreground labels as one structure.
FOREGROUND_TARGET = "foreground"

PathLike = str | os.PathLike[str]


@dataclass
class _Case:
    """One case's reference, read once, as the Dice computations need it."""

    case_id: str
    #: Per class: the reference mask with ignored voxels left out, and its voxel count.
    references: list[np.ndarray]
    reference_counts: list[int]
    #: Voxels not marked ignore in the reference; None without an ignore label.
    valid: np.ndarray | None


def _class_values(value: int | tuple[int, ...]) -> list[int]:
    return [int(v) for v in value] if isinstance(value, tuple) else [int(value)]


def _read_label_map(path: Path, what: str, problems: list[Problem]) -> ImageData | None:
    if not path.is_file():
        problems.append(Problem(str(path), f"{what} does not exist"))
        return None
    try:
        image = read_image(path)
    except ImageReadError as err:
        problems.extend(err.problems)
        return None
    if image.num_channels != 1:
        problems.append(
            Problem(str(path), f"{what} has {image.num_channels} channels; expected a label map")
        )
        return None
    return image


def _bounding_box(reference: np.ndarray, prediction: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every non-zero voxel of either map (empty when none is)."""
    nonzero = (reference != 0) | (prediction != 0)
    box = []
    for axis in range(nonzero.ndim):
        others = tuple(a for a in range(nonzero.ndim) if a != axis)
        hits = np.flatnonzero(nonzero.any(axis=others))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    return tuple(box)


def _prepare(
    case_id: str,
    reference: np.ndarray,
    prediction: np.ndarray,
    class_values: Sequence[list[int]],
    ignore_label: int | None,
) -> tuple[_Case, np.ndarray]:
    # Outside the box both maps are background: no class has a voxel there and no component
    # reaches there, so cropping changes no Dice and no decision. It saves memory and time.
    if all(0 not in values for values in class_values):
        box = _bounding_box(reference, prediction)
        reference, prediction = reference[box], prediction[box].copy()
    valid = reference != ignore_label if ignore_label is not None else None
    references = []
    for values in class_values:
        mask = region_mask(reference, values)
        references.append(mask & valid if valid is not None else mask)
    case = _Case(
        case_id=case_id,
        references=references,
        reference_counts=[int(np.count_nonzero(m)) for m in references],
        valid=valid,
    )
    return case, prediction


def _read_cases(
    cases: Sequence[tuple[str, PathLike, PathLike]],
    class_values: Sequence[list[int]],
    ignore_label: int | None,
) -> tuple[list[_Case], list[np.ndarray]]:
    """Read every reference and prediction once; report every problem at once."""
    problems: list[Problem] = []
    seen: set[str] = set()
    loaded: list[_Case] = []
    predictions: list[np.ndarray] = []
    for case_id, reference_file, prediction_file in cases:
        if case_id in seen:
            problems.append(Problem(str(prediction_file), f"case '{case_id}' is listed twice"))
            continue
        seen.add(case_id)
        reference = _read_label_map(
            Path(reference_file), f"reference of case '{case_id}'", problems
        )
        prediction = _read_label_map(
            Path(prediction_file), f"prediction of case '{case_id}'", problems
        )
        if reference is None or prediction is None:
            continue
        if reference.shape != prediction.shape:
            problems.append(
                Problem(
                    str(prediction_file),
                    f"shape {list(prediction.shape)} differs from the reference's "
                    f"{list(reference.shape)} ({reference_file})",
                )
            )
            continue
        if problems:
            continue  # only checking the remaining files from here on
        case, predicted = _prepare(
            case_id, reference.array[0], prediction.array[0], class_values, ignore_label
        )
        loaded.append(case)
        predictions.append(predicted)
    if problems:
        raise SegflowError(
            "cannot decide the postprocessing: the cross-validation predictions or their "
            "references are unusable",
            problems,
        )
    return loaded, predictions


def _dice(case: _Case, prediction: np.ndarray, index: int, values: list[int]) -> float:
    predicted = region_mask(prediction, values)
    if case.valid is not None:
        predicted &= case.valid
    tp = int(np.count_nonzero(predicted & case.references[index]))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = case.reference_counts[index] - tp
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


def _summary(table: Sequence[Sequence[float]], names: Sequence[str]) -> dict[str, Any]:
    """Mean Dice per class over the cases, and their mean (averaged as the evaluation's
    ``summary.json`` does, so that the baseline matches its mean foreground Dice)."""
    dice = {name: float(np.mean([row[i] for row in table])) for i, name in enumerate(names)}
    return {"mean_foreground_dice": float(np.mean(list(dice.values()))), "dice": dice}


def _try_rule(
    labels: list[int],
    cases: Sequence[_Case],
    predictions: Sequence[np.ndarray],
    table: Sequence[list[float]],
    class_values: Sequence[list[int]],
) -> tuple[list[np.ndarray], list[list[float]]]:
    """The predictions and Dice table after keeping the largest component of ``labels``.

    Only the classes sharing a value with ``labels`` can change (removed voxels become
    background), and only in cases where the rule removed voxels; the rest is reused.
    """
    affected = [i for i, values in enumerate(class_values) if set(values) & set(labels)]
    new_predictions, new_table = [], []
    for case, prediction, row in zip(cases, predictions, table, strict=True):
        result, removed = _largest_component(prediction, labels)
        if removed == 0:
            new_predictions.append(prediction)
            new_table.append(row)
            continue
        row = list(row)
        for i in affected:
            row[i] = _dice(case, result, i, class_values[i])
        new_predictions.append(result)
        new_table.append(row)
    return new_predictions, new_table


def decide_postprocessing(
    cases: Sequence[tuple[str, PathLike, PathLike]],
    dataset: DatasetJson,
    *,
    try_rules: bool = True,
) -> dict[str, Any]:
    """Decide which largest-component rules improve the cross-validation predictions.

    Args:
        cases: ``(case_id, reference_file, prediction_file)`` for every case; every file is
            read once.
        dataset: the dataset's ``dataset.json``: its foreground classes (or regions) are
            scored, its ignore label is left out.
        try_rules: False tries no rule (postprocessing switched off): the result only
            records the baseline scores, and its ``rules`` are empty.

    Returns:
        The content of ``postprocessing.json`` (see the module documentation); ``rules`` lists
        the kept rules in the order to apply them. With a single foreground class only the
        foreground step is tried (a per-class step would repeat it).

    Raises:
        SegflowError: no case or no foreground class, or files missing, unreadable or of
            different shapes (every such file is listed, before any computation).
    """
    cases = list(cases)
    classes = dataset.foreground_classes
    problems = []
    if not cases:
        problems.append(Problem("cases", "no cross-validation case given"))
    if not classes:
        problems.append(Problem("dataset.json", "the dataset has no foreground class"))
    if problems:
        raise SegflowError("cannot decide the postprocessing", problems)
    names = list(classes)
    class_values = [_class_values(v) for v in classes.values()]
    loaded, predictions = _read_cases(cases, class_values, dataset.ignore_label)

    table = [
        [_dice(case, prediction, i, values) for i, values in enumerate(class_values)]
        for case, prediction in zip(loaded, predictions, strict=True)
    ]
    baseline = _summary(table, names)
    best = baseline["mean_foreground_dice"]

    candidates = [(FOREGROUND_TARGET, [int(v) for v in dataset.foreground_labels])]
    if not try_rules:
        candidates = []
    elif len(names) > 1:
        candidates += list(zip(names, class_values, strict=True))
    steps: list[dict[str, Any]] = []
    rules: list[dict[str, list[int]]] = []
    for target, labels in candidates:
        tried_predictions, tried_table = _try_rule(labels, loaded, predictions, table, class_values)
        summary = _summary(tried_table, names)
        kept = summary["mean_foreground_dice"] > best
        steps.append({"target": target, "labels": list(labels), **summary, "kept": kept})
        if kept:
            predictions, table, best = tried_predictions, tried_table, summary[CRITERION]
            rules.append({"labels": list(labels)})

    return {
        "format": FORMAT,
        "criterion": CRITERION,
        "connectivity": CONNECTIVITY,
        "num_cases": len(loaded),
        "classes": names,
        "baseline": baseline,
        "steps": steps,
        "rules": rules,
        "final": _summary(table, names),
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rule_problems(rules: Any, where: str) -> list[Problem]:
    example = '[{"labels": [1, 2]}, {"labels": [2]}]'
    if not isinstance(rules, list):
        return [Problem(where, f"'rules' must be a list like {example}, found {rules!r}")]
    problems = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or "labels" not in rule:
            message = f'rule {i} must be an object like {{"labels": [1, 2]}}, found {rule!r}'
            problems.append(Problem(where, message))
            continue
        unknown = sorted(set(rule) - {"labels"})
        if unknown:
            problems.append(Problem(where, f"rule {i} has unknown key(s) {unknown}"))
        labels = rule["labels"]
        if not (isinstance(labels, list) and labels and all(_is_int(v) and v > 0 for v in labels)):
            problems.append(
                Problem(
                    where,
                    f"rule {i}: 'labels' must be a non-empty list of foreground label values "
                    f"(positive integers), found {labels!r}",
                )
            )
    return problems


def load_postprocessing(path: PathLike) -> dict[str, Any]:
    """Read and check a ``postprocessing.json``.

    Only what applying it needs is checked: ``format`` is 1 and ``rules`` is a list of
    ``{"labels": [positive ints]}``; the other keys are the record of the decision.

    Raises:
        SegflowError: the file is missing, not JSON, or breaks the format; every problem is
            listed, each naming the file.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SegflowError("postprocessing.json not found", [Problem(where, "file does not exist")])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise SegflowError(f"{path} is not valid JSON", [Problem(where, str(err))]) from None
    if not isinstance(raw, dict):
        problems = [Problem(where, "expected a JSON object at the top level")]
    else:
        problems = [
            Problem(where, f"missing required key '{key}'")
            for key in ("format", "rules")
            if key not in raw
        ]
        if "format" in raw and not (_is_int(raw["format"]) and raw["format"] == FORMAT):
            problems.append(Problem(where, f"'format' must be {FORMAT}, found {raw['format']!r}"))
        if "rules" in raw:
            problems += _rule_problems(raw["rules"], where)
        if raw.get("connectivity", CONNECTIVITY) not in CONNECTIVITIES:
            problems.append(
                Problem(
                    where,
                    f"'connectivity' must be one of {', '.join(CONNECTIVITIES)}, "
                    f"found {raw['connectivity']!r}",
                )
            )
    if problems:
        raise SegflowError(f"{path} is not a valid postprocessing.json", problems)
    return raw


def _prediction_files(folder: Path, ending: str) -> dict[str, Path]:
    """Case id -> file, for the ``<case><ending>`` files of ``folder`` (hidden files, such as
    unfinished atomic writes, are not cases)."""
    return {
        path.name[: -len(ending)]: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name.endswith(ending) and not path.name.startswith(".")
    }


def _log_decision(decision: dict[str, Any], output_json: Path) -> None:
    logger.info(
        "postprocessing over %d cases: baseline mean foreground Dice %.4f",
        decision["num_cases"],
        decision["baseline"]["mean_foreground_dice"],
    )
    for step in decision["steps"]:
        logger.info(
            "largest component only of %s %s: %.4f, %s",
            step["target"],
            step["labels"],
            step["mean_foreground_dice"],
            "kept" if step["kept"] else "not kept",
        )
    logger.info(
        "postprocessing rules %s (mean foreground Dice %.4f) written to %s",
        [rule["labels"] for rule in decision["rules"]] or "none",
        decision["final"]["mean_foreground_dice"],
        output_json,
    )


def run_decide(
    predictions_dir: PathLike,
    references_dir: PathLike,
    dataset_json_path: PathLike,
    output_json: PathLike,
    *,
    case_ids: Iterable[str] | None = None,
    try_rules: bool = True,
) -> dict[str, Any]:
    """Decide the postprocessing of a folder of cross-validation predictions and write it.

    Args:
        predictions_dir: holds ``<case><ending>`` predictions (``ending``: dataset.json's
            ``file_ending``).
        references_dir: holds the reference ``<case><ending>`` of every case.
        dataset_json_path: the dataset's ``dataset.json``.
        output_json: where ``postprocessing.json`` is written (atomically).
        case_ids: only these cases (each must have a prediction); default: every prediction.
        try_rules: see :func:`decide_postprocessing`.

    Returns:
        The decision, as written.

    Raises:
        SegflowError: a folder or a case's file is missing or unusable (all listed at once).
    """
    dataset = load_dataset_json(dataset_json_path)
    ending = dataset.file_ending
    predictions_dir, references_dir = Path(predictions_dir), Path(references_dir)
    problems = [
        Problem(str(folder), f"{what} folder does not exist")
        for what, folder in (("predictions", predictions_dir), ("references", references_dir))
        if not folder.is_dir()
    ]
    found = _prediction_files(predictions_dir, ending) if predictions_dir.is_dir() else {}
    if case_ids is None:
        ids = list(found)
        if predictions_dir.is_dir() and not ids:
            problems.append(Problem(str(predictions_dir), f"no *{ending} prediction in it"))
    else:
        ids = list(case_ids)
        if not ids:
            problems.append(Problem("case_ids", "an empty list of cases was given"))
        problems += [
            Problem(
                str(predictions_dir / f"{c}{ending}"), f"prediction of case '{c}' does not exist"
            )
            for c in ids
            if c not in found and predictions_dir.is_dir()
        ]
    if problems:
        raise SegflowError("cannot decide the postprocessing", problems)
    cases = [(c, references_dir / f"{c}{ending}", found[c]) for c in ids]
    decision = decide_postprocessing(cases, dataset, try_rules=try_rules)
    output_json = write_json(output_json, decision)
    _log_decision(decision, output_json)
    return decision
