# Paths, the checked config and small input functions shared by every rule. No method logic.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from segflow.config import ConfigError, check_config, load_config_schema
from segflow.io.atomic import read_json

try:
    config.update(
        check_config(config, load_config_schema(workflow.source_path("../schemas/config.schema.yaml")))
    )
except ConfigError as err:
    raise WorkflowError(err.render()) from None

DATASET = Path(config["dataset"])
RESULTS = Path(config.get("results") or Path("results") / DATASET.name)
LOGS = RESULTS / "logs"
DEMO = config["demo"] is not None

# Jobs run `python -m segflow`. Without conda or containers, that is the interpreter running
# Snakemake (which has segflow, since this file imports it), even when its virtualenv is not
# activated; with them, it is the one of the job's environment.
if not workflow.deployment_settings.deployment_method:
    shell.prefix(f'export PATH="{Path(sys.executable).parent}:$PATH"; ')

wildcard_constraints:
    case=r"[^/]+",


if not DEMO and not DATASET.is_dir():
    raise WorkflowError(
        f"config 'dataset': {DATASET} is not a folder. Point it at a raw dataset in nnU-Net v2 "
        "layout (dataset.json, imagesTr/, labelsTr/), or set 'demo' to build the synthetic one."
    )


def dataset_files(wildcards):
    """validate_dataset's input: every file of the raw dataset, so any change revalidates."""
    if DEMO:
        return [DATASET / "dataset.json"]
    files = [DATASET / "dataset.json"] if (DATASET / "dataset.json").is_file() else []
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        folder = DATASET / sub
        if folder.is_dir():
            files += sorted(Path(e.path) for e in os.scandir(folder) if e.is_file())
    return files


def dataset_report():
    """The checked dataset (the validate_dataset checkpoint's output)."""
    return read_json(checkpoints.validate_dataset.get().output[0])


def training_case_ids(wildcards=None):
    return [case["case_id"] for case in dataset_report()["training_cases"]]


def training_case_files(wildcards):
    """A training case's channel files and label, as validate_dataset found them."""
    for case in dataset_report()["training_cases"]:
        if case["case_id"] == wildcards.case:
            return {
                "images": [DATASET / p for p in case["images"]],
                "label": DATASET / case["label"],
            }
    raise WorkflowError(f"no training case '{wildcards.case}' in {DATASET}")
