"""``segflow export-nnunet``: an exported segflow model as nnU-Net v2 results that
``nnUNetv2_predict`` runs.

For each configuration of the model,
``<results>/<dataset>/nnUNetTrainer__<plans>__<configuration>/`` gets nnU-Net's ``plans.json``
(:func:`segflow.planning.nnunet_plans.to_nnunet_plans`),
``dataset.json`` and ``fold_<k>/checkpoint_final.pth``: the weights under nnU-Net's names with
every alias nnU-Net's strict loading expects (:func:`segflow.nnunet.weights.segflow_to_nnunet`),
the trainer's name (``nnUNetTrainer``: the network is built from the plans), the trainer's
arguments nnU-Net's predictor reads (plans, configuration, fold, dataset.json) and the
mirroring axes the fold was trained with. Only tensors and plain data go into the checkpoint.
The selected postprocessing is written in nnU-Net's ``postprocessing.json`` form beside the
model folder, in ``crossval_results_folds_<folds>/``.

Only networks nnU-Net builds can go: its ``PlainConvUNet`` and ``ResidualEncoderUNet`` as the
plans describe them. A fold trained with a network variant (another architecture of the zoo,
a scaled encoder, other normalization, attention, a spatial transformer) or a cascade stage is
refused, named.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from segflow.errors import Problem, SegflowError
from segflow.export.bundle import load_bundle
from segflow.io.atomic import atomic_path, write_json
from segflow.io.paths import output_folder_problems
from segflow.networks.variants import NetworkVariant
from segflow.nnunet.weights import segflow_to_nnunet
from segflow.planning.nnunet_plans import to_nnunet_plans
from segflow.training.checkpoint import load_checkpoint

__all__ = ["TRAINER", "export_nnunet"]

logger = logging.getLogger(__name__)

#: The trainer named in the written folders and checkpoints: nnU-Net's own, which builds the
#: network the plans describe.
TRAINER = "nnUNetTrainer"


def _variant_problems(state: dict[str, Any], architecture: str, where: str) -> list[Problem]:
    recorded = (state.get("settings") or {}).get("network")
    if recorded is None:
        return []
    variant = NetworkVariant.from_dict(recorded, f"{where}: settings.network")
    if variant.architecture not in (None, architecture):
        return [Problem(where, f"network '{variant.architecture}' is not one nnU-Net builds "
                        "(PlainConvUNet, ResidualEncoderUNet)")]  # fmt: skip
    planned = NetworkVariant(
        architecture=variant.architecture,
        spatial_transformer_lr_scale=variant.spatial_transformer_lr_scale,
    )
    if variant != planned:
        changed = sorted(k for k, v in variant.to_dict().items() if v != planned.to_dict()[k])
        return [Problem(where, f"trained with a network variant ({', '.join(changed)}) that "
                        "nnU-Net does not build")]  # fmt: skip
    return []


def _nnunet_checkpoint(state: dict[str, Any], nnunet_plans: dict[str, Any],
                       configuration: str) -> dict[str, Any]:  # fmt: skip
    return {
        "network_weights": segflow_to_nnunet(state["network"]),
        "trainer_name": TRAINER,
        "init_args": {
            "plans": nnunet_plans,
            "configuration": configuration,
            "fold": int(state["fold"]),
            "dataset_json": state["dataset_json"],
        },
        "inference_allowed_mirroring_axes": tuple(int(a) for a in state["mirror_axes"]),
        "current_epoch": int(state["epoch"]),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "_best_ema": None,
        "written_by": "segflow export-nnunet",
    }


def _postprocessing(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """nnU-Net's ``postprocessing.json`` form of segflow's rules."""
    return {
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"] * len(rules),
        "postprocessing_kwargs": [
            {"labels_or_regions": r["labels"][0] if len(r["labels"]) == 1 else r["labels"]}
            for r in rules
        ],
    }


def export_nnunet(model_dir: str | os.PathLike[str], results_dir: str | os.PathLike[str]) -> Path:
    """Write the exported model at ``model_dir`` as nnU-Net v2 results under ``results_dir``
    (nnU-Net's ``nnUNet_results``).

    Returns:
        The dataset's folder written, ``<results_dir>/<dataset name>``.

    Raises:
        SegflowError: every problem at once: the model is incomplete, a configuration's
            network or a fold's network variant is not one nnU-Net builds, a cascade stage,
            or the model folders to write exist already.
    """
    bundle = load_bundle(model_dir)
    root = Path(results_dir)
    problems = output_folder_problems(root, "the nnU-Net results folder", for_images=False)
    written: dict[str, tuple[dict[str, Any], dict[int, dict[str, Any]]]] = {}
    dataset_name = None
    for name, folds in bundle.configurations.items():
        where = str(bundle.path / name)
        states = {}
        for k in folds:
            state = load_checkpoint(bundle.checkpoint(name, k))
            states[k] = state
        plans = states[folds[0]]["plans"]
        configuration = states[folds[0]]["configuration"]
        dataset_name = plans["dataset_name"]
        conf = plans["configurations"][configuration]
        if conf.get("previous_stage"):
            problems.append(Problem(where, f"'{name}' is a cascade stage (it takes the "
                                    f"segmentations of '{conf['previous_stage']}' as input): "
                                    "exporting nnU-Net's cascade is not supported yet; export "
                                    "a model of its other configurations"))  # fmt: skip
            continue
        architecture = conf["network"]["architecture"]
        for k, state in states.items():
            problems += _variant_problems(state, architecture, f"{where}/fold_{k}")
        try:
            nnunet_plans = to_nnunet_plans({**plans, "configurations": {configuration: conf}})
        except SegflowError as err:
            problems += err.problems or [Problem(where, err.summary)]
            continue
        written[name] = (nnunet_plans, states)
    if dataset_name is not None:
        plans_name = next(iter(written.values()))[0]["plans_name"] if written else "nnUNetPlans"
        for name in written:
            configuration = next(iter(written[name][1].values()))["configuration"]
            target = root / dataset_name / f"{TRAINER}__{plans_name}__{configuration}"
            if target.exists():
                problems.append(Problem(str(target), "exists already; nothing is overwritten"))
    if problems:
        raise SegflowError(f"cannot export {bundle.path} to nnU-Net", problems)
    rules = list(bundle.postprocessing.get("rules") or [])
    connectivity = bundle.postprocessing.get("connectivity", "face")
    if rules and connectivity != "full":
        logger.warning(
            "%s: the postprocessing was decided with %s connectivity; nnU-Net's function "
            "keeps the largest component with full connectivity (faces, edges and corners), "
            "so nnU-Net's postprocessing of this model may remove fewer voxels than segflow's",
            bundle.path,
            connectivity,
        )
    dataset_folder = root / dataset_name
    dataset_folder.mkdir(parents=True, exist_ok=True)
    folds_text = "_".join(
        str(k) for k in sorted({k for f in bundle.configurations.values() for k in f})
    )
    for nnunet_plans, states in written.values():
        configuration = next(iter(states.values()))["configuration"]
        target = dataset_folder / f"{TRAINER}__{nnunet_plans['plans_name']}__{configuration}"
        folder = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=dataset_folder))
        try:
            write_json(folder / "plans.json", nnunet_plans)
            write_json(folder / "dataset.json", bundle.dataset.raw)
            fingerprint = bundle.path / "fingerprint.json"
            if fingerprint.is_file():
                shutil.copyfile(fingerprint, folder / "dataset_fingerprint.json")
            for k, state in states.items():
                path = folder / f"fold_{k}" / "checkpoint_final.pth"
                path.parent.mkdir()
                with atomic_path(path) as tmp:
                    torch.save(_nnunet_checkpoint(state, nnunet_plans, configuration), tmp)
            decision = folder / f"crossval_results_folds_{folds_text}"
            decision.mkdir()
            write_json(decision / "postprocessing.json",
                       _postprocessing(rules))  # fmt: skip
            os.replace(folder, target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logger.info("wrote %s (folds %s)", target, sorted(states))
    return dataset_folder
