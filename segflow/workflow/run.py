"""One workflow run as its rules see it: paths, experiments, models, folds, test cases, the
options of each stage's command and every rule's inputs, from the checked config.

``workflow/rules/common.smk`` builds one :class:`WorkflowRun` when Snakemake parses the
workflow and its input functions and params are one-line calls of its methods. What only a
finished checkpoint knows (the dataset report, the plans) is read through the two look-ups it
is given, which name the checkpoints' outputs; each file is parsed once per version
(:mod:`segflow.workflow.cache`).

Model names: a trained model is named ``<configuration>``, or ``<configuration>__<experiment>``
with experiments (:func:`segflow.layout.model_name`); the ``{configuration}`` wildcard of
train, validate and crossval is that model name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from segflow.config import experiment_planning, experiment_plans, experiment_sections
from segflow.containers import apptainer_args
from segflow.errors import SegflowError
from segflow.inference.settings import InferenceSettings
from segflow.io.endings import SUPPORTED_ENDINGS
from segflow.layout import (
    PREDICTIONS_FOLDER,
    PROBABILITIES_FOLDER,
    REPORT_FILES,
    TEST_REPORT_FILES,
    Results,
    model_name,
    parse_model_name,
)
from segflow.networks.variants import NetworkVariant
from segflow.settings import to_arguments
from segflow.training.pretraining_settings import PretrainingSettings
from segflow.training.settings import TrainingSettings
from segflow.training.splits import load_manual_splits
from segflow.workflow import cache

__all__ = [
    "WILDCARD_PATTERNS",
    "WorkflowRun",
    "argument_path",
    "planning_command",
]

#: What each wildcard of the rules' patterns matches.
WILDCARD_PATTERNS = {
    "case": r"[^/]+",
    "configuration": r"[^/]+",
    "plans": r"[^/]+",
    "batch": r"batch_\d+",
    "fold": r"\d+",
    "ending": "|".join(re.escape(ending) for ending in SUPPORTED_ENDINGS),
}


def argument_path(value: str | os.PathLike[str]) -> Path:
    """A path that no command line takes for an option: relative ones beginning with '-'
    become absolute (pathlib drops a leading './')."""
    path = Path(value)
    return Path.cwd() / path if str(path).startswith("-") else path


def planning_command(planning: dict[str, Any]) -> str:
    """The command that makes a planning section's plans: moved from another dataset's
    (``plans_from``), or planned."""
    return "move-plans" if planning["plans_from"] else "plan"


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(e.is_file() for e in os.scandir(folder))


class WorkflowRun:
    """The run of one checked config.

    Args:
        config: the checked config (:func:`segflow.config.check_config`'s result).
        dataset_report: the path of the checked dataset report (the ``validate_dataset``
            checkpoint's output; asking may stop the DAG until the checkpoint ran).
        plans: the path of the plans of a name (None: ``plans.json``), likewise.

    Raises:
        SegflowError: a manual splits file that its reader refuses, or
            ``pretraining.test_images`` without test images to pretrain on.
    """

    def __init__(
        self,
        config: dict[str, Any],
        dataset_report: Callable[[], str | os.PathLike[str]],
        plans: Callable[[str | None], str | os.PathLike[str]],
    ) -> None:
        self.config = config
        self._report_path = dataset_report
        self._plans_path = plans
        #: Experiment name -> its training section (the ``training`` one with the
        #: experiment's overrides); ``{None: training}`` without an ``experiments`` section.
        self.experiments = experiment_sections(config)
        #: Experiment name -> the name of the plans it trains with: None for ``plans.json``,
        #: or the name of its own planning's plans ``<results>/plans/<name>.json``.
        self.experiment_plans = experiment_plans(config)
        #: Plans name -> its planning section, for every plans but ``plans.json``.
        self.planning = {
            self.experiment_plans[name]: planning
            for name, planning in experiment_planning(config).items()
            if self.experiment_plans[name] is not None
        }
        self.dataset = argument_path(config["dataset"])
        self.results = argument_path(config.get("results") or Path("results") / self.dataset.name)
        #: Every artifact's path under ``results``; wildcards pass through as patterns.
        self.layout = Results(self.results)
        self.demo = config["demo"] is not None
        self.holdout = config["holdout"]
        #: The dataset folder is built by the workflow (demo or holdout): only its
        #: dataset.json, written last, is an input of validate_dataset.
        self.built_dataset = self.demo or self.holdout is not None
        self.manual_folds = self._manual_folds()
        # Known before the run: the report's test pages are outputs only when there is
        # something to score.
        if self.demo:
            self.has_test_images = self.has_test_labels = config["demo"]["test_cases"] > 0
        elif self.holdout is not None:
            self.has_test_images = self.has_test_labels = True
        else:
            self.has_test_images = _has_files(self.dataset / "imagesTs")
            self.has_test_labels = self.has_test_images and _has_files(self.dataset / "labelsTs")
        #: Whether the validate jobs write each case's class probabilities: when selection
        #: compares ensembles, or the user keeps them.
        self.save_cv_probabilities = bool(
            config["selection"]["ensembles"] or config["inference"]["save_probabilities"]
        )
        #: Whether they are kept after use: also when several experiments are compared
        #: (`select` reads every model's probabilities; were they temporary, a change to one
        #: experiment would rerun every other experiment's validate jobs to write them again).
        self.keep_cv_probabilities = bool(
            config["inference"]["save_probabilities"] or config["experiments"] is not None
        )
        self._check_pretraining_test_images()

    def _manual_folds(self) -> Any:
        # Read by the split stage's own checked reader when the workflow is parsed: a
        # malformed file is one clear error naming it, before any job runs.
        manual = self.config["splits"]["manual"]
        if not manual:
            return None
        try:
            return load_manual_splits(manual)
        except SegflowError as err:
            raise SegflowError(f"config 'splits.manual': {err.summary}", err.problems) from None

    def _check_pretraining_test_images(self) -> None:
        pretrains = any(s.get("ssl_pretrain") for s in self.experiments.values())
        if self.config["pretraining"]["test_images"] and not self.has_test_images and pretrains:
            raise SegflowError(
                f"config 'pretraining.test_images': {self.dataset / 'imagesTs'} holds no test "
                "images to pretrain on; set it to false"
            )

    # ------------------------------------------------------------------ deployment

    def job_paths(self) -> list[Path | str]:
        """Every file or folder outside the working directory that a job reads or writes."""
        config = self.config
        paths = [
            self.dataset,
            self.results,
            self.holdout["source"] if self.holdout is not None else None,
            config["splits"]["manual"],
            config["splits"]["groups"],
            *(section["pretrained_weights"] for section in self.experiments.values()),
            config["planning"]["plans_from"],
            *(planning["plans_from"] for planning in self.planning.values()),
        ]
        return [path for path in paths if path]

    def apptainer_args(self, given: str) -> str:
        """``--apptainer-args`` for the jobs: ``given``, every folder they use bound, and
        ``--nv`` when a device may be CUDA (:func:`segflow.containers.apptainer_args`)."""
        devices = (self.config[s]["device"] for s in ("training", "inference"))
        gpu = any(device not in ("cpu", "mps") for device in devices)
        return apptainer_args(given, self.job_paths(), cwd=Path.cwd(), gpu=gpu)

    # ------------------------------------------------------------------ the dataset

    def dataset_files(self) -> list[Path]:
        """validate_dataset's input: every file of the raw dataset, so any change
        revalidates."""
        if self.built_dataset:
            return [self.dataset / "dataset.json"]
        files = [self.dataset / "dataset.json"] if (self.dataset / "dataset.json").is_file() else []
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            folder = self.dataset / sub
            if folder.is_dir():
                files += sorted(Path(e.path) for e in os.scandir(folder) if e.is_file())
        return files

    def dataset_report(self) -> dict[str, Any]:
        """The checked dataset (do not modify)."""
        return cache.report_index(self._report_path())[0]

    def training_cases(self) -> dict[str, dict[str, Any]]:
        """Training case id -> its entry in the dataset report (do not modify)."""
        return cache.report_index(self._report_path())[1]

    def training_case_files(self, case_id: str) -> dict[str, Any]:
        """A training case's channel files and label, as validate_dataset found them."""
        case = self.training_cases().get(case_id)
        if case is None:
            raise SegflowError(f"no training case '{case_id}' in {self.dataset}")
        return {
            "images": [self.dataset / p for p in case["images"]],
            "label": self.dataset / case["label"],
        }

    def fingerprint_batches(self) -> dict[str, list[str]]:
        """Batch name -> training case ids, in chunks of ``fingerprint.cases_per_job``."""
        size = self.config["fingerprint"]["cases_per_job"]
        return cache.report_batches(self._report_path(), size)

    def preprocess_batches(self) -> dict[str, list[str]]:
        """Batch name -> training case ids, in chunks of ``preprocessing.cases_per_job``."""
        size = self.config["preprocessing"]["cases_per_job"]
        return cache.report_batches(self._report_path(), size)

    def batch_cases(self, batches: dict[str, list[str]], stage: str, batch: str) -> list[str]:
        """The case ids of a ``stage`` batch (``fingerprint``, ``preprocessing``)."""
        cases = batches.get(batch)
        if cases is None:
            raise SegflowError(f"no {stage} batch '{batch}'")
        return cases

    def batch_files(self, case_ids: Iterable[str]) -> list[tuple[list[Path], Path]]:
        """``(channel files, label)`` of each case."""
        cases = self.training_cases()
        return [
            ([self.dataset / p for p in cases[c]["images"]], self.dataset / cases[c]["label"])
            for c in case_ids
        ]

    def fingerprint_batch_inputs(self, batch: str) -> dict[str, list[Path]]:
        """A fingerprint batch's raw files: every channel and label of its cases."""
        files = self.batch_files(self.batch_cases(self.fingerprint_batches(), "fingerprint", batch))
        return {
            "images": [image for images, _ in files for image in images],
            "labels": [label for _, label in files],
        }

    def preprocess_batch_inputs(self, batch: str) -> dict[str, list[Path]]:
        """A preprocessing batch's raw files: every channel and label of its cases."""
        cases = self.batch_cases(self.preprocess_batches(), "preprocessing", batch)
        return {"cases": [f for images, label in self.batch_files(cases) for f in [*images, label]]}

    def test_cases(self) -> dict[str, dict[str, Any]]:
        """Test case id -> its entry in the dataset report (images, label or None)."""
        return {case["case_id"]: case for case in self.dataset_report()["test_cases"]}

    def test_case_images(self, case_id: str) -> list[Path]:
        case = self.test_cases().get(case_id)
        if case is None:
            raise SegflowError(f"no test case '{case_id}' in {self.dataset}/imagesTs")
        return [self.dataset / p for p in case["images"]]

    def file_ending(self) -> str:
        return self.dataset_report()["file_ending"]

    def raw_test_predictions(self) -> list[Path]:
        """Every test case's segmentation before postprocessing."""
        ending = self.file_ending()
        return [self.layout.raw_prediction(c, ending) for c in self.test_cases()]

    def labelled_test_predictions(self) -> list[Path]:
        """The final segmentations of the test cases that have a label (labelsTs)."""
        ending = self.file_ending()
        return [
            self.layout.prediction(c, ending)
            for c, case in self.test_cases().items()
            if case["label"] is not None
        ]

    def test_labels(self) -> list[Path]:
        return [
            self.dataset / case["label"] for case in self.test_cases().values() if case["label"]
        ]

    # ------------------------------------------------------------------ plans

    def used_plans(self) -> list[str | None]:
        """The name of every plans the run makes: None (plans.json) first, then the
        experiments' own, by name."""
        return [None, *sorted(self.planning)]

    def experiment_planning_section(self, plans: str) -> dict[str, Any]:
        """The planning section of the plans called ``plans`` (not plans.json)."""
        if plans not in self.planning:
            raise SegflowError(f"plans '{plans}' belong to no experiment: {sorted(self.planning)}")
        return self.planning[plans]

    def planning_options(self, planning: dict[str, Any], input: Any) -> list[str]:
        """The options of :func:`planning_command`, one whole argument each, from the planning
        rule's input (``dataset_json``, ``fingerprint``, ``source_plans``)."""
        if planning["plans_from"]:
            return [
                f"--source-plans={input.source_plans}",
                f"--target-dataset-json={input.dataset_json}",
                f"--target-fingerprint={input.fingerprint}",
            ]
        options = [
            f"--dataset-json={input.dataset_json}",
            f"--fingerprint={input.fingerprint}",
            f"--preset={planning['preset']}",
        ]
        if planning["gpu_memory_target_gb"]:
            options.append(f"--gpu-memory-gb={planning['gpu_memory_target_gb']}")
        options += [
            f"--{key.replace('_', '-')}={planning[key]}"
            for key in ("base_features", "max_features")
            if planning[key] is not None
        ]
        return [*options, f"--seed={self.config['seed']}"]

    def plans_file(self, plans: str | None = None) -> Path:
        """The path of the plans called ``plans`` (None: plans.json)."""
        return self.layout.named_plans(plans)

    def planned(self, plans: str | None = None) -> dict[str, Any]:
        """The content of the plans called ``plans`` (None: plans.json), parsed once per
        version (do not modify)."""
        return cache.json_content(self._plans_path(plans))

    def planned_configurations(self) -> list[str]:
        """The preprocessed folders (named as ``Results.preprocessed`` takes them) of every
        plans.

        A configuration preprocessed exactly as an earlier one
        (:mod:`segflow.preprocessing.sharing`) has none of its own: the cascade's
        full-resolution stage trains on the 3d_fullres data, and the residual-encoder presets'
        2d and 3d_fullres on the default planner's.
        """
        return list(dict.fromkeys(self._preprocessed_owners().values()))

    def _preprocessed_owners(self) -> dict[tuple[str | None, str], str]:
        return cache.preprocessed_folders([(p, self._plans_path(p)) for p in self.used_plans()])

    def preprocessed_manifests(self) -> list[Path]:
        """Every batch manifest of every configuration: the whole preprocessed dataset."""
        batches = list(self.preprocess_batches())
        return [
            self.layout.preprocess_manifest(configuration, batch)
            for configuration in self.planned_configurations()
            for batch in batches
        ]

    # ------------------------------------------------------------------ models

    def model_experiment(self, model: str) -> str | None:
        """The experiment a model (its folder name) belongs to: None without experiments."""
        experiment = parse_model_name(model)[1]
        if experiment not in self.experiments:
            expected = [model_name("<configuration>", e) for e in self.experiments]
            raise SegflowError(
                f"model '{model}' names no experiment of the config: expected {expected}"
            )
        return experiment

    def model_plans(self, model: str) -> str | None:
        """The name of the plans a model trains with (None: plans.json)."""
        return self.experiment_plans[self.model_experiment(model)]

    def model_plans_file(self, model: str) -> Path:
        return self.plans_file(self.model_plans(model))

    @staticmethod
    def plans_configuration(model: str) -> str:
        """The plans configuration a model (its folder name) trains."""
        return parse_model_name(model)[0]

    def preprocessed_configuration(self, model: str) -> str:
        """The preprocessed folder model ``model`` trains on: its plans' configuration's, or
        that of the first configuration preprocessed the same way."""
        plans, configuration = self.model_plans(model), self.plans_configuration(model)
        configurations = self.planned(plans)["configurations"]
        if configuration not in configurations:
            raise SegflowError(
                f"configuration '{configuration}' is not in the plans {self.plans_file(plans)}: "
                f"{list(configurations)}"
            )
        return self._preprocessed_owners()[(plans, configuration)]

    def trained_configurations(self) -> list[str]:
        """The name of every model trained: each experiment's of every configuration of
        ``training.configurations``, or of every planned one (the cascade's stages
        included)."""
        trained = {
            e: self._trained_plans_configurations(self.experiment_plans[e])
            for e in self.experiments
        }
        # By configuration, then experiment; an experiment's plans may hold other
        # configurations (a preset may plan 3d_lowres where another does not).
        order = list(
            dict.fromkeys(c for configurations in trained.values() for c in configurations)
        )
        return [model_name(c, e) for c in order for e in self.experiments if c in trained[e]]

    def _trained_plans_configurations(self, plans: str | None = None) -> list[str]:
        configurations = self.planned(plans)["configurations"]
        chosen = self.config["training"]["configurations"]
        if chosen is None:
            return list(configurations)
        unknown = [n for n in chosen if n not in configurations]
        if unknown:
            raise SegflowError(
                f"config training.configurations: {unknown} not in the plans "
                f"{self.plans_file(plans)}; planned: {list(configurations)}"
            )
        return list(chosen)

    def training_folds(self) -> list[int]:
        """``training.folds``, or every fold the split makes."""
        if self.config["training"]["folds"] is not None:
            return list(self.config["training"]["folds"])
        if self.manual_folds is not None:
            return list(range(len(self.manual_folds)))
        return list(range(self.config["splits"]["num_folds"]))

    def train_inputs(self, model: str) -> dict[str, list[Path]]:
        """The preprocessed batches a model trains on."""
        owner = self.preprocessed_configuration(model)
        return {
            "manifests": [
                self.layout.preprocess_manifest(owner, batch) for batch in self.preprocess_batches()
            ]
        }

    def trained_models(self) -> list[Path]:
        """Every fold's final checkpoint of every trained model."""
        return [
            self.layout.checkpoint(model, fold)
            for model in self.trained_configurations()
            for fold in self.training_folds()
        ]

    # ------------------------------------------------------------------ the cascade

    def previous_stage_model(self, model: str) -> str | None:
        """The model whose cross-validation a cascade stage's model trains on (same
        experiment), or None for a configuration outside the cascade's second stage."""
        configuration, experiment = parse_model_name(model)
        plans = self.planned(self.model_plans(model))
        previous = plans["configurations"][configuration].get("previous_stage")
        return None if previous is None else model_name(previous, experiment)

    def previous_stage_inputs(self, model: str) -> dict[str, list[Path]]:
        """The previous_stage rule's input: every fold's predictions of the previous stage
        (the cascade's fold k needs cases that every other fold held out)."""
        previous = self.previous_stage_model(model)
        if previous is None:
            raise SegflowError(f"'{model}' is not a cascade stage")
        return {
            "predictions": [
                self.layout.fold_predictions(previous, fold) for fold in self.training_folds()
            ],
            "manifests": self.train_inputs(model)["manifests"],
        }

    def previous_stage_input(self, model: str) -> list[Path]:
        """A cascade stage's train and validate input: its previous_stage folder; []
        otherwise."""
        if self.previous_stage_model(model) is None:
            return []
        return [self.layout.previous_stage(model)]

    def previous_stage_option(self, model: str) -> list[str]:
        return [f"--previous-stage={folder}" for folder in self.previous_stage_input(model)]

    # ------------------------------------------------------------------ stage options

    def training_options(
        self,
        experiment: str | None = None,
        model: str | None = None,
        fold: int | str | None = None,
    ) -> list[str]:
        """Options of ``segflow train`` from an experiment's training section
        (TrainingSettings' fields; the rule passes --threads itself), one argument each. With
        ssl_pretrain, the pretrained weights are the model's fold's ``pretrain`` checkpoint."""
        section = self.experiments[experiment]
        values = {**section, "seed": self.config["seed"], "experiment": experiment}
        if section.get("ssl_pretrain") and model is not None:
            values["pretrained_weights"] = str(self.layout.ssl_checkpoint(model, fold))
        return to_arguments(TrainingSettings, values, exclude=("threads",))

    def pretrained_weights(self, model: str, fold: int | str) -> Path | str | list[str]:
        """The train rule's pretrained weights: the model's experiment's, or its fold's
        ``pretrain`` checkpoint (ssl_pretrain), if any."""
        section = self.experiments[self.model_experiment(model)]
        if section.get("ssl_pretrain"):
            return self.layout.ssl_checkpoint(model, fold)
        return section["pretrained_weights"] or []

    def pretraining_options(self, experiment: str | None = None) -> list[str]:
        """Options of ``segflow pretrain``: the ``pretraining`` section, training's device and
        workers, the config's seed and the experiment's network (the rule passes
        --threads)."""
        training = self.experiments[experiment]
        values = {
            **self.config["pretraining"],
            "seed": self.config["seed"],
            "device": training["device"],
            "num_workers": training["num_workers"],
        }
        network = to_arguments(NetworkVariant, training["network"] or {}, prefix="network_")
        return to_arguments(PretrainingSettings, values, exclude=("threads",)) + network

    def pretraining_test_inputs(self) -> dict[str, Any]:
        """With pretraining.test_images, the pretrain job's inputs beyond the training data:
        the dataset report that lists the test images, and their files."""
        if not self.config["pretraining"]["test_images"]:
            return {}
        return {
            "dataset_report": self.layout.dataset_report,
            "test_images": [
                self.dataset / p for case in self.test_cases().values() for p in case["images"]
            ],
        }

    def pretraining_test_option(self, input: Any) -> list[str]:
        if not self.config["pretraining"]["test_images"]:
            return []
        return [f"--dataset-report={input.dataset_report}"]

    def prediction_options(self) -> list[str]:
        """Options of ``segflow predict`` (test images) from the ``inference`` section
        (InferenceSettings' fields), one argument each."""
        values = {**self.config["inference"], "save_probabilities": False}
        return to_arguments(InferenceSettings, values, exclude=("threads",))

    def inference_options(self) -> list[str]:
        """Options of ``segflow validate-fold``: those of ``segflow predict``, and the
        probabilities the ensembles need."""
        values = {**self.config["inference"], "save_probabilities": self.save_cv_probabilities}
        return to_arguments(InferenceSettings, values, exclude=("threads",))

    # ------------------------------------------------------------------ cross-validation on

    def crossval_summaries(self) -> list[Path]:
        """The cross-validation summary of every trained model."""
        return [self.layout.crossval_summary(c) for c in self.trained_configurations()]

    def crossval_folders(self) -> list[Path]:
        return [self.layout.crossval_folder(c) for c in self.trained_configurations()]

    def fold_outputs(self, name: str) -> list[Path]:
        """A validate output folder (PREDICTIONS_FOLDER or PROBABILITIES_FOLDER) of every
        fold trained."""
        return [
            self.layout.validation_folder(model, fold) / name
            for model in self.trained_configurations()
            for fold in self.training_folds()
        ]

    def selection_inputs(self) -> dict[str, list[Path]]:
        inputs = {
            "summaries": self.crossval_summaries(),
            "predictions": self.fold_outputs(PREDICTIONS_FOLDER),
        }
        if self.config["selection"]["ensembles"] and len(self.trained_configurations()) > 1:
            inputs["probabilities"] = self.fold_outputs(PROBABILITIES_FOLDER)
        return inputs

    def final_targets(self) -> list[Path]:
        """What ``rule all`` asks for beyond training and cross-validation."""
        layout = self.layout
        targets = [layout.selection, layout.postprocessing, layout.model]
        targets += [layout.report / name for name in REPORT_FILES.values()]
        test_cases = self.test_cases()
        if test_cases:
            targets.append(layout.predictions)
        if any(case["label"] for case in test_cases.values()):
            targets += [layout.test_metrics, layout.test_summary]
            targets += [layout.report / name for name in TEST_REPORT_FILES.values()]
        return targets
