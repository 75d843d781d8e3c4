"""Fine-tuning: starting a run from the weights of another run (nnU-Net v2's
``-pretrained_weights``).

Every parameter and buffer of the network is taken from the pretrained checkpoint's network
except the segmentation heads (the decoder's 1x1 output convolutions, one per deep-supervision
resolution; a network of the model zoo or a spatial transformer names its own in
``head_prefixes``), which keep their fresh initialization: the new dataset may have other
classes. Everything else must match by name and shape; the input channels too, since the first
convolution's weight has one slice per channel (as in nnU-Net, a pretrained network is only
used on data with as many channels). A network whose topology differs (other plans) is
refused with every mismatching layer listed; ``segflow move-plans`` gives the new dataset the
pretraining dataset's topology.

UpKern (Roy et al., MICCAI 2023, MedNeXt): with ``resample_kernels`` a convolution kernel
whose spatial size alone differs (same output and input channels: a kernel-3 MedNeXt's depthwise
kernels in a kernel-5 MedNeXt) is resized to this network's size by trilinear (bilinear in 2D)
interpolation, as the MedNeXt authors' weight loading does (corners not aligned), instead of
refused; each resized layer is logged with both shapes and returned. Any other mismatch is still
refused.

The checkpoint may also be nnU-Net v2's (``checkpoint_final.pth``): it is read without running
pickled code (:mod:`segflow.nnunet.checkpoint`) and its tensors take segflow's names
(:mod:`segflow.nnunet.weights`) before the same per-layer checks.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segflow.errors import Problem, SegflowError
from segflow.nnunet.checkpoint import is_nnunet_checkpoint, load_nnunet_checkpoint
from segflow.nnunet.weights import renamed_nnunet_weights
from segflow.training.checkpoint import load_checkpoint

__all__ = [
    "HEAD_PREFIX",
    "file_sha256",
    "head_prefixes",
    "load_pretrained_weights",
    "pretrained_problems",
    "resizable_kernel",
    "resized_kernel",
]

logger = logging.getLogger(__name__)

#: State-dict keys of the segmentation heads (every deep-supervision output convolution).
HEAD_PREFIX = "decoder.heads."
_HINT = (
    "the pretrained network was planned for another topology: give this dataset the "
    "pretraining dataset's plans with `segflow move-plans` (config: planning.plans_from)"
)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape)).replace(",)", ")")


def head_prefixes(network: nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of ``network``'s segmentation heads: those it declares
    (``head_prefixes``: the zoo's networks, a spatial transformer), else the U-Net's."""
    return tuple(getattr(network, "head_prefixes", (HEAD_PREFIX,)))


def resizable_kernel(pretrained: torch.Tensor, own: torch.Tensor) -> bool:
    """Whether UpKern resizes ``pretrained`` into ``own``: both 2D or 3D convolution kernels
    ``(out, in, *spatial)`` with the same channels and another spatial size."""
    return (
        pretrained.dim() == own.dim()
        and own.dim() in (4, 5)
        and pretrained.shape[:2] == own.shape[:2]
        and pretrained.shape[2:] != own.shape[2:]
        and pretrained.is_floating_point()
    )


def resized_kernel(pretrained: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """UpKern: the kernel ``pretrained`` ``(out, in, *spatial)`` interpolated (trilinear in 3D,
    bilinear in 2D, corners not aligned) to the spatial size of ``shape``."""
    mode = "trilinear" if len(shape) == 5 else "bilinear"
    resized = nn.functional.interpolate(
        pretrained.float(), size=tuple(shape[2:]), mode=mode, align_corners=False
    )
    return resized.to(pretrained.dtype)


def pretrained_problems(
    pretrained: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    heads: tuple[str, ...] = (HEAD_PREFIX,),
    resample_kernels: bool = False,
) -> list[Problem]:
    """Every layer (but the ``heads``) whose name or shape differs between the state dicts;
    with ``resample_kernels``, kernels UpKern resizes (:func:`resizable_kernel`) are not."""
    problems = []
    for name, tensor in own.items():
        if name.startswith(heads):
            continue
        if name not in pretrained:
            problems.append(Problem(name, "missing from the pretrained network"))
        elif resample_kernels and resizable_kernel(pretrained[name], tensor):
            continue
        elif pretrained[name].shape != tensor.shape:
            problems.append(
                Problem(
                    name,
                    f"pretrained {_shape(pretrained[name])}, this network {_shape(tensor)}",
                )
            )
    for name in pretrained:
        if not name.startswith(heads) and name not in own:
            problems.append(Problem(name, "in the pretrained network, not in this one"))
    return problems


def _nnunet_weights(path: Path) -> tuple[dict[str, torch.Tensor], int | None, list[Problem]]:
    """An nnU-Net v2 checkpoint's weights under segflow's names, its network's input channels
    (its dataset's channels) and the tensors that have no segflow name."""
    checkpoint = load_nnunet_checkpoint(path)
    weights, problems = renamed_nnunet_weights(checkpoint.network_weights, str(path))
    channels = checkpoint.dataset_json.get("channel_names")
    return weights, len(channels) if isinstance(channels, Mapping) else None, problems


def load_pretrained_weights(
    network: nn.Module,
    path: str | os.PathLike[str],
    num_input_channels: int,
    resample_kernels: bool = False,
) -> dict[str, Any]:
    """Copy every parameter and buffer but the heads from the checkpoint at ``path``; with
    ``resample_kernels`` (UpKern) kernels of another spatial size are interpolated to this
    network's.

    Returns:
        What the run started from: ``{"path", "sha256", "layers"}`` (layers copied), and with
        ``resample_kernels`` ``"resized"``: each interpolated layer's name, pretrained shape and
        own shape.

    Raises:
        SegflowError: the file is neither a segflow nor an nnU-Net v2 checkpoint (``.pth``),
            or its network does not fit (every mismatching layer named, with both shapes).
    """
    path = Path(path)
    problems: list[Problem] = []
    if is_nnunet_checkpoint(path):
        weights, channels, problems = _nnunet_weights(path)
    else:
        state = load_checkpoint(path)
        weights = state.get("network")
        channels = state.get("num_input_channels")
    if not isinstance(weights, Mapping):
        raise SegflowError(
            "cannot fine-tune from this file",
            [Problem(str(path), "the checkpoint holds no network weights")],
        )
    own = network.state_dict()
    if channels is not None and int(channels) != num_input_channels:
        problems.append(
            Problem(
                "input channels",
                f"the pretrained network takes {channels}, this dataset has "
                f"{num_input_channels}; fine-tuning needs the same channels",
            )
        )
    heads = head_prefixes(network)
    problems += pretrained_problems(weights, own, heads, resample_kernels)
    if problems:
        problems.append(Problem("hint", _HINT))
        raise SegflowError(
            f"the pretrained weights {path} do not fit this network ({len(problems) - 1} problems)",
            problems,
        )
    copied = {k: v for k, v in weights.items() if not k.startswith(heads)}
    resized = []
    for name, tensor in copied.items():
        if resample_kernels and resizable_kernel(tensor, own[name]):
            copied[name] = resized_kernel(tensor, own[name].shape)
            resized.append([name, list(tensor.shape), list(own[name].shape)])
            logger.info(
                "UpKern: %s interpolated from %s to %s", name, _shape(tensor), _shape(own[name])
            )
    with torch.no_grad():
        for name, tensor in own.items():
            if name in copied:
                tensor.copy_(copied[name])
    logger.info(
        "started from the pretrained weights %s: %d layers copied, %d head tensors fresh",
        path,
        len(copied),
        sum(name.startswith(heads) for name in own),
    )
    started: dict[str, Any] = {
        "path": str(path),
        "sha256": file_sha256(path),
        "layers": len(copied),
    }
    if resample_kernels:
        started["resized"] = resized
    return started
