# The checked config, paths and the rules' input functions: one-line adapters of
# segflow.workflow.run.WorkflowRun, where everything they compute lives (and is unit-tested).
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from snakemake.logging import logger

from segflow.config import ConfigError, check_config, load_config_schema
from segflow.errors import SegflowError
from segflow.layout import REPORT_FILES, TEST_REPORT_FILES, model_name
from segflow.workflow.run import WILDCARD_PATTERNS, WorkflowRun, argument_path, planning_command
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
    RUN = WorkflowRun(
        config,
        dataset_report=lambda: checkpoints.validate_dataset.get().output[0],
        plans=lambda plans: (
            checkpoints.plan.get().output[0]
            if plans is None
            else checkpoints.plan_experiment.get(plans=plans).output[0]
        ),
    )
except ConfigError as err:
    raise WorkflowError(err.render()) from None
except SegflowError as err:
    raise WorkflowError(err.render()) from None

# A run killed with SIGKILL leaves Snakemake's locks behind; the same command resumes.
if workflow.is_main_process and claim_working_directory(Path.cwd()):
    logger.warning(
        f"Removed the locks of a segflow run in {Path.cwd()} that no longer runs "
        f"({SNAKEMAKE_LOCKS}); its incomplete jobs rerun."
    )

EXPERIMENTS = RUN.experiments
DATASET = RUN.dataset
LAYOUT = RUN.layout
LOGS = LAYOUT.logs
DEMO = RUN.demo
HOLDOUT = RUN.holdout
HAS_TEST_LABELS = RUN.has_test_labels

# Jobs run `python -m segflow`. Without conda or containers, that is the interpreter running
# Snakemake (which has segflow, since this file imports it), even when its virtualenv is not
# activated. In a container (--use-singularity) it is the image's, which has segflow
# installed. In a conda environment (--use-conda: envs/, the pinned dependencies only) it is
# the environment's, running the segflow of this repository.
DEPLOYMENT = workflow.deployment_settings.deployment_method
if DeploymentMethod.APPTAINER in DEPLOYMENT:
    try:
        workflow.deployment_settings.apptainer_args = RUN.apptainer_args(
            workflow.deployment_settings.apptainer_args
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
    **WILDCARD_PATTERNS,


# Input functions and params: Snakemake passes the wildcards (and the input) they name.
dataset_files = lambda wildcards: RUN.dataset_files()
dataset_report = RUN.dataset_report
training_cases = RUN.training_cases
training_case_files = lambda wildcards: RUN.training_case_files(wildcards.case)
fingerprint_batches = RUN.fingerprint_batches
fingerprint_batch_inputs = lambda wildcards: RUN.fingerprint_batch_inputs(wildcards.batch)
preprocess_batches = RUN.preprocess_batches
preprocess_batch_inputs = lambda wildcards: RUN.preprocess_batch_inputs(wildcards.batch)
preprocessed_manifests = lambda wildcards=None: RUN.preprocessed_manifests()
used_plans = RUN.used_plans
experiment_planning_section = RUN.experiment_planning_section
planning_options = RUN.planning_options
plans_file = RUN.plans_file
planned = RUN.planned
model_plans = RUN.model_plans
model_plans_file = lambda wildcards: RUN.model_plans_file(wildcards.configuration)
plans_configuration = RUN.plans_configuration
model_experiment = RUN.model_experiment
preprocessed_configuration = RUN.preprocessed_configuration
trained_configurations = lambda wildcards=None: RUN.trained_configurations()
previous_stage_inputs = lambda wildcards: RUN.previous_stage_inputs(wildcards.configuration)
previous_stage_input = lambda wildcards: RUN.previous_stage_input(wildcards.configuration)
previous_stage_option = lambda wildcards: RUN.previous_stage_option(wildcards.configuration)
training_folds = RUN.training_folds
train_inputs = lambda wildcards: RUN.train_inputs(wildcards.configuration)
training_options = RUN.training_options
pretrained_weights = lambda wildcards: RUN.pretrained_weights(
    wildcards.configuration, wildcards.fold
)
pretraining_test_inputs = lambda wildcards: RUN.pretraining_test_inputs()
pretraining_test_option = lambda wildcards, input: RUN.pretraining_test_option(input)
pretraining_options = RUN.pretraining_options
prediction_options = RUN.prediction_options
inference_options = RUN.inference_options
crossval_summaries = lambda wildcards=None: RUN.crossval_summaries()
trained_models = lambda wildcards=None: RUN.trained_models()
test_case_images = lambda wildcards: RUN.test_case_images(wildcards.case)
raw_test_predictions = lambda wildcards=None: RUN.raw_test_predictions()
labelled_test_predictions = lambda wildcards=None: RUN.labelled_test_predictions()
test_labels = lambda wildcards=None: RUN.test_labels()
crossval_folders = lambda wildcards=None: RUN.crossval_folders()
selection_inputs = lambda wildcards: RUN.selection_inputs()
final_targets = lambda wildcards=None: RUN.final_targets()


def cv_probabilities_output():
    # Temporary unless kept (WorkflowRun.keep_cv_probabilities says why).
    path = directory(LAYOUT.fold_probabilities("{configuration}", "{fold}"))
    return path if RUN.keep_cv_probabilities else temp(path)


# The report's section of each page (segflow.layout's REPORT_FILES and TEST_REPORT_FILES name
# the files; each caption is workflow/report/<item>.rst): the rules report_pages and
# report_test_pages.
REPORT_SECTIONS = {
    "dataset": "1. Dataset",
    "plans": "2. Plans",
    "crossval": "4. Cross-validation",
    "crossval_dice": "4. Cross-validation",
    "selection": "5. Selection and postprocessing",
    "test": "6. Test set",
    "test_dice": "6. Test set",
}


def report_outputs(files):
    """The report's items of `files` (item -> file name), each with its caption and section."""
    return [report_item(item, name) for item, name in files.items()]


def report_item(item, name):
    section = REPORT_SECTIONS[item]
    return report(LAYOUT.report / name, caption=f"../report/{item}.rst", category=section)
