"""Intensity normalization schemes, one per channel, named as in ``plans.json``.

The plans name a scheme per channel (see :mod:`segflow.planning.normalization` for how it is
chosen from the channel name). Each scheme turns one channel into float32:

- ``CTNormalization``: clip to the 0.5 and 99.5 percentiles of the dataset's foreground
  intensities, then subtract their mean and divide by their standard deviation (all from
  the fingerprint), so that Hounsfield units map alike in every case.
- ``ZScoreNormalization``: subtract the image's own mean, divide by its standard deviation;
  with ``use_mask_for_norm`` both come from inside the nonzero mask only and only those
  voxels change (the outside stays at its value, zero).
- ``NoNormalization``: the values as they are, as float32.
- ``RescaleTo01Normalization``: the image's own minimum to 0 and maximum to 1.
- ``RGBTo01Normalization``: 8-bit colour values divided by 255.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from segflow.errors import SegflowError
from segflow.planning.normalization import (
    CT,
    NO_NORMALIZATION,
    RESCALE_TO_0_1,
    RGB_TO_0_1,
    ZSCORE,
)

__all__ = [
    "NORMALIZERS",
    "ct_normalization",
    "no_normalization",
    "normalize_channel",
    "rescale_to_0_1",
    "rgb_to_0_1",
    "zscore_normalization",
]

logger = logging.getLogger(__name__)

# Guards the divisions against constant images.
_EPS = 1e-8


def ct_normalization(
    image: np.ndarray,
    mask: np.ndarray | None,
    intensity_properties: Mapping[str, float],
) -> np.ndarray:
    """Clip to the dataset's foreground percentiles, then standardize with its statistics.

    Args:
        image: one channel, any shape; float32 is normalized in place.
        mask: unused (CT values mean the same everywhere).
        intensity_properties: the channel's ``percentile_00_5``, ``percentile_99_5``,
            ``mean`` and ``std`` from ``foreground_intensity_properties_per_channel``.
    """
    image = image.astype(np.float32, copy=False)
    np.clip(
        image,
        intensity_properties["percentile_00_5"],
        intensity_properties["percentile_99_5"],
        out=image,
    )
    image -= intensity_properties["mean"]
    image /= max(float(intensity_properties["std"]), _EPS)
    return image


def zscore_normalization(
    image: np.ndarray,
    mask: np.ndarray | None,
    intensity_properties: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Standardize with the image's own mean and standard deviation.

    Args:
        image: one channel; float32 is normalized in place.
        mask: when given, statistics come from (and only) the voxels where it is True.
        intensity_properties: unused.
    """
    image = image.astype(np.float32, copy=False)
    if mask is None:
        mean, std = _mean_std(image)
        image -= mean
        image /= max(std, _EPS)
        return image
    inside = image[mask]
    if inside.size == 0:
        logger.warning("z-score normalization: the mask is empty; image left unchanged")
        return image
    mean, std = _mean_std(inside)
    image[mask] = (inside - mean) / max(std, _EPS)
    return image


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    # float64 accumulation: float32 sums drift on large volumes.
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    return mean, std


def no_normalization(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    intensity_properties: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The values unchanged, as float32."""
    return image.astype(np.float32, copy=False)


def rescale_to_0_1(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    intensity_properties: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Map the image's minimum to 0 and its maximum to 1."""
    image = image.astype(np.float32, copy=False)
    image -= image.min()
    image /= max(float(image.max()), _EPS)
    return image


def rgb_to_0_1(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    intensity_properties: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Divide 8-bit colour values by 255.

    Raises:
        SegflowError: values outside 0..255 (the channel is not 8-bit colour).
    """
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise SegflowError(
            f"RGBTo01Normalization expects 8-bit colour values in 0..255, found {low:g}..{high:g}; "
            "name the channel differently in dataset.json to get z-scoring"
        )
    image = image.astype(np.float32, copy=False)
    image /= 255.0
    return image


Normalizer = Callable[[np.ndarray, "np.ndarray | None", "Mapping[str, float] | None"], np.ndarray]

#: Scheme name (as in plans.json) -> normalizing function.
NORMALIZERS: dict[str, Normalizer] = {
    CT: ct_normalization,
    ZSCORE: zscore_normalization,
    NO_NORMALIZATION: no_normalization,
    RESCALE_TO_0_1: rescale_to_0_1,
    RGB_TO_0_1: rgb_to_0_1,
}

# Schemes whose statistics depend on the mask; the others are the same transform everywhere.
_USES_MASK = frozenset({ZSCORE})


def normalize_channel(
    image: np.ndarray,
    scheme: str,
    mask: np.ndarray | None = None,
    use_mask_for_norm: bool = False,
    intensity_properties: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Normalize one channel by the scheme the plans name for it.

    Args:
        image: the channel; a float32 array is overwritten.
        scheme: a name from :data:`NORMALIZERS`.
        mask: True inside the region to normalize (the nonzero region of the case).
        use_mask_for_norm: the plans' flag for this channel.
        intensity_properties: the channel's foreground statistics (needed by CT).

    Returns:
        the normalized float32 channel.

    Raises:
        SegflowError: the scheme is unknown, CT statistics are missing, or the values do not
            fit the scheme.
    """
    normalizer = NORMALIZERS.get(scheme)
    if normalizer is None:
        raise SegflowError(
            f"unknown normalization scheme '{scheme}'; valid: {', '.join(NORMALIZERS)}"
        )
    if scheme == CT:
        missing = [
            key
            for key in ("mean", "std", "percentile_00_5", "percentile_99_5")
            if intensity_properties is None or key not in intensity_properties
        ]
        if missing:
            raise SegflowError(
                f"CTNormalization needs the foreground intensity statistics {', '.join(missing)} "
                "from the plans"
            )
    use_mask = use_mask_for_norm and scheme in _USES_MASK and mask is not None
    return normalizer(image, mask if use_mask else None, intensity_properties)
