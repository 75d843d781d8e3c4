"""The image file endings segflow reads and writes (standard library only: the workflow's
rules match the ``{ending}`` wildcard against them at every Snakemake start)."""

from __future__ import annotations

__all__ = ["MEDICAL_ENDINGS", "NATURAL_2D_ENDINGS", "SUPPORTED_ENDINGS"]

#: Medical image formats (SimpleITK's readers).
MEDICAL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: 2D natural image formats.
NATURAL_2D_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
SUPPORTED_ENDINGS = MEDICAL_ENDINGS + NATURAL_2D_ENDINGS
