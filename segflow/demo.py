"""The built-in demo dataset: small synthetic 3D MRI-like volumes with two classes.

It needs no data on the machine and is easy enough that a tiny training budget segments it
well, yet it has what makes real data hard for a planner and a preprocessor: anisotropic
voxels whose spacing varies a little from case to case, varying image sizes, air (exact zeros)
around the body so that cropping to the nonzero region matters, noise, and a smooth
multiplicative bias field so that per-image normalization matters.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from segflow.io.atomic import atomic_path, write_json
from segflow.io.image import write_image

__all__ = ["DEMO_LABELS", "make_demo_dataset", "synthesize_case"]

logger = logging.getLogger(__name__)

DEMO_LABELS = {"background": 0, "organ": 1, "lesion": 2}


def _ellipsoid(grid: tuple[np.ndarray, ...], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def synthesize_case(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (24, 64, 64),
    spacing: tuple[float, float, float] = (3.2, 1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic case.

    A body (ellipse cylinder, ~100) sits in air (exactly 0). Inside it an organ (ellipsoid,
    ~200, label 1) holds a lesion (small ellipsoid, ~320, label 2). Objects are sized in mm,
    so they look alike whatever the spacing. Noise and a bias field apply inside the body only.

    Args:
        rng: the random generator (seeded by the caller).
        shape: voxels along (z, y, x).
        spacing: mm along (z, y, x).

    Returns:
        ``(image float32 (z,y,x), label uint8 (z,y,x))``.
    """
    spacing_arr = np.asarray(spacing, dtype=float)
    extent = np.asarray(shape) * spacing_arr
    grid = tuple((np.arange(n) + 0.5) * s for n, s in zip(shape, spacing_arr, strict=True))
    grid = np.meshgrid(*grid, indexing="ij")
    center = extent / 2 + rng.uniform(-0.05, 0.05, 3) * extent

    body_radii = np.array([1e9, 0.42 * extent[1], 0.40 * extent[2]])
    body = _ellipsoid(grid, center, body_radii)

    organ_radii = rng.uniform(0.75, 0.9, 3) * np.array(
        [0.4 * extent[0], 0.28 * extent[1], 0.26 * extent[2]]
    )
    organ_center = center + rng.uniform(-0.04, 0.04, 3) * extent
    organ = _ellipsoid(grid, organ_center, organ_radii) & body

    lesion_radii = organ_radii * rng.uniform(0.6, 0.75, 3)
    lesion_radii[0] = max(lesion_radii[0], 1.6 * spacing_arr[0])  # at least ~3 slices thick
    offset = rng.uniform(-0.3, 0.3, 3) * (organ_radii - lesion_radii)
    lesion = _ellipsoid(grid, organ_center + offset, lesion_radii) & organ

    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = 1
    label[lesion] = 2

    image = np.zeros(shape, dtype=np.float32)
    image[body] = 100.0
    image[organ] = 200.0
    image[lesion] = 320.0
    # A smooth multiplicative bias field across the body, as from a receive coil.
    coeffs = rng.uniform(-0.25, 0.25, 3)
    bias = 1.0 + sum(c * (g / e - 0.5) for c, g, e in zip(coeffs, grid, extent, strict=True))
    noise = rng.normal(0.0, 18.0, shape)
    image = np.where(body, image * bias + noise, 0.0).astype(np.float32)
    # Noise must not create exact zeros inside the body, or the nonzero crop would see holes.
    image[body & (image == 0)] = 1e-3
    return image, label


def _case_geometry(
    rng: np.random.Generator,
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    in_plane = float(rng.uniform(0.9, 1.1))
    spacing = (float(rng.uniform(3.0, 3.6)), in_plane, in_plane)
    shape = (int(rng.integers(20, 27)), int(rng.integers(56, 73)), int(rng.integers(56, 73)))
    return shape, spacing


def make_demo_dataset(
    out_dir: str | Path, num_training: int = 20, num_test: int = 4, seed: int = 0
) -> Path:
    """Write the demo dataset in nnU-Net v2 raw layout and return its folder.

    ``dataset.json`` is written last, so a dataset folder with a ``dataset.json`` is complete.
    The image folders are replaced, never merged with an earlier run's files.

    Args:
        out_dir: the dataset folder (created).
        num_training: cases in imagesTr/labelsTr.
        num_test: cases in imagesTs/labelsTs.
        seed: makes the dataset reproducible, byte for byte in its arrays.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dataset.json").unlink(missing_ok=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir()

    rng = np.random.default_rng(seed)
    splits = [("Tr", i) for i in range(num_training)] + [("Ts", i) for i in range(num_test)]
    for part, index in splits:
        case_id = f"demo_{index:03d}" if part == "Tr" else f"demo_test_{index:03d}"
        shape, spacing = _case_geometry(rng)
        image, label = synthesize_case(rng, shape, spacing)
        origin = tuple(float(o) for o in rng.uniform(-50, 50, 3))
        for folder, name, array in (
            (f"images{part}", f"{case_id}_0000.nii.gz", image),
            (f"labels{part}", f"{case_id}.nii.gz", label),
        ):
            with atomic_path(out_dir / folder / name) as tmp:
                write_image(tmp, array, spacing, origin=origin)
    write_json(
        out_dir / "dataset.json",
        {
            "name": "SegflowDemo",
            "description": "Synthetic MRI-like volumes: an organ (1) holding a lesion (2)",
            "channel_names": {"0": "MRI"},
            "labels": DEMO_LABELS,
            "numTraining": num_training,
            "file_ending": ".nii.gz",
            "licence": "CC0 (generated by segflow)",
        },
    )
    logger.info(
        "wrote demo dataset with %d training and %d test cases to %s",
        num_training,
        num_test,
        out_dir,
    )
    return out_dir
