"""Which intensity normalization each channel gets, chosen from its name in dataset.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CT",
    "MASK_FOR_NORM_MAX_RELATIVE_SIZE",
    "NO_NORMALIZATION",
    "RESCALE_TO_0_1",
    "RGB_TO_0_1",
    "SCHEMES",
    "ZSCORE",
    "normalization_scheme",
    "normalization_schemes",
    "use_mask_for_norm",
]

# Scheme names are nnU-Net v2's class names so that plans read the same to its users.
CT = "CTNormalization"
NO_NORMALIZATION = "NoNormalization"
ZSCORE = "ZScoreNormalization"
RESCALE_TO_0_1 = "RescaleTo01Normalization"
RGB_TO_0_1 = "RGBTo01Normalization"
SCHEMES = (CT, NO_NORMALIZATION, ZSCORE, RESCALE_TO_0_1, RGB_TO_0_1)

# Channel names (case-insensitive) that select a scheme; any other name gets z-scoring.
_BY_CHANNEL_NAME = {
    "ct": CT,
    "nonorm": NO_NORMALIZATION,
    "zscore": ZSCORE,
    "rescale_to_0_1": RESCALE_TO_0_1,
    "rgb_to_0_1": RGB_TO_0_1,
}

# Normalizing within the nonzero mask only pays off when cropping to the nonzero region
# removed a lot (the median case kept less than 3/4 of its voxels, e.g. skull-stripped brain
# MRI): the background then is not tissue and should not shift the statistics.
MASK_FOR_NORM_MAX_RELATIVE_SIZE = 3 / 4
# Only z-scoring keeps the outside of the mask at exactly zero when normalizing inside it;
# the other schemes are global transforms and never use the mask.
_MASKABLE = frozenset({ZSCORE})


def normalization_scheme(channel_name: str) -> str:
    """The scheme for a channel called ``channel_name`` ("CT", "MRI", "noNorm", ...)."""
    return _BY_CHANNEL_NAME.get(channel_name.casefold(), ZSCORE)


def normalization_schemes(channel_names: Mapping[int, str]) -> list[str]:
    """One scheme per channel, in channel order."""
    return [normalization_scheme(channel_names[i]) for i in sorted(channel_names)]


def use_mask_for_norm(
    schemes: Sequence[str], median_relative_size_after_cropping: float
) -> list[bool]:
    """Per channel: normalize only inside the nonzero mask?"""
    if median_relative_size_after_cropping < MASK_FOR_NORM_MAX_RELATIVE_SIZE:
        return [scheme in _MASKABLE for scheme in schemes]
    return [False] * len(schemes)
