"""Sliding-window prediction: a network trained on patches applied to a whole image.

The image is covered by windows of the configuration's patch size that overlap by half a
patch (``step_size`` 0.5). Every window's prediction is weighted by a Gaussian importance map
centred on the window (sigma 1/8 of the patch per axis), because a convolutional network
sees the least context, and errs the most, near a window's border; the weighted sum is
divided by the summed weights, so every voxel gets a weighted mean of the windows covering
it. With test-time mirroring every window is also predicted flipped along each combination
of the mirror axes and the flips are averaged (2^n predictions for n axes).

Images smaller than the patch along some axis are padded with zeros to the patch, the
content centred, and the padding removed from the result. A 2D patch on a 3D image
``(C, z, y, x)`` predicts slice by slice, each slice through the same 2D windows.

Windows are predicted in batches of ``batch_windows``. On a GPU the summed predictions stay
on the device when they fit; when the device runs out of memory they are kept in host memory
instead (``accumulate_on="auto"``). The network runs on the backend the options name
(:mod:`segflow.inference.backends`: PyTorch, OpenVINO or ONNX Runtime); with PyTorch, mixed
precision (autocast) is used on CUDA always (float16), on the CPU only with precision
``bfloat16`` on a CPU with native bf16, and never on MPS, which does not support it well. The
predictions are summed in float32 either way. All of a prediction's options come in one
:class:`~segflow.inference.options.PredictionOptions`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from segflow.inference.backends import prepare_runtime
from segflow.inference.options import PredictionOptions
from segflow.networks import memory_format_for

__all__ = [
    "GAUSSIAN_SIGMA_SCALE",
    "gaussian_importance_map",
    "mirror_combinations",
    "padding_for_patch",
    "predict_logits",
    "window_starts",
]

logger = logging.getLogger(__name__)

#: Sigma of the importance map as a fraction of the patch size, per axis.
GAUSSIAN_SIGMA_SCALE = 1.0 / 8

DeviceLike = torch.device | str


@functools.lru_cache(maxsize=8)
def _gaussian_array(patch_size: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    # A Gaussian filter is separable, so filtering a unit impulse at the patch centre equals
    # the outer product of the filtered 1D impulses. scipy truncates the kernel at 4 sigma,
    # as nnU-Net's importance map (a filtered impulse) is truncated.
    result = np.ones((), dtype=np.float64)
    for size in patch_size:
        impulse = np.zeros(size, dtype=np.float64)
        impulse[size // 2] = 1.0
        profile = ndimage.gaussian_filter1d(impulse, size * sigma_scale, mode="constant", cval=0)
        result = np.multiply.outer(result, profile)
    result /= result.max()
    result.setflags(write=False)
    return result


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_scale: float = GAUSSIAN_SIGMA_SCALE,
    *,
    dtype: torch.dtype = torch.float32,
    device: DeviceLike = "cpu",
) -> torch.Tensor:
    """The weight of each voxel of a window's prediction.

    A Gaussian centred on voxel ``patch // 2`` with sigma ``sigma_scale * patch`` per axis,
    sampled at voxel centres and truncated at 4 sigma, scaled to a maximum of 1. Voxels the
    truncation set to zero get the smallest nonzero weight instead, so that no voxel of an
    image ends up with a total weight of zero.

    Args:
        patch_size: the window's shape.
        sigma_scale: sigma as a fraction of the patch size.
        dtype: the tensor's dtype (zeros are replaced after the cast).
        device: where the tensor is made.

    Returns:
        a tensor of shape ``patch_size``.
    """
    patch = tuple(int(p) for p in patch_size)
    if not patch or min(patch) < 1:
        raise ValueError(f"patch size must be positive, got {tuple(patch_size)}")
    weights = torch.from_numpy(_gaussian_array(patch, float(sigma_scale)).copy())
    weights = weights.to(device=device, dtype=dtype)
    zero = weights == 0
    if zero.any():
        weights[zero] = weights[~zero].min()
    return weights


def window_starts(
    image_size: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5
) -> list[list[int]]:
    """Start positions of the windows along each axis.

    Along an axis of ``n`` voxels and a patch of ``p``, ``ceil((n - p) / (p * step_size)) + 1``
    windows are spread evenly: the first starts at 0, the last ends at the border, and the
    starts in between are rounded (halves to even) from equal spacing of at most
    ``p * step_size``, so neighbours overlap by about ``p * (1 - step_size)`` voxels or more
    (rounding may take one off). The same positions as nnU-Net v2's.

    Args:
        image_size: the (padded) image's spatial shape; no axis shorter than the patch.
        patch_size: the window's shape.
        step_size: the largest distance between window starts, as a fraction of the patch,
            in ``(0, 1]``.

    Raises:
        ValueError: mismatching axes, an axis shorter than the patch, or a bad step size.
    """
    if len(image_size) != len(patch_size):
        raise ValueError(
            f"image size {tuple(image_size)} and patch size {tuple(patch_size)} differ"
        )
    if not 0 < step_size <= 1:
        raise ValueError(f"step size must be in (0, 1], got {step_size}")
    starts = []
    for size, patch in zip(image_size, patch_size, strict=True):
        if size < patch:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the patch {patch}")
        count = math.ceil((size - patch) / (patch * step_size)) + 1
        spacing = (size - patch) / (count - 1) if count > 1 else 0.0
        starts.append([round(spacing * i) for i in range(count)])
    return starts


def padding_for_patch(
    image_size: Sequence[int], patch_size: Sequence[int]
) -> list[tuple[int, int]]:
    """Zeros to add ``(before, after)`` per axis so that the image holds at least one patch.

    The content stays centred; an odd amount puts the extra voxel after it.
    """
    pads = []
    for size, patch in zip(image_size, patch_size, strict=True):
        missing = max(0, int(patch) - int(size))
        pads.append((missing // 2, missing - missing // 2))
    return pads


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (the empty one first): the flips test-time mirroring
    averages over."""
    axes = tuple(mirror_axes or ())
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@dataclass(frozen=True)
class _Window:
    """One window: where it reads the image and where its prediction goes (both include the
    channel axis, and the slice index when predicting slice by slice)."""

    where: tuple[int | slice, ...]


def _window_grid(
    plane: Sequence[int], patch: Sequence[int], step_size: float
) -> list[tuple[slice, ...]]:
    """The boxes of all windows over an image (or one slice) of shape ``plane``."""
    return [
        tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True))
        for starts in itertools.product(*window_starts(plane, patch, step_size))
    ]


def _windows(
    spatial: Sequence[int], grid: list[tuple[slice, ...]], per_slice: bool
) -> list[_Window]:
    """Every window of a padded image, slice by slice (outermost) when ``per_slice``."""
    slices: list[tuple[int, ...]] = [(i,) for i in range(spatial[0])] if per_slice else [()]
    return [_Window((slice(None), *lead, *box)) for lead in slices for box in grid]


def _flips_per_call(network: nn.Module, batch: torch.Tensor, flips: int) -> int:
    """How many flips of a batch one network call predicts.

    An ONNX runtime takes up to its ``flips_per_call`` at once (it gains from the larger
    batch). With PyTorch on the CPU a batch of one window runs its flips two at a time: at
    batch size one PyTorch computes the convolutions of small inputs with its slower
    reference kernels instead of oneDNN's. The result is the same up to float rounding.
    """
    if hasattr(network, "flips_per_call"):
        return max(1, min(flips, int(network.flips_per_call)))
    return 2 if batch.shape[0] == 1 and batch.device.type == "cpu" and flips > 1 else 1


def _predict_mirrored(
    network: nn.Module, batch: torch.Tensor, combinations: list[tuple[int, ...]]
) -> torch.Tensor:
    """The network's prediction averaged over the flips (float32)."""
    n = batch.shape[0]
    per_call = _flips_per_call(network, batch, len(combinations))
    total = None
    for first in range(0, len(combinations), per_call):
        group = combinations[first : first + per_call]
        flipped = [torch.flip(batch, [a + 2 for a in axes]) if axes else batch for axes in group]
        out = network(flipped[0] if len(flipped) == 1 else torch.cat(flipped))
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the network returned {type(out).__name__}, expected one tensor; "
                "turn deep supervision off for inference"
            )
        for i, axes in enumerate(group):
            part = out[i * n : (i + 1) * n]
            part = (torch.flip(part, [a + 2 for a in axes]) if axes else part).float()
            # The first output may be the input itself (or share its memory): sum into a copy.
            total = part.clone() if total is None else total.add_(part)
    return total.div_(len(combinations))


def _accumulation_devices(accumulate_on: DeviceLike, device: torch.device) -> list[torch.device]:
    """Where to sum the predictions, in the order to try."""
    if accumulate_on != "auto":
        return [torch.device(accumulate_on)]
    if device.type == "cpu":
        return [device]
    return [device, torch.device("cpu")]


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    # MPS reports a full device as a plain RuntimeError.
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _autocast(
    device: torch.device, backend: str, precision: str
) -> contextlib.AbstractContextManager:
    """For PyTorch: float16 autocast on CUDA, bfloat16 on the CPU in precision bfloat16, none
    otherwise; other backends set their precision when they compile the network."""
    if backend != "torch":
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda")
    if device.type == "cpu" and precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sum_windows(
    network: nn.Module,
    data: torch.Tensor,
    patch: tuple[int, ...],
    combinations: list[tuple[int, ...]],
    step_size: float,
    batch_windows: int,
    device: torch.device,
    accumulate: torch.device,
    memory_format: torch.memory_format,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """Weighted mean of the windows' predictions over the padded image, on ``accumulate``."""
    data = data.to(accumulate)
    gaussian = gaussian_importance_map(patch, device=accumulate)
    spatial = tuple(data.shape[1:])
    per_slice = len(patch) == len(spatial) - 1
    plane = spatial[1:] if per_slice else spatial
    grid = _window_grid(plane, patch, step_size)
    windows = _windows(spatial, grid, per_slice)
    # The weights depend only on the window grid: slice-by-slice prediction shares one grid
    # (and one weight map, broadcast over the slices) between all slices.
    weights = torch.zeros(plane, device=accumulate)
    for box in grid:
        weights[box] += gaussian
    logits = None
    with autocast:
        for first in range(0, len(windows), batch_windows):
            chunk = windows[first : first + batch_windows]
            batch = torch.stack([data[w.where] for w in chunk]).to(device, non_blocking=True)
            batch = batch.contiguous(memory_format=memory_format)
            predicted = _predict_mirrored(network, batch, combinations).to(accumulate)
            if predicted.shape[2:] != patch:
                raise ValueError(
                    f"the network turned a {patch} window into {tuple(predicted.shape[2:])}; "
                    "it must keep the spatial shape"
                )
            if logits is None:
                logits = torch.zeros((predicted.shape[1], *spatial), device=accumulate)
            predicted *= gaussian
            for window, prediction in zip(chunk, predicted, strict=True):
                logits[window.where] += prediction
    logits /= weights
    return logits


@torch.no_grad()
def predict_logits(
    network: nn.Module,
    data: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    options: PredictionOptions,
) -> torch.Tensor:
    """Predict a whole preprocessed image window by window.

    Args:
        network: returns one tensor ``(B, C_out, *patch)`` for a batch ``(B, C, *patch)``
            (deep supervision off). It is moved to ``device`` and put in eval mode for the
            call (its previous mode is restored).
        data: the image ``(C, *spatial)``: ``spatial`` has as many axes as the patch, or
            one more for a 2D patch on a 3D image (predicted slice by slice along the first
            spatial axis).
        patch_size: the configuration's patch size.
        options: mirror axes (spatial axes of the patch, e.g. ``(0, 1, 2)``), step size,
            windows per network call, device (None: where the network's parameters are),
            where the sum lives, backend and precision. With PyTorch the network and its
            windows take the memory format :func:`~segflow.networks.memory_format_for` gives
            (channels-last for a 3D network on the CPU); the network keeps it after the call.
            Another backend converts the network once per process
            (:func:`~segflow.inference.backends.prepare_runtime`).

    Returns:
        float32 logits ``(C_out, *spatial)`` on the CPU, averaged over windows and flips; an
        ordinary tensor (computed under ``no_grad``, not inference mode), so callers may
        change it in place.

    Raises:
        ValueError: the data, patch, mirror axes, step size or batch size do not fit.
    """
    patch = tuple(int(p) for p in patch_size)
    step_size, batch_windows = options.step_size, options.batch_windows
    device, accumulate_on = options.device, options.accumulate_on
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    spatial = tuple(data.shape[1:])
    if len(spatial) not in (len(patch), len(patch) + 1):
        raise ValueError(
            f"data of shape {tuple(data.shape)} (channels first) does not fit a patch of "
            f"{len(patch)} axes; expected {len(patch)} spatial axes, or {len(patch) + 1} to "
            "predict slice by slice"
        )
    axes = tuple(int(a) for a in (options.mirror_axes or ()))
    if any(not 0 <= a < len(patch) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"mirror axes {axes} must be distinct axes of the {len(patch)}D patch")
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be at least 1, got {batch_windows}")
    if device is None:
        device = next((p.device for p in network.parameters()), torch.device("cpu"))
    device = torch.device(device)

    # Pad the patch axes (the last ones) up to the patch; remember how to cut it away.
    pads = padding_for_patch(spatial[len(spatial) - len(patch) :], patch)
    pads = [(0, 0)] * (len(spatial) - len(patch)) + pads
    flat = [n for before_after in reversed(pads) for n in before_after]
    data = data.float()
    if any(flat):
        data = torch.nn.functional.pad(data, flat, mode="constant", value=0.0)
    padded = data.shape[1:]
    crop = (
        slice(None),
        *(slice(lo, size - hi) for (lo, hi), size in zip(pads, padded, strict=True)),
    )

    combinations = mirror_combinations(axes)
    was_training = network.training
    memory_format = memory_format_for(len(patch), device)
    network.to(device, memory_format=memory_format)
    network.eval()
    runtime = prepare_runtime(
        network, backend=options.backend, precision=options.precision, device=device,
        channels=int(data.shape[0]), patch=patch, threads=options.threads,
    )  # fmt: skip
    try:
        candidates = _accumulation_devices(accumulate_on, device)
        for attempt, accumulate in enumerate(candidates):
            try:
                logits = _sum_windows(
                    runtime.module,
                    data,
                    patch,
                    combinations,
                    step_size,
                    batch_windows,
                    device,
                    accumulate,
                    memory_format,
                    _autocast(device, runtime.backend, runtime.precision),
                )
                break
            except Exception as err:
                if attempt + 1 == len(candidates) or not _is_out_of_memory(err):
                    raise
                logger.warning(
                    "out of memory summing predictions on %s; summing them in host memory",
                    accumulate,
                )
                del err
                _empty_cache(accumulate)
    finally:
        network.train(was_training)
    return logits[crop].to("cpu", torch.float32).contiguous()
