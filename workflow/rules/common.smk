# Paths, the checked config and small input functions shared by every rule. No method logic.
import functools
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from snakemake.logging import logger

from segflow.batches import case_batches
from segflow.config import (
    ConfigError,
    check_config,
    experiment_planning,
    experiment_plans,
    experiment_sections,
    load_config_schema,
)
from segflow.containers import apptainer_args
from segflow.errors import SegflowError
from segflow.inference.settings import InferenceSettings
from segflow.io.atomic import read_json
from segflow.layout import (
    PREDICTIONS_FOLDER,
    PROBABILITIES_FOLDER,
    Results,
    model_name,
    parse_model_name,
)
from segflow.preprocessing.sharing import preprocessed_owners
from segflow.settings import to_arguments
from segflow.networks.variants import NetworkVariant
from segflow.training.pretraining_settings import PretrainingSettings
from segflow.training.settings import TrainingSettings
from segflow.training.splits import load_manual_splits
from segflow.workflow_locks import SNAKEMAKE_LOCKS, claim_working_directory

# Every value the config holds is checked here, before any job: the schema, and what a later
# step would refuse (devices, folds, configuration names, the files it names), all at once.
try:
    config.update(
        check_config(
            config,
            load_config_schema(workflow.source_path("../schemas/config.schema.yaml")),
            base=Path.cwd(),
        )
    )
except ConfigError as err:
    raise WorkflowError(err.render()) from None

# Experiment name -> its training section (the `training` one with the experiment's
# overrides); {None: training} without an `experiments` section. A trained model is named
# <configuration>, or <configuration>__<experiment> with experiments (segflow/layout.py): the
# `{configuration}` wildcard of train, validate and crossval is that model name.
EXPERIMENTS = experiment_sections(config)
# Experiment name -> the name of the plans it trains with: None for plans.json (the `planning`
# section's), or, for an experiment with its own `planning` overrides, the name of its plans
# <results>/plans/<name>.json (segflow/config.py: `resenc_m`, or the preset and a digest).
EXPERIMENT_PLANS = experiment_plans(config)
# Plans name -> its planning section, for every plans but plans.json.
PLANNING = {
    EXPERIMENT_PLANS[name]: planning
    for name, planning in experiment_planning(config).items()
    if EXPERIMENT_PLANS[name] is not None
}

# A run killed with SIGKILL leaves Snakemake's locks behind; the same command resumes.
if workflow.is_main_process and claim_working_directory(Path.cwd()):
    logger.warning(
        f"Removed the locks of a segflow run in {Path.cwd()} that no longer runs "
        f"({SNAKEMAKE_LOCKS}); its incomplete jobs rerun."
    )


def _argument_path(value):
    """A path that no command line takes for an option: relative ones beginning with '-'
    become absolute (pathlib drops a leading './')."""
    path = Path(value)
    return Path.cwd() / path if str(path).startswith("-") else path


DATASET = _argument_path(config["dataset"])
RESULTS = _argument_path(config.get("results") or Path("results") / DATASET.name)
# Every artifact's path under RESULTS (segflow/layout.py); wildcards pass through as patterns.
LAYOUT = Results(RESULTS)
LOGS = LAYOUT.logs
DEMO = config["demo"] is not None
HOLDOUT = config["holdout"]
# The dataset folder is built by the workflow (demo or holdout): only its dataset.json,
# written last, is an input of validate_dataset.
BUILT_DATASET = DEMO or HOLDOUT is not None

# Jobs run `python -m segflow`. Without conda or containers, that is the interpreter running
# Snakemake (which has segflow, since this file imports it), even when its virtualenv is not
# activated. In a container (--use-singularity) it is the image's, which has segflow
# installed. In a conda environment (--use-conda: envs/, the pinned dependencies only) it is
# the environment's, running the segflow of this repository.
DEPLOYMENT = workflow.deployment_settings.deployment_method
if DeploymentMethod.APPTAINER in DEPLOYMENT:
    # Each job sees the working directory and, bound here, every folder it reads or writes
    # outside it; --nv gives it the host's GPUs when a device may be CUDA.
    job_paths = [
        DATASET,
        RESULTS,
        HOLDOUT["source"] if HOLDOUT is not None else None,
        config["splits"]["manual"],
        config["splits"]["groups"],
        *(section["pretrained_weights"] for section in EXPERIMENTS.values()),
        config["planning"]["plans_from"],
        *(planning["plans_from"] for planning in PLANNING.values()),
    ]
    try:
        workflow.deployment_settings.apptainer_args = apptainer_args(
            workflow.deployment_settings.apptainer_args,
            [path for path in job_paths if path],
            cwd=Path.cwd(),
            gpu=any(config[s]["device"] not in ("cpu", "mps") for s in ("training", "inference")),
        )
    except SegflowError as err:
        raise WorkflowError(err.render()) from None
elif DeploymentMethod.CONDA in DEPLOYMENT:
    # shell.prefix formats its argument like a rule's shell command (`:q` quotes for the
    # shell); the doubled braces are the shell's own.
    REPOSITORY = workflow.basedir
    shell.prefix('export PYTHONPATH={REPOSITORY:q}"${{PYTHONPATH:+:$PYTHONPATH}}"; ')
else:
    INTERPRETER_BIN = str(Path(sys.executable).parent)
    shell.prefix('export PATH={INTERPRETER_BIN:q}:"$PATH"; ')


wildcard_constraints:
    case=r"[^/]+",
    configuration=r"[^/]+",
    plans=r"[^/]+",
    batch=r"batch_\d+",
    fold=r"\d+",


# The manual splits file, read by the split stage's own checked reader when the workflow is
# parsed: a malformed file is one clear error naming it, before any job runs.
MANUAL_FOLDS = None
if config["splits"]["manual"]:
    try:
        MANUAL_FOLDS = load_manual_splits(config["splits"]["manual"])
    except SegflowError as err:
        raise WorkflowError(f"config 'splits.manual': {err.render()}") from None


def dataset_files(wildcards):
    """validate_dataset's input: every file of the raw dataset, so any change revalidates."""
    if BUILT_DATASET:
        return [DATASET / "dataset.json"]
    files = [DATASET / "dataset.json"] if (DATASET / "dataset.json").is_file() else []
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        folder = DATASET / sub
        if folder.is_dir():
            files += sorted(Path(e.path) for e in os.scandir(folder) if e.is_file())
    return files


@functools.lru_cache(maxsize=4)
def _report_index(path, mtime_ns):
    content = read_json(path)
    return content, {case["case_id"]: case for case in content["training_cases"]}


def _report_version():
    path = checkpoints.validate_dataset.get().output[0]
    return path, os.stat(path).st_mtime_ns


def _dataset_report_index():
    # Input functions run once per job; the parsed report is cached per file version, so
    # building the DAG of a 1,000-case dataset reads and indexes it once.
    return _report_index(*_report_version())


def dataset_report():
    """The checked dataset (the validate_dataset checkpoint's output)."""
    return _dataset_report_index()[0]


def training_cases():
    """Training case id -> its entry in the dataset report (do not modify)."""
    return _dataset_report_index()[1]


def training_case_ids(wildcards=None):
    return list(training_cases())


def training_case_files(wildcards):
    """A training case's channel files and label, as validate_dataset found them."""
    case = training_cases().get(wildcards.case)
    if case is None:
        raise WorkflowError(f"no training case '{wildcards.case}' in {DATASET}")
    return {"images": [DATASET / p for p in case["images"]], "label": DATASET / case["label"]}


def planned_configurations(wildcards=None):
    """The preprocessed folders (named as LAYOUT.preprocessed takes them) of every plans.

    A configuration preprocessed exactly as an earlier one (segflow/preprocessing/sharing.py)
    has none of its own: the cascade's full-resolution stage trains on the 3d_fullres data,
    and the residual-encoder presets' 2d and 3d_fullres on the default planner's.
    """
    return list(dict.fromkeys(_preprocessed_owners().values()))


def used_plans():
    """The name of every plans the run makes: None (plans.json) first, then the experiments'
    own, by name."""
    return [None, *sorted(PLANNING)]


def experiment_planning_section(plans):
    """The planning section of the plans called `plans` (not plans.json)."""
    if plans not in PLANNING:
        raise WorkflowError(f"plans '{plans}' belong to no experiment: {sorted(PLANNING)}")
    return PLANNING[plans]


def planning_command(planning):
    """The command that makes a planning section's plans: moved from another dataset's
    (`plans_from`), or planned."""
    return "move-plans" if planning["plans_from"] else "plan"


def planning_options(planning, input):
    """The options of planning_command, one whole argument each, from the planning rule's
    input (dataset_json, fingerprint, source_plans)."""
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
    return [*options, f"--seed={config['seed']}"]


def plans_file(plans=None):
    """The path of the plans called `plans` (None: plans.json)."""
    return LAYOUT.named_plans(plans)


def _preprocessed_owners():
    """(plans, configuration) -> the preprocessed folder's name it trains on."""
    versions = []
    for plans in used_plans():
        path = _plans_path(plans)
        versions.append((plans, path, os.stat(path).st_mtime_ns))
    return _owners(tuple(versions))


@functools.lru_cache(maxsize=4)
def _owners(versions):
    owners = preprocessed_owners(
        {plans: _plans_content(path, mtime) for plans, path, mtime in versions}
    )
    return {key: model_name(conf, plans) for key, (plans, conf) in owners.items()}


def fingerprint_batches():
    """Batch name -> training case ids, in chunks of `fingerprint.cases_per_job`."""
    return _batches(*_report_version(), config["fingerprint"]["cases_per_job"])


def fingerprint_batch_inputs(wildcards):
    """A fingerprint batch's raw files: every channel and label of its cases."""
    batch = fingerprint_batches().get(wildcards.batch)
    if batch is None:
        raise WorkflowError(f"no fingerprint batch '{wildcards.batch}'")
    cases = training_cases()
    return {
        "images": [DATASET / p for case_id in batch for p in cases[case_id]["images"]],
        "labels": [DATASET / cases[case_id]["label"] for case_id in batch],
    }


def preprocess_batches():
    """Batch name -> training case ids, in sorted chunks of `preprocessing.cases_per_job`."""
    return _batches(*_report_version(), config["preprocessing"]["cases_per_job"])


@functools.lru_cache(maxsize=8)
def _batches(report, mtime_ns, size):
    # Split once per report version and batch size (input functions ask once per job). The
    # same split as `segflow fingerprint-batch` finds a batch's cases with.
    return case_batches(tuple(_report_index(report, mtime_ns)[1]), size)


def preprocess_batch_inputs(wildcards):
    """A batch's raw files: every channel and label of its cases."""
    batch = preprocess_batches().get(wildcards.batch)
    if batch is None:
        raise WorkflowError(f"no preprocessing batch '{wildcards.batch}'")
    cases = training_cases()
    files = []
    for case_id in batch:
        files += [DATASET / p for p in cases[case_id]["images"]] + [
            DATASET / cases[case_id]["label"]
        ]
    return {"cases": files}


def preprocessed_manifests(wildcards=None):
    """Every batch manifest of every configuration: the whole preprocessed dataset."""
    return expand(
        LAYOUT.preprocess_manifest("{configuration}", "{batch}"),
        configuration=planned_configurations(),
        batch=list(preprocess_batches()),
    )


@functools.lru_cache(maxsize=16)
def _plans_content(path, mtime_ns):
    return read_json(path)


def _plans_path(plans=None):
    # The plan checkpoint's output for plans.json; plan_experiment's for an experiment's.
    if plans is None:
        return checkpoints.plan.get().output[0]
    return checkpoints.plan_experiment.get(plans=plans).output[0]


def planned(plans=None):
    """The content of the plans called `plans` (None: plans.json), parsed once per version."""
    path = _plans_path(plans)
    return _plans_content(path, os.stat(path).st_mtime_ns)


def model_plans(model):
    """The name of the plans a model (its folder name) trains with (None: plans.json)."""
    return EXPERIMENT_PLANS[model_experiment(model)]


def model_plans_file(wildcards):
    """The plans file of the model of a train or validate job."""
    return plans_file(model_plans(wildcards.configuration))


def plans_configuration(model):
    """The plans configuration a model (its folder name) trains."""
    return parse_model_name(model)[0]


def model_experiment(model):
    """The experiment a model (its folder name) belongs to: None without experiments."""
    experiment = parse_model_name(model)[1]
    if experiment not in EXPERIMENTS:
        raise WorkflowError(
            f"model '{model}' names no experiment of the config: expected "
            f"{[model_name('<configuration>', e) for e in EXPERIMENTS]}"
        )
    return experiment


def preprocessed_configuration(name):
    """The preprocessed folder model `name` trains on: its plans' configuration's, or that of
    the first configuration preprocessed the same way (segflow/preprocessing/sharing.py)."""
    plans, configuration = model_plans(name), plans_configuration(name)
    configurations = planned(plans)["configurations"]
    if configuration not in configurations:
        raise WorkflowError(
            f"configuration '{configuration}' is not in the plans {plans_file(plans)}: "
            f"{list(configurations)}"
        )
    return _preprocessed_owners()[(plans, configuration)]


def trained_configurations(wildcards=None):
    """The name of every model trained: each experiment's (model_name) of every configuration
    of `training.configurations`, or of every planned one (the cascade's stages included)."""
    trained = {e: _trained_plans_configurations(EXPERIMENT_PLANS[e]) for e in EXPERIMENTS}
    # By configuration, then experiment; an experiment's plans may hold other configurations
    # (a preset may plan 3d_lowres where another does not).
    order = list(dict.fromkeys(c for configurations in trained.values() for c in configurations))
    return [model_name(c, e) for c in order for e in EXPERIMENTS if c in trained[e]]


def _trained_plans_configurations(plans=None):
    configurations = planned(plans)["configurations"]
    chosen = config["training"]["configurations"]
    if chosen is None:
        return list(configurations)
    unknown = [n for n in chosen if n not in configurations]
    if unknown:
        raise WorkflowError(
            f"config training.configurations: {unknown} not in the plans "
            f"{plans_file(plans)}; planned: {list(configurations)}"
        )
    return list(chosen)


def previous_stage_model(model):
    """The model whose cross-validation a cascade stage's model trains on (same experiment),
    or None for a configuration outside the cascade's second stage."""
    configuration, experiment = parse_model_name(model)
    previous = planned(model_plans(model))["configurations"][configuration].get("previous_stage")
    return None if previous is None else model_name(previous, experiment)


def previous_stage_inputs(wildcards):
    """The previous_stage rule's input: every fold's predictions of the previous stage (the
    cascade's fold k needs cases that every other fold held out)."""
    previous = previous_stage_model(wildcards.configuration)
    if previous is None:
        raise WorkflowError(f"'{wildcards.configuration}' is not a cascade stage")
    return {
        "predictions": expand(
            LAYOUT.fold_predictions("{configuration}", "{fold}"),
            configuration=previous,
            fold=training_folds(),
        ),
        "manifests": train_inputs(wildcards)["manifests"],
    }


def previous_stage_input(wildcards):
    """A cascade stage's train and validate input: its previous_stage folder; [] otherwise."""
    if previous_stage_model(wildcards.configuration) is None:
        return []
    return [LAYOUT.previous_stage(wildcards.configuration)]


def previous_stage_option(wildcards):
    if previous_stage_model(wildcards.configuration) is None:
        return []
    return [f"--previous-stage={LAYOUT.previous_stage(wildcards.configuration)}"]


def training_folds():
    """`training.folds`, or every fold the split makes."""
    if config["training"]["folds"] is not None:
        return list(config["training"]["folds"])
    if MANUAL_FOLDS is not None:
        return list(range(len(MANUAL_FOLDS)))
    return list(range(config["splits"]["num_folds"]))


def train_inputs(wildcards):
    """The preprocessed batches a configuration trains on."""
    return {
        "manifests": expand(
            LAYOUT.preprocess_manifest("{owner}", "{batch}"),
            owner=preprocessed_configuration(wildcards.configuration),
            batch=list(preprocess_batches()),
        )
    }


def training_options(experiment=None, model=None, fold=None):
    """Options of `segflow train` from an experiment's training section (TrainingSettings'
    fields; the rule passes --threads itself), one argument each. With ssl_pretrain, the
    pretrained weights are the model's fold's `pretrain` checkpoint."""
    values = {**EXPERIMENTS[experiment], "seed": config["seed"], "experiment": experiment}
    if EXPERIMENTS[experiment].get("ssl_pretrain") and model is not None:
        values["pretrained_weights"] = str(LAYOUT.ssl_checkpoint(model, fold))
    return to_arguments(TrainingSettings, values, exclude=("threads",))


def pretrained_weights(wildcards):
    """The train rule's pretrained weights: the model's experiment's, or its fold's
    `pretrain` checkpoint (ssl_pretrain), if any."""
    section = EXPERIMENTS[model_experiment(wildcards.configuration)]
    if section.get("ssl_pretrain"):
        return LAYOUT.ssl_checkpoint(wildcards.configuration, wildcards.fold)
    return section["pretrained_weights"] or []


def pretraining_test_inputs(wildcards):
    """With pretraining.test_images, the pretrain job's inputs beyond the training data: the
    dataset report that lists the test images, and their files (changing one reruns it)."""
    if not config["pretraining"]["test_images"]:
        return {}
    return {
        "dataset_report": LAYOUT.dataset_report,
        "test_images": [DATASET / p for case in test_cases().values() for p in case["images"]],
    }


def pretraining_test_option(wildcards, input):
    if not config["pretraining"]["test_images"]:
        return []
    return [f"--dataset-report={input.dataset_report}"]


def pretraining_options(experiment=None):
    """Options of `segflow pretrain`: the `pretraining` section, training's device and
    workers, the config's seed and the experiment's network (the rule passes --threads)."""
    training = EXPERIMENTS[experiment]
    values = {
        **config["pretraining"],
        "seed": config["seed"],
        "device": training["device"],
        "num_workers": training["num_workers"],
    }
    network = to_arguments(NetworkVariant, training["network"] or {}, prefix="network_")
    return to_arguments(PretrainingSettings, values, exclude=("threads",)) + network


def prediction_options():
    """Options of `segflow predict` (test images) from the `inference` section
    (InferenceSettings' fields), one argument each."""
    values = {**config["inference"], "save_probabilities": False}
    return to_arguments(InferenceSettings, values, exclude=("threads",))


def inference_options():
    """Options of `segflow validate-fold`: those of `segflow predict`, and the probabilities
    the ensembles need."""
    values = {**config["inference"], "save_probabilities": SAVE_CV_PROBABILITIES}
    return to_arguments(InferenceSettings, values, exclude=("threads",))


def crossval_summaries(wildcards=None):
    """The cross-validation summary of every trained configuration."""
    return expand(
        LAYOUT.crossval_summary("{configuration}"),
        configuration=trained_configurations(),
    )


def trained_models(wildcards=None):
    """Every fold's final checkpoint of every trained configuration."""
    return expand(
        LAYOUT.checkpoint("{configuration}", "{fold}"),
        configuration=trained_configurations(),
        fold=training_folds(),
    )


def _has_files(folder):
    return folder.is_dir() and any(e.is_file() for e in os.scandir(folder))


# Whether the dataset has test images (imagesTs) and labels for them (labelsTs). Known before
# the run: the report's test pages are outputs only when there is something to score.
if DEMO:
    HAS_TEST_IMAGES = HAS_TEST_LABELS = config["demo"]["test_cases"] > 0
elif HOLDOUT is not None:
    HAS_TEST_IMAGES = HAS_TEST_LABELS = True
else:
    HAS_TEST_IMAGES = _has_files(DATASET / "imagesTs")
    HAS_TEST_LABELS = HAS_TEST_IMAGES and _has_files(DATASET / "labelsTs")

if (
    config["pretraining"]["test_images"]
    and not HAS_TEST_IMAGES
    and any(section.get("ssl_pretrain") for section in EXPERIMENTS.values())
):
    raise WorkflowError(
        f"config 'pretraining.test_images': {DATASET / 'imagesTs'} holds no test images to "
        "pretrain on; set it to false"
    )

# The validate jobs write each case's class probabilities when selection compares ensembles
# (or the user keeps them); they are temporary unless inference.save_probabilities is set.
SAVE_CV_PROBABILITIES = (
    config["selection"]["ensembles"] or config["inference"]["save_probabilities"]
)


def cv_probabilities_output():
    # Kept when several experiments are compared: `select` reads every model's probabilities,
    # and if they were temporary a change to one experiment would rerun every other
    # experiment's validate jobs to write them again.
    path = directory(LAYOUT.fold_probabilities("{configuration}", "{fold}"))
    keep = config["inference"]["save_probabilities"] or config["experiments"] is not None
    return path if keep else temp(path)


wildcard_constraints:
    ending=r"\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd|\.png|\.bmp|\.tif|\.tiff",


def file_ending():
    return dataset_report()["file_ending"]


def test_cases():
    """Test case id -> its entry in the dataset report (images, label or None)."""
    return {case["case_id"]: case for case in dataset_report()["test_cases"]}


def test_case_images(wildcards):
    case = test_cases().get(wildcards.case)
    if case is None:
        raise WorkflowError(f"no test case '{wildcards.case}' in {DATASET}/imagesTs")
    return [DATASET / p for p in case["images"]]


def raw_test_predictions(wildcards=None):
    """Every test case's segmentation before postprocessing."""
    return [LAYOUT.raw_prediction(c, file_ending()) for c in test_cases()]


def labelled_test_predictions(wildcards=None):
    """The final segmentations of the test cases that have a label (labelsTs)."""
    return [
        LAYOUT.prediction(c, file_ending())
        for c, case in test_cases().items()
        if case["label"] is not None
    ]


def test_labels(wildcards=None):
    return [DATASET / case["label"] for case in test_cases().values() if case["label"]]


def crossval_folders(wildcards=None):
    return [LAYOUT.crossval_folder(c) for c in trained_configurations()]


def fold_outputs(name):
    """A validate output folder (PREDICTIONS_FOLDER or PROBABILITIES_FOLDER) of every fold
    trained."""
    return expand(
        LAYOUT.validation_folder("{configuration}", "{fold}") / name,
        configuration=trained_configurations(),
        fold=training_folds(),
    )


def selection_inputs(wildcards):
    inputs = {"summaries": crossval_summaries(), "predictions": fold_outputs(PREDICTIONS_FOLDER)}
    if config["selection"]["ensembles"] and len(trained_configurations()) > 1:
        inputs["probabilities"] = fold_outputs(PROBABILITIES_FOLDER)
    return inputs


def final_targets(wildcards=None):
    """What `rule all` asks for beyond training and cross-validation."""
    targets = [LAYOUT.selection, LAYOUT.postprocessing, LAYOUT.model]
    targets += [LAYOUT.report / name for name in REPORT_PAGES]
    if test_cases():
        targets.append(LAYOUT.predictions)
    if any(case["label"] for case in test_cases().values()):
        targets += [LAYOUT.test_metrics, LAYOUT.test_summary]
        targets += [LAYOUT.report / name for name in TEST_REPORT_PAGES]
    return targets


# The names of segflow.report's REPORT_FILES and TEST_REPORT_FILES, written out: importing
# segflow.report (pandas, matplotlib) would add most of a second to every Snakemake start.
REPORT_PAGES = [
    "dataset.html",
    "plans.html",
    "crossval.html",
    "crossval_dice.png",
    "selection.html",
]
TEST_REPORT_PAGES = ["test.html", "test_dice.png"]
