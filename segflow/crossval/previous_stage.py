"""``previous-stage {cascade model}``: the lowres cross-validation, as the cascade's input.

Every training case was predicted once by the ``3d_lowres`` fold that held it out
(``<results>/crossval/<lowres model>/fold_<k>/predictions/<case><ending>``, in the input's
geometry). :func:`write_previous_stage` brings each of those segmentations onto the grid of
the cascade stage's preprocessed case
(:func:`segflow.preprocessing.previous_stage.to_next_stage_grid`) and stores it as
``<out>/<case>.npy``. The cascade's training and validation read them: its fold ``k`` trains
on cases whose segmentations came from other lowres folds, none of which saw the case in
training, and that is why it waits for every lowres fold, not just fold ``k``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from segflow.errors import Problem, SegflowError
from segflow.io.atomic import read_json
from segflow.io.dataset import load_dataset_json
from segflow.io.image import read_image
from segflow.planning.plans import load_plans
from segflow.preprocessing.previous_stage import save_previous_stage, to_next_stage_grid
from segflow.preprocessing.storage import open_case

__all__ = ["write_previous_stage"]

logger = logging.getLogger(__name__)


def _prediction_files(
    folders: Sequence[Path], case_ids: Sequence[str], ending: str
) -> tuple[dict[str, Path], list[Problem]]:
    found: dict[str, list[Path]] = {c: [] for c in case_ids}
    for folder in folders:
        for case_id in case_ids:
            path = folder / f"{case_id}{ending}"
            if path.is_file():
                found[case_id].append(path)
    problems = [
        Problem(case_id, "no previous-stage prediction in " + ", ".join(map(str, folders)))
        for case_id, paths in found.items()
        if not paths
    ]
    problems += [
        Problem(case_id, f"predicted by several folds: {', '.join(map(str, paths))}")
        for case_id, paths in found.items()
        if len(paths) > 1
    ]
    return {c: paths[0] for c, paths in found.items() if len(paths) == 1}, problems


def write_previous_stage(
    *,
    plans_path: str | os.PathLike[str],
    configuration: str,
    dataset_json: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    fold_predictions: Sequence[str | os.PathLike[str]],
    preprocessed_folder: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
) -> list[str]:
    """Store every training case's previous-stage segmentation on the cascade's grid.

    Args:
        plans_path: plans.json.
        configuration: the cascade stage (a configuration with a ``previous_stage``).
        dataset_json: dataset.json (the segmentations' file ending).
        splits_path: splits.json: every case of its folds needs a prediction.
        fold_predictions: the previous stage's folds' ``predictions`` folders.
        preprocessed_folder: the cascade stage's preprocessed cases (their grid).
        output_folder: where ``<case>.npy`` go.

    Returns:
        the case identifiers written.

    Raises:
        SegflowError: not a cascade stage, or cases without exactly one prediction (all
            named at once).
    """
    plans = load_plans(plans_path)
    conf = plans.configuration(configuration)
    if conf.previous_stage is None:
        raise SegflowError(
            "not a cascade stage",
            [Problem(str(plans_path), f"configuration '{configuration}' has no previous_stage")],
        )
    dataset = load_dataset_json(dataset_json)
    splits = read_json(splits_path)
    folds = splits["folds"] if isinstance(splits, dict) else splits
    case_ids = sorted({c for fold in folds for c in fold["val"]})
    files, problems = _prediction_files(
        [Path(f) for f in fold_predictions], case_ids, dataset.file_ending
    )
    if problems:
        raise SegflowError(
            f"the previous stage ({conf.previous_stage}) did not predict every case once",
            problems,
        )
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    for case_id in case_ids:
        case = open_case(preprocessed_folder, case_id)
        segmentation = read_image(files[case_id]).array[0]
        on_grid = to_next_stage_grid(segmentation, case.properties, conf)
        save_previous_stage(output, case_id, on_grid)
    logger.info(
        "%s: wrote the %s segmentations of %d cases on its grid to %s",
        configuration, conf.previous_stage, len(case_ids), output,
    )  # fmt: skip
    return case_ids
