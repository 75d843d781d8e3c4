"""Training one fold from the workflow's files: the entry of ``segflow train``.

:func:`train_fold` reads the plans, ``dataset.json`` and the splits (:func:`read_fold`, which
pretraining and cross-validation read them with too), checks that every case of the fold is
preprocessed (:func:`unpreprocessed`; every problem listed at once, before any work) and runs a
:class:`~segflow.training.trainer.FoldTrainer`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segflow.errors import Problem, SegflowError
from segflow.training.settings import TrainingSettings

if TYPE_CHECKING:
    from segflow.io.dataset import DatasetJson
    from segflow.planning.plans import ConfigurationPlan, Plans

__all__ = ["FoldFiles", "read_fold", "train_fold", "unpreprocessed"]


@dataclass(frozen=True)
class FoldFiles:
    """What a fold's stages read from the workflow's files (:func:`read_fold`)."""

    plans: Plans
    dataset: DatasetJson
    plan: ConfigurationPlan
    train_cases: list[str]
    val_cases: list[str]


def read_fold(
    *,
    plans_path: str | os.PathLike[str],
    configuration: str,
    dataset_json: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    fold: int,
) -> FoldFiles:
    """The plans, ``dataset.json``, the configuration's plan and the fold's cases.

    Raises:
        SegflowError: a file that cannot be read, an unknown configuration (naming the valid
            ones) or fold.
    """
    from segflow.io.dataset import load_dataset_json
    from segflow.planning.plans import load_plans
    from segflow.training.splits import fold_cases

    plans = load_plans(plans_path)
    dataset = load_dataset_json(dataset_json)
    plan = plans.configuration(configuration)
    train_cases, val_cases = fold_cases(splits_path, fold)
    return FoldFiles(plans, dataset, plan, train_cases, val_cases)


def unpreprocessed(preprocessed_folder: str | os.PathLike[str], cases: list[str]) -> list[Problem]:
    """A problem for each of ``cases`` that is missing from the preprocessed data (or
    incomplete)."""
    from segflow.preprocessing.storage import is_case_complete

    return [
        Problem(str(Path(preprocessed_folder) / case_id), "not preprocessed (or incomplete)")
        for case_id in cases
        if not is_case_complete(preprocessed_folder, case_id)
    ]


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
    from segflow.training.trainer import FoldTrainer

    files = read_fold(plans_path=plans_path, configuration=configuration, dataset_json=dataset_json,
                      splits_path=splits_path, fold=fold)  # fmt: skip
    missing = unpreprocessed(preprocessed_folder, files.train_cases + files.val_cases)
    if missing:
        raise SegflowError(
            f"{len(missing)} cases of fold {fold} are missing from the preprocessed data",
            missing,
        )
    trainer = FoldTrainer(
        files.plans,
        configuration,
        files.dataset,
        preprocessed_folder,
        files.train_cases,
        files.val_cases,
        fold,
        output_folder,
        settings,
        previous_stage=previous_stage,
    )
    return trainer.run()
