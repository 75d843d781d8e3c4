"""A fingerprint from the images' geometry alone: what the planner's network decisions need.

Spacing and nonzero bounding box of every case, with neutral intensity statistics: enough for
the planner's target spacing, patch size, network topology and batch size, without sampling
intensities (the comparisons with nnU-Net's planner and the planning tests on real data use
it). Not a substitute for :func:`~segflow.fingerprint.gather_fingerprint` in a run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.io.image import read_image

__all__ = ["geometry_fingerprint"]

_ENDING = ".nii.gz"


def geometry_fingerprint(
    folder: str | os.PathLike[str], case_ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """The geometry fingerprint of a raw dataset ``folder`` (``imagesTr/<case>_0000.nii.gz``
    beside ``labelsTr/<case>.nii.gz``): of ``case_ids``, or of every labelled case."""
    folder = Path(folder)
    if case_ids is None:
        labels = sorted((folder / "labelsTr").glob(f"*{_ENDING}"))
        case_ids = [label.name[: -len(_ENDING)] for label in labels]
    spacings, shapes = [], []
    for case in case_ids:
        image = read_image(folder / "imagesTr" / f"{case}_0000{_ENDING}")
        nonzero = np.argwhere(np.any(image.array != 0, axis=0))
        spacings.append([float(s) for s in image.spacing])
        shapes.append((nonzero.max(0) - nonzero.min(0) + 1).tolist())
    stats = dict.fromkeys(
        ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5"), 1.0
    )
    return {
        "dataset_name": folder.name,
        "spacings": spacings,
        "shapes_after_crop": shapes,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": stats},
    }
