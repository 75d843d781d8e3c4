"""Model selection: which trained configuration, or which pair of them ensembled, segments the
cross-validation cases best.

Every trained configuration is a candidate with its cross-validation score (each case predicted
by the fold that held it out). With ensembles on, so is every pair of configurations: for each
case, the class probabilities the two configurations' held-out folds predicted (in the case's
original geometry) are averaged and turned into a segmentation, which is scored against the
reference exactly as a single configuration's predictions are
(:mod:`segflow.evaluation.evaluate`). Candidates are ranked by mean foreground Dice (the mean
over the classes of their mean Dice over the cases). On a tie the simpler candidate wins: a
single configuration before an ensemble, then the earlier configuration in the plans.

``select`` writes ``selection.json`` (every candidate's score and the winner) and the winner's
cross-validation segmentations, on which postprocessing is decided.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segflow.ensembling.probabilities import average_probabilities, mean_probabilities
from segflow.errors import Problem, SegflowError
from segflow.evaluation.evaluate import evaluate_labels, evaluated_classes, summarize
from segflow.evaluation.tables import read_metrics
from segflow.inference.export import (
    load_probabilities,
    probabilities_to_segmentation,
    write_segmentation,
)
from segflow.io.atomic import atomic_path, read_json, write_json
from segflow.io.dataset import DatasetJson, load_dataset_json
from segflow.io.image import read_image
from segflow.layout import (
    METRICS_FILE,
    PREDICTIONS_FOLDER,
    PROBABILITIES_FOLDER,
    SUMMARY_FILE,
    fold_folder,
)

__all__ = [
    "ENSEMBLE_SEPARATOR",
    "OLD_ENSEMBLE_SEPARATOR",
    "candidate_name",
    "load_selection",
    "parse_candidate_name",
    "select_model",
]

logger = logging.getLogger(__name__)

#: An ensemble's name joins its models' names: ``2d,3d_fullres``, ``2d__BL,2d__BL+GN``. No
#: configuration's or experiment's name holds a comma (the config checks it), so the name
#: reads one way only and :func:`parse_candidate_name` gives the members back.
ENSEMBLE_SEPARATOR = ","
#: Selections written before the comma joined with ``+``, which experiment names may hold.
OLD_ENSEMBLE_SEPARATOR = "+"


def candidate_name(configurations: Sequence[str]) -> str:
    """A candidate's name: a model's, or its ensemble's members joined by commas."""
    return ENSEMBLE_SEPARATOR.join(configurations)


def parse_candidate_name(name: str) -> list[str]:
    """The models a candidate's name (:func:`candidate_name`) stands for."""
    return name.split(ENSEMBLE_SEPARATOR)


def _case_folds(crossval_folder: Path) -> dict[str, int]:
    """Case id -> the fold that held it out, from a configuration's merged metrics table."""
    return {str(r["case_id"]): int(r["fold"]) for r in read_metrics(crossval_folder / METRICS_FILE)}


def _single_candidate(configuration: str, crossval_folder: Path, classes: list[str]) -> dict:
    summary = read_json(crossval_folder / SUMMARY_FILE)
    return {
        "name": configuration,
        "configurations": [configuration],
        "mean_foreground_dice": summary["mean_foreground_dice"],
        "dice": {c: summary["mean"][c]["dice"] for c in classes},
        "num_cases": summary["num_cases"],
    }


def _probability_file(crossval_folder: Path, fold: int, case_id: str) -> Path:
    return crossval_folder / fold_folder(fold) / PROBABILITIES_FOLDER / f"{case_id}.npz"


def _prediction_file(crossval_folder: Path, fold: int, case_id: str, ending: str) -> Path:
    return crossval_folder / fold_folder(fold) / PREDICTIONS_FOLDER / f"{case_id}{ending}"


def _missing(paths: Sequence[Path], what: str, why: str) -> list[Problem]:
    """One problem naming the first of ``paths`` that does not exist and counting the others."""
    missing = [path for path in paths if not path.is_file()]
    if not missing:
        return []
    text = f"does not exist, nor do {len(missing) - 1} other {what}; {why}"
    return [Problem(str(missing[0]), text)]


def _check_inputs(
    crossval_folders: Mapping[str, Path],
    folds: Mapping[str, dict[str, int]],
    ensembles: bool,
    ending: str,
) -> list[Problem]:
    problems = []
    for name, folder in crossval_folders.items():
        # Any configuration may win, and the winner's segmentations are copied.
        segmentations = [_prediction_file(folder, k, c, ending) for c, k in folds[name].items()]
        problems += _missing(segmentations, f"cross-validation segmentations of {name}",
                             "the validate jobs write them")  # fmt: skip
    names = list(crossval_folders)
    reference_cases = set(folds[names[0]])
    for name in names[1:]:
        if set(folds[name]) != reference_cases:
            problems.append(
                Problem(str(crossval_folders[name] / METRICS_FILE),
                        f"covers other cases than {names[0]}'s cross-validation; "
                        "configurations are compared on the same cases")
            )  # fmt: skip
        elif folds[name] != folds[names[0]]:
            # Ensembles and the winner's segmentations read each case from its fold folder.
            problems.append(
                Problem(str(crossval_folders[name] / METRICS_FILE),
                        f"holds cases out in other folds than {names[0]}'s cross-validation; "
                        "configurations are compared on the same splits")
            )  # fmt: skip
    if ensembles and len(names) > 1:
        for name, folder in crossval_folders.items():
            files = [_probability_file(folder, k, c) for c, k in folds[name].items()]
            why = "ensembles need the validate jobs to save probabilities"
            problems += _missing(files, f"probability files of {name}", why)
    return problems


def _score_ensembles(
    pairs: Sequence[tuple[str, ...]],
    crossval_folders: Mapping[str, Path],
    folds: Mapping[str, int],
    references: Mapping[str, Path],
    dataset: DatasetJson,
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Metric rows of each ensemble over the cross-validation cases. Each case's reference and
    each configuration's probabilities are read once, whatever the number of pairs."""
    classes = evaluated_classes(dataset)
    rows: dict[tuple[str, ...], list[dict[str, Any]]] = {pair: [] for pair in pairs}
    needed = sorted({c for pair in pairs for c in pair})
    for case_id, fold in sorted(folds.items()):
        reference = read_image(references[case_id])
        files = {c: str(_probability_file(crossval_folders[c], fold, case_id)) for c in needed}
        loaded = {files[c]: load_probabilities(files[c])[0] for c in needed}
        for pair in pairs:
            mean = mean_probabilities({files[c]: loaded[files[c]] for c in pair})
            segmentation = probabilities_to_segmentation(mean, dataset)
            for name, values in evaluate_labels(
                reference, segmentation, classes, dataset.ignore_label
            ).items():
                rows[pair].append({"case_id": case_id, "class": name, "fold": fold, **values})
    return rows


def _write_ensemble_predictions(
    configurations: Sequence[str],
    crossval_folders: Mapping[str, Path],
    folds: Mapping[str, int],
    dataset: DatasetJson,
    target: Path,
) -> None:
    for case_id, fold in sorted(folds.items()):
        files = [_probability_file(crossval_folders[c], fold, case_id) for c in configurations]
        probabilities, properties = average_probabilities(files)
        segmentation = probabilities_to_segmentation(probabilities, dataset)
        write_segmentation(segmentation, properties, target / f"{case_id}{dataset.file_ending}")


def _write_single_predictions(
    crossval_folder: Path, folds: Mapping[str, int], ending: str, target: Path
) -> None:
    for case_id, fold in sorted(folds.items()):
        source = _prediction_file(crossval_folder, fold, case_id, ending)
        with atomic_path(target / source.name) as tmp:
            shutil.copyfile(source, tmp)


def select_model(
    *,
    crossval_folders: Mapping[str, str | os.PathLike[str]],
    dataset_json: str | os.PathLike[str],
    dataset_report: str | os.PathLike[str],
    output_json: str | os.PathLike[str],
    predictions_folder: str | os.PathLike[str],
    ensembles: bool = True,
) -> dict[str, Any]:
    """Compare the configurations (and their pairs) and write the selection.

    Args:
        crossval_folders: configuration -> its ``crossval/<configuration>`` folder (merged
            ``metrics.csv`` and ``summary.json``; ``fold_<k>/predictions/`` and, for
            ensembles, ``fold_<k>/probabilities/``), in the order ties are broken by.
        dataset_json: the dataset's labels.
        dataset_report: the checked dataset (where the reference labels are).
        output_json: ``selection.json``.
        predictions_folder: receives the winner's cross-validation segmentations
            (``<case><ending>``), for postprocessing; replaced as a whole.
        ensembles: also compare every pair of configurations.

    Returns:
        the selection: ``metric``, ``classes``, ``candidates`` (each with ``name``,
        ``configurations``, ``mean_foreground_dice``, ``dice`` per class, ``num_cases``),
        ``selected`` (``name``, ``configurations``, ``folds``, ``mean_foreground_dice``).

    Raises:
        SegflowError: no configuration, configurations scored on different cases, missing
            cross-validation segmentations, or missing probabilities for ensembles; every
            problem at once.
    """
    folders = {name: Path(p) for name, p in crossval_folders.items()}
    if not folders:
        raise SegflowError("nothing to select from: no trained configuration")
    dataset = load_dataset_json(dataset_json)
    classes = list(evaluated_classes(dataset))
    folds = {name: _case_folds(folder) for name, folder in folders.items()}
    problems = _check_inputs(folders, folds, ensembles, dataset.file_ending)
    if problems:
        raise SegflowError("cannot compare the configurations", problems)
    report = read_json(dataset_report)
    root = Path(report["dataset"])
    references = {c["case_id"]: root / c["label"] for c in report["training_cases"]}
    names = list(folders)
    case_folds = folds[names[0]]

    candidates = [_single_candidate(name, folders[name], classes) for name in names]
    pairs = list(itertools.combinations(names, 2)) if ensembles else []
    ensemble_rows = _score_ensembles(pairs, folders, case_folds, references, dataset)
    for pair in pairs:
        summary = summarize(ensemble_rows[pair])
        candidates.append(
            {
                "name": candidate_name(pair),
                "configurations": list(pair),
                "mean_foreground_dice": summary["mean_foreground_dice"],
                "dice": {c: summary["mean"][c]["dice"] for c in classes},
                "num_cases": summary["num_cases"],
            }
        )
        logger.info("ensemble %s: mean foreground Dice %.4f", candidate_name(pair),
                    summary["mean_foreground_dice"])  # fmt: skip
    # max() keeps the first of equals: single configurations come first, in the plans' order.
    winner = max(candidates, key=lambda c: c["mean_foreground_dice"] or 0.0)
    all_folds = sorted({k for f in folds.values() for k in f.values()})

    target = Path(predictions_folder)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if len(winner["configurations"]) == 1:
        _write_single_predictions(folders[winner["name"]], case_folds, dataset.file_ending, target)
    else:
        _write_ensemble_predictions(winner["configurations"], folders, case_folds, dataset, target)

    selection = {
        "metric": "mean_foreground_dice",
        "classes": classes,
        "candidates": candidates,
        "selected": {
            "name": winner["name"],
            "configurations": winner["configurations"],
            "folds": all_folds,
            "mean_foreground_dice": winner["mean_foreground_dice"],
        },
    }
    write_json(output_json, selection)
    logger.info("selected %s (mean foreground Dice %.4f of %d candidate(s))", winner["name"],
                winner["mean_foreground_dice"] or float("nan"), len(candidates))  # fmt: skip
    return selection


def _is_fold(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_selection(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``selection.json``, checking the part prediction uses.

    Raises:
        SegflowError: unreadable, or without a selected model's configurations and folds.
    """
    try:
        selection = read_json(path)
    except (OSError, ValueError, RecursionError) as err:
        raise SegflowError("cannot read the selection", [Problem(str(path), str(err))]) from None
    selected = selection.get("selected") if isinstance(selection, dict) else None
    problems = []
    if not isinstance(selected, dict):
        problems.append(Problem(str(path), "has no 'selected' model"))
    else:
        confs, folds = selected.get("configurations"), selected.get("folds")
        if not (isinstance(confs, list) and confs and all(isinstance(c, str) for c in confs)):
            problems.append(Problem(str(path), "'selected.configurations' must be a non-empty "
                                               "list of configuration names"))  # fmt: skip
        if not (isinstance(folds, list) and folds and all(_is_fold(k) for k in folds)):
            problems.append(Problem(str(path), "'selected.folds' must be a non-empty list of "
                                               "fold numbers"))  # fmt: skip
        if not problems:
            problems += _name_problems(selected, str(path))
    if problems:
        raise SegflowError("not a selection.json", problems)
    return selection


def _name_problems(selected: dict[str, Any], where: str) -> list[Problem]:
    """Whether ``selected['name']`` names its configurations; an old ``+``-joined name is
    renamed (the configurations decide what is predicted, the name only describes it)."""
    name, confs = selected.get("name"), selected["configurations"]
    expected = candidate_name(confs)
    if name is None or name == expected:
        return []
    if len(confs) > 1 and name == OLD_ENSEMBLE_SEPARATOR.join(confs):
        logger.info(
            "%s: the ensemble's old name %r now reads %r (its configurations: %s)",
            where, name, expected, confs,
        )  # fmt: skip
        selected["name"] = expected
        return []
    return [
        Problem(
            where,
            f"'selected.name' {name!r} does not name its configurations {confs}: expected "
            f"{expected!r}",
        )
    ]
