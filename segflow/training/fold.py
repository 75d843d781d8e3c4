"""Training one fold from the workflow's files: the entry of ``segflow train``.

:func:`train_fold` reads the plans, ``dataset.json`` and the splits, checks that every case
of the fold is preprocessed (every problem listed at once, before any work) and runs a
:class:`~segflow.training.trainer.FoldTrainer`.
"""

from __future__ import annotations

import os
from pathlib import Path

from segflow.errors import Problem, SegflowError
from segflow.training.settings import TrainingSettings

__all__ = ["train_fold"]


def train_fold(
    *,
    plans_path: str | os.PathLike[str],
    configuration: str,
    fold: int,
    dataset_json: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    preprocessed_folder: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
    settings: TrainingSettings,
    previous_stage: str | os.PathLike[str] | None = None,
) -> Path:
    """Train one fold from the workflow's files; checks them all before any work.

    ``previous_stage``: a cascade stage's previous-stage segmentations (see
    :class:`~segflow.training.trainer.FoldTrainer`).

    Raises:
        SegflowError: listing every problem with the inputs (unknown configuration or fold,
            cases of the fold missing from the preprocessed folder, ...).
        TrainingInterrupted: see :meth:`~segflow.training.trainer.FoldTrainer.run`.
    """
    from segflow.io.dataset import load_dataset_json
    from segflow.planning.plans import load_plans
    from segflow.preprocessing.storage import is_case_complete
    from segflow.training.splits import fold_cases
    from segflow.training.trainer import FoldTrainer

    plans = load_plans(plans_path)
    dataset = load_dataset_json(dataset_json)
    plans.configuration(configuration)  # raises, naming the valid ones
    train_cases, val_cases = fold_cases(splits_path, fold)
    missing = [
        Problem(str(Path(preprocessed_folder) / case_id), "not preprocessed (or incomplete)")
        for case_id in train_cases + val_cases
        if not is_case_complete(preprocessed_folder, case_id)
    ]
    if missing:
        raise SegflowError(
            f"{len(missing)} cases of fold {fold} are missing from the preprocessed data",
            missing,
        )
    trainer = FoldTrainer(
        plans,
        configuration,
        dataset,
        preprocessed_folder,
        train_cases,
        val_cases,
        fold,
        output_folder,
        settings,
        previous_stage=previous_stage,
    )
    return trainer.run()
