"""Trained folds as networks ready to predict.

A fold's checkpoint (written by :class:`~segflow.training.trainer.FoldTrainer`) is a model on
its own: besides the weights it records the configuration, the network's input channels and
outputs, the axes mirrored in training, the plans and dataset.json. A *model folder* holds one
configuration's folds as ``fold_<k>/checkpoint_final.pt`` (``<results>/models/<configuration>``);
a folder of such folders (``<results>/models``) names the configuration with
``configuration``. Loading never runs pickled code (``weights_only``).

A cascade stage (a configuration with a ``previous_stage`` in its plans) is loaded together
with its previous stage, from the folder beside it (``3d_lowres`` beside
``3d_cascade_fullres``, with experiments ``3d_lowres__<experiment>``): the same folds when
folds are chosen, else all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segflow.errors import Problem, SegflowError
from segflow.inference.backends import remember_checkpoint
from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.io.paths import access_reason, readable_path
from segflow.layout import CHECKPOINT_FINAL, fold_of_folder, model_name, parse_model_name
from segflow.networks.variants import NetworkVariant
from segflow.planning.plans import Plans
from segflow.training.checkpoint import load_checkpoint

__all__ = [
    "TrainedFold",
    "TrainedModel",
    "load_model",
    "load_trained_fold",
    "model_path_problems",
]

CHECKPOINT_NAME = CHECKPOINT_FINAL
#: What prediction reads from a fold's checkpoint besides the plans.
_FOLD_KEYS = ("configuration", "num_input_channels", "num_outputs", "network", "fold",
              "mirror_axes", "epoch")  # fmt: skip


@dataclass(frozen=True)
class TrainedFold:
    """One fold's network in evaluation mode, without deep-supervision heads."""

    network: nn.Module
    configuration: str
    fold: int
    mirror_axes: tuple[int, ...]
    checkpoint: Path
    epoch: int
    #: The network's input channels (a cascade stage's include the previous stage's).
    input_channels: int = 1


def load_trained_fold(
    checkpoint: str | os.PathLike[str],
    plans: Plans | None = None,
    device: str | torch.device = "cpu",
) -> TrainedFold:
    """Build the fold's network from ``plans`` (default: the plans in the checkpoint) and load
    the checkpoint's weights.

    Raises:
        SegflowError: the checkpoint is unreadable, names a configuration the plans do not
            have, or its weights do not fit the network the plans describe (plans of another
            experiment).
    """
    path = Path(checkpoint)
    return _fold_from_state(load_checkpoint(path), path, plans, device)


def _check_fold_state(state: dict, path: Path) -> None:
    """Raise unless ``state`` has what prediction reads from a fold's checkpoint."""
    missing = [key for key in _FOLD_KEYS if key not in state]
    if missing or not isinstance(state.get("network"), dict):
        raise SegflowError(
            "not a trained fold's checkpoint",
            [Problem(readable_path(path), f"lacks {', '.join(missing) or 'network weights'}: "
                     "it is not a checkpoint segflow's training wrote")],
        )  # fmt: skip


def _network_variant(state: dict, path: Path) -> NetworkVariant:
    """The network variant the checkpoint's run trained (the planned network before variants
    existed)."""
    recorded = (state.get("settings") or {}).get("network")
    if recorded is None:
        return NetworkVariant()
    return NetworkVariant.from_dict(recorded, f"{path}: settings.network")


def _fold_from_state(
    state: dict, path: Path, plans: Plans | None, device: str | torch.device
) -> TrainedFold:
    from segflow.networks import build_network

    _check_fold_state(state, path)
    if plans is None:
        plans = Plans.from_dict(state["plans"], where=str(path))
    name = state["configuration"]
    if name not in plans:
        raise SegflowError(
            "checkpoint does not match the plans",
            [
                Problem(
                    str(path),
                    f"trained configuration '{name}' is not in the plans "
                    f"({', '.join(plans.configuration_names)})",
                )
            ],
        )
    network = build_network(
        plans.configuration(name),
        state["num_input_channels"],
        state["num_outputs"],
        deep_supervision=False,
        variant=_network_variant(state, path),
    )
    try:
        network.load_state_dict(state["network"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise SegflowError(
            "checkpoint does not match the plans",
            [Problem(str(path), f"its weights do not fit the planned network: {err}")],
        ) from None
    network.to(device).eval()
    # Another backend finds the fold's ONNX network by its checkpoint.
    remember_checkpoint(network, path, state["num_input_channels"])
    return TrainedFold(
        network=network,
        configuration=name,
        fold=int(state["fold"]),
        mirror_axes=tuple(int(a) for a in state["mirror_axes"]),
        checkpoint=path,
        epoch=int(state["epoch"]),
        input_channels=int(state["num_input_channels"]),
    )


@dataclass(frozen=True)
class TrainedModel:
    """The folds of one configuration, with the plans and dataset.json they were trained on."""

    configuration: str
    folds: tuple[TrainedFold, ...]
    plans: Plans
    dataset: DatasetJson
    #: A cascade stage's previous stage (whose segmentation is its extra input); else None.
    previous_stage: TrainedModel | None = None
    #: The config's experiment the folds were trained in (their checkpoints record it).
    experiment: str | None = None

    @property
    def name(self) -> str:
        """The model's name: its configuration, with an experiment both (``2d__BL+GN``)."""
        return model_name(self.configuration, self.experiment)

    @property
    def networks(self) -> list[nn.Module]:
        return [f.network for f in self.folds]

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        return self.folds[0].mirror_axes


def _trained_folds(folder: Path) -> list[int]:
    """The folds with a final checkpoint in a configuration's folder (``fold_<k>``; a folder
    like ``fold_old`` is not a fold)."""
    if not folder.is_dir():
        return []
    folds = (fold_of_folder(p.parent.name) for p in folder.glob(f"fold_*/{CHECKPOINT_NAME}"))
    return sorted(k for k in folds if k is not None)


def _has_folds(folder: Path) -> bool:
    return bool(_trained_folds(folder))


#: What a model folder is (``segflow predict -m``), for messages.
MODEL_FOLDER_KINDS = (
    f"a configuration's folder of fold_<k>/{CHECKPOINT_NAME}, a folder of such configuration "
    "folders (<results>/models), or an exported model (segflow export) with its manifest.json"
)


def model_path_problems(model_dir: Path) -> list[Problem]:
    """Why ``model_dir`` cannot be a model folder before looking inside it: it does not
    exist, is a broken link, or is a file."""
    where = readable_path(model_dir)
    reason = access_reason(model_dir)
    if reason is not None:
        return [Problem(where, f"{reason}; expected {MODEL_FOLDER_KINDS}")]
    if not model_dir.is_dir():
        hint = (
            "an exported model's zip: unpack it first with segflow import-model"
            if model_dir.suffix.lower() == ".zip"
            else "a file, not a folder"
        )
        return [Problem(where, f"is {hint}; expected {MODEL_FOLDER_KINDS}")]
    return []


def _configuration_folder(model_dir: Path, configuration: str | None) -> Path:
    problems = model_path_problems(model_dir)
    if problems:
        raise SegflowError("no model there", problems)
    if _has_folds(model_dir):
        return model_dir  # its checkpoints say which configuration it is
    children = sorted(model_dir.iterdir())
    available = [p.name for p in children if _has_folds(p)]
    if not available:
        raise SegflowError(
            "not a model folder",
            [Problem(readable_path(model_dir), f"holds no model: expected {MODEL_FOLDER_KINDS}")],
        )
    if configuration is None:
        if len(available) > 1:
            raise SegflowError(
                "choose a configuration",
                [Problem(str(model_dir), f"holds several: {', '.join(available)}")],
            )
        configuration = available[0]
    if configuration not in available:
        raise SegflowError(
            "no such configuration",
            [Problem(str(model_dir), f"holds {', '.join(available)}, not '{configuration}'")],
        )
    return model_dir / configuration


def load_model(
    model_dir: str | os.PathLike[str],
    *,
    configuration: str | None = None,
    folds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """Load the folds (default: all) of a model folder.

    Raises:
        SegflowError: not a model folder, an unknown configuration or fold, or folds trained
            with different plans or datasets.
    """
    folder = _configuration_folder(Path(model_dir), configuration)
    present = _trained_folds(folder)
    chosen = present if folds is None else list(folds)
    missing = [k for k in chosen if k not in present]
    if missing:
        raise SegflowError(
            "no such fold",
            [Problem(str(folder / f"fold_{k}" / CHECKPOINT_NAME), "does not exist; trained "
                     f"folds: {', '.join(map(str, present))}") for k in missing],
        )  # fmt: skip
    states = {k: load_checkpoint(folder / f"fold_{k}" / CHECKPOINT_NAME) for k in chosen}
    for k, state in states.items():
        _check_fold_state(state, folder / f"fold_{k}" / CHECKPOINT_NAME)
    first = states[chosen[0]]
    problems = [
        Problem(str(folder / f"fold_{k}" / CHECKPOINT_NAME),
                f"was trained with other {what} than fold {chosen[0]}")
        for k, state in states.items()
        for what, key in (("plans", "plans"), ("labels and channels", "dataset_json"))
        if state.get(key) != first.get(key)
    ]  # fmt: skip
    if problems:
        raise SegflowError("the folds do not belong together", problems)
    if first.get("plans") is None or first.get("dataset_json") is None:
        raise SegflowError(
            "checkpoint without plans",
            [Problem(str(folder / f"fold_{chosen[0]}" / CHECKPOINT_NAME),
                     "was written by an older segflow; retrain or pass the plans")],
        )  # fmt: skip
    plans = Plans.from_dict(
        first["plans"], where=str(folder / f"fold_{chosen[0]}" / CHECKPOINT_NAME)
    )
    dataset, dataset_problems = parse_dataset_json(first["dataset_json"])
    if dataset is None:
        raise SegflowError("checkpoint with an invalid dataset.json", dataset_problems)
    loaded = tuple(
        _fold_from_state(states[k], folder / f"fold_{k}" / CHECKPOINT_NAME, plans, device)
        for k in chosen
    )
    trained = {f.configuration for f in loaded}
    # A model's folder is named by its configuration, with experiments by both
    # (3d_fullres__larger): its checkpoints record the configuration.
    if configuration is not None and trained != {parse_model_name(configuration)[0]}:
        raise SegflowError(
            "no such configuration",
            [Problem(str(folder), f"holds folds of {', '.join(sorted(trained))}, not "
                                  f"'{configuration}'")],
        )  # fmt: skip
    previous = plans.configuration(loaded[0].configuration).previous_stage
    previous_stage = None
    if previous is not None:
        previous_stage = _previous_stage_model(folder, previous, folds, device)
    experiment = (first.get("settings") or {}).get("experiment")
    return TrainedModel(
        loaded[0].configuration,
        loaded,
        plans,
        dataset,
        previous_stage,
        experiment=experiment if isinstance(experiment, str) and experiment else None,
    )


def _previous_stage_model(
    folder: Path, previous: str, folds: Sequence[int] | None, device: str | torch.device
) -> TrainedModel:
    """The previous stage of the cascade stage in ``folder``: the model beside it."""
    experiment = parse_model_name(folder.name)[1]
    name = model_name(previous, experiment)
    beside = folder.parent / name
    if not _has_folds(beside):
        raise SegflowError(
            "the cascade's previous stage is missing",
            [Problem(readable_path(beside), f"{folder.name} predicts from the segmentation of "
                     f"{previous}, whose folds belong in this folder beside it")],
        )  # fmt: skip
    return load_model(folder.parent, configuration=name, folds=folds, device=device)
