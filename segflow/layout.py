"""Where every artifact of a run lives under ``<results>``: the one place that spells the
results layout, used by the stages and by the workflow's rules.

::

    <results>/dataset_report.json               validate_dataset
    <results>/fingerprint/batches/<batch>.json  fingerprint_batch
    <results>/fingerprint.json                  fingerprint
    <results>/plans.json                        plan
    <results>/plans/<plans>.json                plan_experiment (an experiment's own planning)
    <results>/preprocessed/<config>/            preprocess (batches/<batch>.json: manifests)
    <results>/preprocessed/<config>__<plans>/   preprocess (another plans' data, unshared)
    <results>/splits.json                       split
    <results>/models/<model>/fold_<k>/          train (checkpoint_final.pt, progress.png)
    <results>/crossval/<model>/fold_<k>/        validate (predictions/, probabilities/,
                                                metrics.csv, summary.json)
    <results>/crossval/<model>/                 crossval (metrics.csv, summary.json)
    <results>/previous_stage/<model>/           previous_stage: a cascade stage's input, the
                                                previous stage's CV segmentations on its grid
    <results>/selection.json                    select (selection/crossval_predictions/)
    <results>/postprocessing.json               postprocess
    <results>/predictions_raw/<case><ending>    predict
    <results>/predictions/                      apply_postprocessing
    <results>/test_metrics.csv, test_summary.json   evaluate
    <results>/model/, model.zip                 export
    <results>/report/                           report_pages
    <results>/logs/                             every rule's log

A trained model's name (``<model>``) is its plans configuration (``3d_fullres``), or with
the config's ``experiments`` ``<configuration>__<experiment>`` (:func:`model_name`,
:func:`parse_model_name`). An experiment with its own planning trains with the plans
``plans/<plans>.json``; a configuration of those plans whose preprocessing differs from every
configuration of ``plans.json`` has its data under ``<configuration>__<plans>``
(:func:`model_name` and :func:`parse_model_name` again, with the plans' name).

The methods take wildcards as they are: ``results.fold_metrics("{configuration}", "{fold}")``
is the pattern a rule declares. Standard library only: the rules import this module at every
Snakemake start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHECKPOINT_BEST",
    "CHECKPOINT_FINAL",
    "CHECKPOINT_LATEST",
    "EXPERIMENT_SEPARATOR",
    "FOLD_PREFIX",
    "METRICS_FILE",
    "PREDICTIONS_FOLDER",
    "PROBABILITIES_FOLDER",
    "PROGRESS_PLOT",
    "PROGRESS_TABLE",
    "REPORT_FILES",
    "SSL_CHECKPOINT",
    "SSL_PROGRESS_PLOT",
    "SSL_PROGRESS_TABLE",
    "SUMMARY_FILE",
    "TEST_REPORT_FILES",
    "TRAINING_LOG",
    "Results",
    "fold_folder",
    "fold_of_folder",
    "model_name",
    "parse_model_name",
]

#: A fold's final checkpoint, in its model folder (also in an exported model).
CHECKPOINT_FINAL = "checkpoint_final.pt"
#: A fold's checkpoint while it trains (a rerun resumes from it); removed at the end.
CHECKPOINT_LATEST = "checkpoint_latest.pt"
#: A fold's checkpoint of the best EMA pseudo Dice so far.
CHECKPOINT_BEST = "checkpoint_best.pt"
#: A fold's learning curves, in its model folder.
PROGRESS_PLOT = "progress.png"
#: A fold's numbers per epoch, in its model folder.
PROGRESS_TABLE = "progress.csv"
#: A fold's training log, in its model folder.
TRAINING_LOG = "training.log"
#: A model's pretrained encoder (self-supervised pretraining), in its pretraining folder.
SSL_CHECKPOINT = "checkpoint_ssl.pt"
#: Its loss curve and its numbers per epoch, beside it.
SSL_PROGRESS_PLOT = "ssl_progress.png"
SSL_PROGRESS_TABLE = "ssl_progress.csv"
#: The report's pages and figures under ``<results>/report/``: item -> file name, always
#: written.
REPORT_FILES = {
    "dataset": "dataset.html",
    "plans": "plans.html",
    "crossval": "crossval.html",
    "crossval_dice": "crossval_dice.png",
    "selection": "selection.html",
}
#: Item -> file name, written only when there are labelled test cases.
TEST_REPORT_FILES = {
    "test": "test.html",
    "test_dice": "test_dice.png",
}
#: Per-case metrics of a fold or of a configuration's cross-validation.
METRICS_FILE = "metrics.csv"
#: The summary beside a metrics table.
SUMMARY_FILE = "summary.json"
#: A fold's held-out segmentations, ``<case><ending>``.
PREDICTIONS_FOLDER = "predictions"
#: A fold's held-out class probabilities, ``<case>.npz`` (for ensembles).
PROBABILITIES_FOLDER = "probabilities"
#: A fold's folder is ``fold_<k>``, under its configuration's.
FOLD_PREFIX = "fold_"


def fold_folder(fold: int | str) -> str:
    """The name of fold ``fold``'s folder: ``fold_3`` (or the pattern ``fold_{fold}``)."""
    return f"{FOLD_PREFIX}{fold}"


def fold_of_folder(name: str) -> int | None:
    """The fold a folder name stands for (``fold_3`` -> 3), or None for any other name."""
    number = name.removeprefix(FOLD_PREFIX)
    if number == name or not number.isascii() or not number.isdigit():
        return None
    return int(number)


#: Between a model's configuration and its experiment: ``3d_fullres__larger_encoder``. Neither
#: a planned configuration's name nor an experiment's (the config checks it) holds it.
EXPERIMENT_SEPARATOR = "__"


def model_name(configuration: str, experiment: str | None = None) -> str:
    """The name of a trained model's folders: the configuration, and the experiment if any."""
    if experiment is None:
        return configuration
    return f"{configuration}{EXPERIMENT_SEPARATOR}{experiment}"


def parse_model_name(name: str) -> tuple[str, str | None]:
    """``(configuration, experiment or None)`` of a model's name (:func:`model_name`)."""
    configuration, separator, experiment = name.partition(EXPERIMENT_SEPARATOR)
    return (configuration, experiment) if separator else (configuration, None)


@dataclass(frozen=True)
class Results:
    """The artifacts of one run, under its results folder ``root``."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    # Intake, fingerprint, plans and preprocessing.
    @property
    def dataset_report(self) -> Path:
        return self.root / "dataset_report.json"

    def fingerprint_batch(self, batch: str) -> Path:
        return self.root / "fingerprint" / "batches" / f"{batch}.json"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    def named_plans(self, name: str | None) -> Path:
        """The plans called ``name`` (an experiment's own planning), or ``plans.json`` for
        None."""
        return self.plans if name is None else self.root / "plans" / f"{name}.json"

    def preprocessed(self, configuration: str) -> Path:
        """A configuration's preprocessed cases (``<case>.data.b2nd``, ...)."""
        return self.root / "preprocessed" / configuration

    def preprocess_manifest(self, configuration: str, batch: str) -> Path:
        """Written last by a preprocessing batch: the cases it completed."""
        return self.preprocessed(configuration) / "batches" / f"{batch}.json"

    # Training.
    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def fold_model(self, configuration: str, fold: int | str) -> Path:
        """A fold's model folder: its checkpoints and learning curves."""
        return self.models / configuration / fold_folder(fold)

    def checkpoint(self, configuration: str, fold: int | str) -> Path:
        return self.fold_model(configuration, fold) / CHECKPOINT_FINAL

    def progress_plot(self, configuration: str, fold: int | str) -> Path:
        return self.fold_model(configuration, fold) / PROGRESS_PLOT

    # Self-supervised pretraining (training.ssl_pretrain).
    # Per fold: each fold's encoder sees only that fold's training cases.
    def pretraining(self, configuration: str, fold: int | str) -> Path:
        """A model's fold's pretraining folder: ``checkpoint_ssl.pt`` and its loss curve."""
        return self.root / "pretraining" / configuration / fold_folder(fold)

    def ssl_checkpoint(self, configuration: str, fold: int | str) -> Path:
        return self.pretraining(configuration, fold) / SSL_CHECKPOINT

    def ssl_progress_plot(self, configuration: str, fold: int | str) -> Path:
        return self.pretraining(configuration, fold) / SSL_PROGRESS_PLOT

    # Cross-validation.
    @property
    def crossval(self) -> Path:
        return self.root / "crossval"

    def crossval_folder(self, configuration: str) -> Path:
        """A configuration's merged cross-validation (metrics.csv, summary.json) and folds."""
        return self.crossval / configuration

    def crossval_metrics(self, configuration: str) -> Path:
        return self.crossval_folder(configuration) / METRICS_FILE

    def crossval_summary(self, configuration: str) -> Path:
        return self.crossval_folder(configuration) / SUMMARY_FILE

    def validation_folder(self, configuration: str, fold: int | str) -> Path:
        """What the ``validate`` stage writes for a fold's held-out cases."""
        return self.crossval_folder(configuration) / fold_folder(fold)

    def fold_metrics(self, configuration: str, fold: int | str) -> Path:
        return self.validation_folder(configuration, fold) / METRICS_FILE

    def fold_summary(self, configuration: str, fold: int | str) -> Path:
        return self.validation_folder(configuration, fold) / SUMMARY_FILE

    def fold_predictions(self, configuration: str, fold: int | str) -> Path:
        return self.validation_folder(configuration, fold) / PREDICTIONS_FOLDER

    def fold_probabilities(self, configuration: str, fold: int | str) -> Path:
        return self.validation_folder(configuration, fold) / PROBABILITIES_FOLDER

    def previous_stage(self, configuration: str) -> Path:
        """A cascade stage's input: the previous stage's cross-validation segmentations on
        its grid (``<case>.npy``)."""
        return self.root / "previous_stage" / configuration

    # Selection and postprocessing.
    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def selection_predictions(self) -> Path:
        """The selected model's cross-validation segmentations."""
        return self.root / "selection" / "crossval_predictions"

    @property
    def postprocessing(self) -> Path:
        return self.root / "postprocessing.json"

    # Test set, export, report, logs.
    @property
    def raw_predictions(self) -> Path:
        """Test segmentations before postprocessing."""
        return self.root / "predictions_raw"

    def raw_prediction(self, case: str, ending: str) -> Path:
        return self.raw_predictions / f"{case}{ending}"

    @property
    def predictions(self) -> Path:
        """Final test segmentations."""
        return self.root / "predictions"

    def prediction(self, case: str, ending: str) -> Path:
        return self.predictions / f"{case}{ending}"

    @property
    def test_metrics(self) -> Path:
        return self.root / "test_metrics.csv"

    @property
    def test_summary(self) -> Path:
        return self.root / "test_summary.json"

    @property
    def model(self) -> Path:
        """The exported model folder (``segflow predict -m``)."""
        return self.root / "model"

    @property
    def model_zip(self) -> Path:
        return self.root / "model.zip"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
