"""Drawing training patches from preprocessed cases (nnU-Net's data loader, without augmentation).

A batch holds ``batch_size`` patches of cases drawn uniformly with replacement. Its last
``batch_size - round(batch_size * (1 - oversample_foreground_percent))`` patches are *forced*:
each is centred on a stored location of a foreground class (or region) chosen uniformly
among those the case contains, so that rare structures appear in every batch. The others lie
anywhere: their corner is uniform over every position that lets the patch leave the image by
up to half the margin the augmentation needs (rounded up, on both sides, as nnU-Net's
``get_bbox`` computes it). With an ignore label, those unforced patches are centred on an
annotated voxel instead, so that no patch is wholly unlabelled.

Patches are drawn larger than the network's patch when spatial augmentation follows
(:func:`initial_patch_size`): rotating and scaling a patch cut to the final size would bring
padding into its corners. Where a patch leaves the image, the image is padded with 0 and the
segmentation with -1 (the value already marking voxels outside the nonzero region).

A 2D configuration reads 3D cases as stacks of slices: its patch is one slice thick, so the
slice is random, or the slice of the chosen foreground voxel when the patch is forced.

Each patch reads only its own region of the stored arrays; every random choice comes from
one :class:`numpy.random.Generator`, so a sampler is reproducible from its seed.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.preprocessing.preprocessor import ANNOTATED_KEY
from segflow.preprocessing.previous_stage import load_previous_stage
from segflow.preprocessing.storage import PreprocessedCase, open_case

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "INITIAL_PATCH_SCALE_RANGE",
    "OPEN_CASES",
    "OVERSAMPLE_FOREGROUND_PERCENT",
    "PAD_VALUE_DATA",
    "PAD_VALUE_SEG",
    "PatchSampler",
    "augmentation_rotation",
    "forced_foreground",
    "initial_patch_size",
    "patch_corner_range",
    "training_patch_size",
]

logger = logging.getLogger(__name__)

#: The share of each batch forced to hold foreground.
OVERSAMPLE_FOREGROUND_PERCENT = 0.33
#: A 3D patch whose largest extent exceeds its first (slice) extent by more than this factor is
#: augmented slice by slice ("dummy 2D"), as nnU-Net does for anisotropic data.
ANISOTROPY_THRESHOLD = 3.0
#: The scale range nnU-Net's trainer enlarges the initial patch for. Its augmentation scales by
#: 0.7 to 1.4, but the initial patch keeps the narrower range of nnU-Net v1; kept for agreement.
INITIAL_PATCH_SCALE_RANGE = (0.85, 1.25)
#: How many opened cases a sampler keeps (least recently used first out). Opening a case reads
#: its properties and two array headers (about 3 ms for a Hippocampus case, more than reading a
#: 2D patch); an open case holds two file descriptors and its class locations.
OPEN_CASES = 128
#: Padding of the image where a patch leaves it.
PAD_VALUE_DATA = 0.0
#: Padding of the segmentation where a patch leaves the image (treated as background).
PAD_VALUE_SEG = -1

_DEGREE = math.pi / 180.0


def augmentation_rotation(patch_size: Sequence[int]) -> tuple[float, bool]:
    """The rotation range spatial augmentation uses for a patch, as in nnU-Net's trainer.

    2D patches rotate by up to 180 degrees, or 15 when one side exceeds the other by more
    than half. 3D patches rotate by up to 30 degrees, unless they are anisotropic (the largest
    extent more than :data:`ANISOTROPY_THRESHOLD` times the first): those are augmented slice
    by slice ("dummy 2D") and rotate in-plane by up to 180 degrees.

    Args:
        patch_size: the network's patch, 2 or 3 axes.

    Returns:
        ``(max_angle, dummy_2d)``: rotations are drawn from ``[-max_angle, max_angle]``
        (radians); ``dummy_2d`` is True for anisotropic 3D patches.
    """
    patch = [int(p) for p in patch_size]
    if len(patch) == 2:
        elongated = max(patch) / min(patch) > 1.5
        return (15.0 if elongated else 180.0) * _DEGREE, False
    if len(patch) == 3:
        dummy_2d = max(patch) / patch[0] > ANISOTROPY_THRESHOLD
        return (180.0 if dummy_2d else 30.0) * _DEGREE, dummy_2d
    raise ValueError(f"a patch has 2 or 3 axes, not {len(patch)}: {tuple(patch)}")


def _rotated_extents(extents: np.ndarray, first: int, second: int, angle: float) -> np.ndarray:
    """Extents after turning the patch's corner vector by ``angle`` in one plane.

    Only one corner is turned (as nnU-Net does), so axis ``first`` gains the full bounding
    extent ``a cos + b sin`` while axis ``second`` gets ``|b cos - a sin|``, which never
    exceeds its original extent for angles up to 90 degrees.
    """
    turned = extents.copy()
    cos, sin = math.cos(angle), math.sin(angle)
    a, b = extents[first], extents[second]
    turned[first] = abs(a * cos + b * sin)
    turned[second] = abs(b * cos - a * sin)
    return turned


def initial_patch_size(
    patch_size: Sequence[int],
    max_angle: float,
    scale_range: Sequence[float] = INITIAL_PATCH_SCALE_RANGE,
    dummy_2d: bool = False,
) -> tuple[int, ...]:
    """The patch to draw so that rotation and scaling to ``patch_size`` find no padding.

    Follows nnU-Net's ``get_patch_size``: the patch's extent vector is rotated by the largest
    angle (at most 90 degrees) in each plane separately, each axis keeps the largest extent
    seen, the result is divided by the smallest scale and truncated. In 3D the rotation about
    the first axis widens axis 1, about the second axis widens axis 2, about the third axis
    widens axis 0. With ``dummy_2d`` the first (slice) axis keeps its size, since slices are
    augmented one by one.

    Args:
        patch_size: the network's (final) patch, 2 or 3 axes.
        max_angle: the largest rotation, radians (its absolute value is used).
        scale_range: the scaling range; only its smallest value matters.
        dummy_2d: 3D patches augmented slice by slice (see :func:`augmentation_rotation`).

    Returns:
        the initial patch, one int per axis, never smaller than ``patch_size``.
    """
    extents = np.asarray(patch_size, dtype=np.float64)
    angle = min(abs(float(max_angle)), math.pi / 2)
    if extents.size == 3:
        planes = ((1, 2), (2, 0), (0, 1))
    elif extents.size == 2:
        planes = ((0, 1),)
    else:
        raise ValueError(f"a patch has 2 or 3 axes, not {extents.size}: {tuple(patch_size)}")
    if min(scale_range) <= 0:
        raise ValueError(f"scale_range must be positive, got {tuple(scale_range)}")
    largest = extents.copy()
    for first, second in planes:
        largest = np.maximum(largest, _rotated_extents(extents, first, second, angle))
    result = [int(v) for v in largest / min(scale_range)]
    if dummy_2d and len(result) == 3:
        result[0] = int(patch_size[0])
    return tuple(result)


def training_patch_size(patch_size: Sequence[int]) -> tuple[int, ...]:
    """The initial patch nnU-Net's trainer draws for a configuration's patch.

    :func:`augmentation_rotation` and :func:`initial_patch_size` with
    :data:`INITIAL_PATCH_SCALE_RANGE`.
    """
    max_angle, dummy_2d = augmentation_rotation(patch_size)
    return initial_patch_size(patch_size, max_angle, INITIAL_PATCH_SCALE_RANGE, dummy_2d)


def forced_foreground(sample_index: int, batch_size: int, percent: float) -> bool:
    """Whether sample ``sample_index`` of a batch must hold foreground.

    The first ``round(batch_size * (1 - percent))`` samples are free, the rest forced (Python's
    ``round``: halves go to the even number).
    """
    return sample_index >= round(batch_size * (1 - percent))


def patch_corner_range(
    shape: Sequence[int], patch: Sequence[int], margin: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The lowest and highest corner of a patch drawn from an image, both inclusive.

    The patch may leave the image by half of ``margin`` (the initial patch minus the final
    one), rounded up, on either side; an image smaller than the patch counts as padded to it
    first. nnU-Net's ``get_bbox`` computes the low bound as ``-pad // 2``, which Python reads
    as ``(-pad) // 2``: for an odd ``pad`` both ends get the extra voxel, and so do they here.

    Args:
        shape: spatial shape of the image.
        patch: the patch drawn.
        margin: per axis, how far the patch may leave the image in total.

    Returns:
        ``(low, high)`` corners.
    """
    low, high = [], []
    for size, extent, pad in zip(shape, patch, margin, strict=True):
        pad = max(int(pad), int(extent) - int(size))
        low.append(-((pad + 1) // 2))
        high.append(int(size) + pad // 2 + pad % 2 - int(extent))
    return low, high


class PatchSampler:
    """Batches of training patches from preprocessed cases.

    Args:
        folder: the configuration's preprocessed folder.
        case_ids: the training cases; drawn uniformly with replacement.
        patch_size: the patch to draw, 2 or 3 axes (the initial patch when augmentation
            follows, see :func:`training_patch_size`).
        batch_size: patches per batch.
        oversample_foreground_percent: the share of each batch forced to hold foreground.
        rng: the source of every random choice of :meth:`next_batch` called without one; a new
            unseeded one when None.
        final_patch_size: the network's patch; patches may leave the image by half the
            difference on either side. Defaults to ``patch_size`` (no margin).
        probabilistic_oversampling: force each sample with probability
            ``oversample_foreground_percent`` instead of forcing the last ones.
        open_cases: how many opened cases to keep (see :data:`OPEN_CASES`).
        previous_stage: for a cascade stage, the folder of the previous stage's
            segmentations on this configuration's grid
            (:mod:`segflow.preprocessing.previous_stage`); each patch's segmentation then has
            it as a second channel.
        unlabelled: accept cases stored without a segmentation (images to pretrain on
            without labels, such as the test images): their patches' segmentation is 0
            (background) inside the image; with it off such a case is an error.

    Raises:
        ValueError: on an empty case list or inconsistent sizes.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        oversample_foreground_percent: float = OVERSAMPLE_FOREGROUND_PERCENT,
        rng: np.random.Generator | None = None,
        final_patch_size: Sequence[int] | None = None,
        probabilistic_oversampling: bool = False,
        open_cases: int = OPEN_CASES,
        previous_stage: str | os.PathLike[str] | None = None,
        unlabelled: bool = False,
    ) -> None:
        if not case_ids:
            raise ValueError("PatchSampler needs at least one case")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= oversample_foreground_percent <= 1.0:
            raise ValueError(
                f"oversample_foreground_percent must lie in [0, 1], got "
                f"{oversample_foreground_percent}"
            )
        patch = tuple(int(p) for p in patch_size)
        final = patch if final_patch_size is None else tuple(int(p) for p in final_patch_size)
        if len(patch) not in (2, 3) or len(final) != len(patch):
            raise ValueError(
                f"patch_size and final_patch_size need the same 2 or 3 axes, got {patch} "
                f"and {final}"
            )
        if any(f < 1 or f > p for f, p in zip(final, patch, strict=True)):
            raise ValueError(f"final_patch_size {final} must lie within patch_size {patch}")
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self.batch_size = int(batch_size)
        self.oversample_foreground_percent = float(oversample_foreground_percent)
        self.probabilistic_oversampling = probabilistic_oversampling
        self.rng = rng if rng is not None else np.random.default_rng()
        self.open_cases = max(1, int(open_cases))
        self._open_cases: OrderedDict[str, PreprocessedCase] = OrderedDict()
        self.previous_stage = None if previous_stage is None else Path(previous_stage)
        self.unlabelled = unlabelled
        self._previous: dict[str, np.ndarray] = {}
        self.patch_size = patch
        self.final_patch_size = final
        # 2D patches are one slice thick patches of the 3D cases.
        self._patch3d = patch if len(patch) == 3 else (1, *patch)
        self._margin = [p - f for p, f in zip(patch, final, strict=True)]
        if len(patch) == 2:
            self._margin = [0, *self._margin]

    def _is_forced(self, sample_index: int, rng: np.random.Generator) -> bool:
        if self.probabilistic_oversampling:
            return bool(rng.random() < self.oversample_foreground_percent)
        return forced_foreground(sample_index, self.batch_size, self.oversample_foreground_percent)

    @staticmethod
    def _centre_class(counts: dict[str, int], forced: bool, rng: np.random.Generator) -> str | None:
        """The class (or region) whose location centres the patch; None for a free patch."""
        has_ignore = ANNOTATED_KEY in counts
        if not forced:
            if not has_ignore:
                return None
            if counts[ANNOTATED_KEY] == 0:
                logger.warning("a case has no annotated voxels; drawing its patch anywhere")
                return None
            return ANNOTATED_KEY
        present = [key for key, n in counts.items() if n > 0]
        # Annotated voxels include background: they serve only when no class is present.
        if ANNOTATED_KEY in present and len(present) > 1:
            present.remove(ANNOTATED_KEY)
        if not present:
            return None
        return present[int(rng.integers(len(present)))]

    def patch_box(
        self, case: PreprocessedCase, forced: bool, rng: np.random.Generator | None = None
    ) -> list[int]:
        """The low corner ``(z, y, x)`` of a patch of ``case``; may lie outside the image."""
        rng = self.rng if rng is None else rng
        shape = case.shape
        low, high = patch_corner_range(shape, self._patch3d, self._margin)
        # Flat indices as stored; only the chosen voxel is turned into coordinates.
        locations = case.properties.get("class_locations") or {}
        key = self._centre_class({k: len(v) for k, v in locations.items()}, forced, rng)
        if key is None:
            return [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True)]
        where = locations[key]
        voxel = np.unravel_index(int(where[int(rng.integers(len(where)))]), shape)
        # Centred on the voxel, only kept from reaching below the lowest corner (nnU-Net does
        # not bound it above: the voxel stays inside the patch either way).
        return [
            max(lo, int(v) - extent // 2)
            for lo, v, extent in zip(low, voxel, self._patch3d, strict=True)
        ]

    def _inside(
        self, corner: Sequence[int], shape: Sequence[int]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
        """The patch's part inside an image of ``shape``: ``(source, target)`` slices of the
        image's and the patch's arrays (channels first), or None when none of it is."""
        source, target = [slice(None)], [slice(None)]
        for start, extent, size in zip(corner, self._patch3d, shape, strict=True):
            lo, hi = max(start, 0), min(start + extent, int(size))
            if hi <= lo:
                return None
            source.append(slice(lo, hi))
            target.append(slice(lo - start, hi - start))
        return tuple(source), tuple(target)

    def _read_into(self, array: object, corner: Sequence[int], out: np.ndarray) -> None:
        """Copy the part of ``array[:, box]`` inside the image into ``out`` (already padded)."""
        inside = self._inside(corner, array.shape[1:])  # type: ignore[attr-defined]
        if inside is not None:
            out[inside[1]] = array[inside[0]]  # type: ignore[index]

    def _open(self, case_id: str) -> PreprocessedCase:
        case = self._open_cases.get(case_id)
        if case is not None:
            self._open_cases.move_to_end(case_id)
            return case
        case = open_case(self.folder, case_id)
        if case.seg is None and not self.unlabelled:
            raise SegflowError(
                f"preprocessed case '{case_id}' has no segmentation",
                [Problem(str(self.folder), "training needs labelled cases")],
            )
        # Arrays take a sixth of the memory of lists of Python ints.
        locations = case.properties.get("class_locations") or {}
        case.properties["class_locations"] = {
            key: np.asarray(flat, dtype=np.int64) for key, flat in locations.items()
        }
        if self.previous_stage is not None:
            self._previous[case_id] = load_previous_stage(self.previous_stage, case_id, case.shape)[
                None
            ]
        self._open_cases[case_id] = case
        if len(self._open_cases) > self.open_cases:
            closed, _ = self._open_cases.popitem(last=False)
            self._previous.pop(closed, None)
        return case

    def next_batch(
        self, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Draw one batch.

        Args:
            rng: the source of this batch's random choices (cases, forced classes, voxels,
                corners); the sampler's own generator when None. The batch is a function of
                the generator's state and the stored cases only.

        Returns:
            ``(data, seg, case_ids)``: data float32 ``(b, c, *patch_size)``, seg int16
            ``(b, 1, *patch_size)`` (-1 where the patch leaves the image or the nonzero
            region; ``(b, 2, ...)`` with the previous stage's segmentation second for a
            cascade stage), and the case of each patch.
        """
        rng = self.rng if rng is None else rng
        chosen = [
            self.case_ids[int(i)] for i in rng.integers(len(self.case_ids), size=self.batch_size)
        ]
        data: np.ndarray | None = None
        seg_channels = 1 if self.previous_stage is None else 2
        seg = np.full(
            (self.batch_size, seg_channels, *self._patch3d), PAD_VALUE_SEG, dtype=np.int16
        )
        for index, case_id in enumerate(chosen):
            case = self._open(case_id)
            if data is None:
                channels = int(case.data.shape[0])
                data = np.full(
                    (self.batch_size, channels, *self._patch3d), PAD_VALUE_DATA, dtype=np.float32
                )
            elif case.data.shape[0] != data.shape[1]:
                raise SegflowError(
                    "preprocessed cases differ in their number of channels",
                    [Problem(case_id, f"{case.data.shape[0]} channels, expected {data.shape[1]}")],
                )
            corner = self.patch_box(case, self._is_forced(index, rng), rng)
            self._read_into(case.data, corner, data[index])
            if case.seg is not None:
                self._read_into(case.seg, corner, seg[index, :1])
            elif (inside := self._inside(corner, case.shape)) is not None:
                seg[index, :1][inside[1]] = 0  # unlabelled: background inside the image
            if self.previous_stage is not None:
                self._read_into(self._previous[case_id], corner, seg[index, 1:])
        assert data is not None  # batch_size >= 1
        if len(self.patch_size) == 2:
            data, seg = data[:, :, 0], seg[:, :, 0]
        return data, seg, chosen
