"""Reading and writing images in the formats of the nnU-Net v2 raw layout.

Every image is returned as a 4D array ``(channels, z, y, x)`` with its spacing in the same
axis order, in millimetres. 2D images get a singleton ``z`` axis whose spacing is
:data:`SPACING_2D_OUT_OF_PLANE` (999, as nnU-Net does), so that 2D data plans like extremely
anisotropic 3D data and only ever gets a 2d configuration that matters. Origin and direction
are kept in SimpleITK's (x, y, z) order so that predictions can be written back with the exact
geometry of their input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segflow.errors import Problem, SegflowError

__all__ = [
    "MEDICAL_ENDINGS",
    "NATURAL_2D_ENDINGS",
    "SPACING_2D_OUT_OF_PLANE",
    "SUPPORTED_ENDINGS",
    "ImageData",
    "ImageReadError",
    "ending_of",
    "read_image",
    "write_image",
]

#: Out-of-plane spacing given to the fake ``z`` axis of 2D images.
SPACING_2D_OUT_OF_PLANE = 999.0

MEDICAL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NATURAL_2D_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
SUPPORTED_ENDINGS = MEDICAL_ENDINGS + NATURAL_2D_ENDINGS


class ImageReadError(SegflowError):
    """An image file could not be read, or holds something segflow cannot use."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"cannot use image {path}", [Problem(str(path), message)])


@dataclass
class ImageData:
    """An image (or segmentation) as segflow works with it.

    Attributes:
        array: ``(channels, z, y, x)``; 2D images have ``z == 1``.
        spacing: voxel size along ``(z, y, x)`` in mm.
        origin: world position of the first voxel, SimpleITK (x, y[, z]) order.
        direction: flattened direction cosines, SimpleITK order.
        is_2d: the file was a 2D image.
        path: the file it was read from (for messages).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    is_2d: bool
    path: Path | None = None

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(z, y, x)``."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]


_IMAGE_IO = {
    ".nii.gz": "NiftiImageIO",
    ".nii": "NiftiImageIO",
    ".nrrd": "NrrdImageIO",
    ".nhdr": "NrrdImageIO",
    ".mha": "MetaImageIO",
    ".mhd": "MetaImageIO",
    ".png": "PNGImageIO",
    ".bmp": "BMPImageIO",
    ".tif": "TIFFImageIO",
    ".tiff": "TIFFImageIO",
}


def _itk_reason(err: RuntimeError, path: Path) -> str:
    """The informative part of an ITK exception, without object addresses or the path."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    reason = next(
        (ln.split("Description:", 1)[1] for ln in lines if "Description:" in ln),
        lines[-1] if lines else "unknown error",
    )
    reason = re.sub(r"ITK ERROR: \w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    reason = reason.replace(str(path), "the file").strip()
    return reason[:200]


def ending_of(path: str | Path) -> str | None:
    """Return the supported file ending of ``path`` (``.nii.gz`` counts as one), or None."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return None


def read_image(path: str | Path) -> ImageData:
    """Read one image file into an :class:`ImageData`.

    Args:
        path: a ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` volume (2D or 3D, scalar or vector
            pixels) or a 2D ``.png``/``.bmp``/``.tif`` image (an RGB image is three channels).

    Raises:
        ImageReadError: the file is missing, unreadable, truncated, 4D, or of an unknown kind.
    """
    path = Path(path)
    ending = ending_of(path)
    if ending is None:
        raise ImageReadError(
            path, f"unsupported file ending; expected one of {', '.join(SUPPORTED_ENDINGS)}"
        )
    if not path.is_file():
        raise ImageReadError(path, "file does not exist")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IO[ending])  # skips SimpleITK's probing of every format
    try:
        image = reader.Execute()
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as err:
        reason = _itk_reason(err, path)
        raise ImageReadError(path, f"unreadable or truncated file ({reason})") from None

    dim = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    # Vector pixels (RGB png, multi-component nifti) come last from SimpleITK.
    array = np.moveaxis(array, -1, 0) if components > 1 else array[None]

    if ending in NATURAL_2D_ENDINGS:
        if dim == 3 and array.shape[1] == 1:
            array = array[:, 0]
        elif dim != 2:
            raise ImageReadError(
                path, f"expected a 2D image for {ending}, found {dim}D (use NIfTI for volumes)"
            )
        return ImageData(
            array=array[:, None],
            spacing=(SPACING_2D_OUT_OF_PLANE, 1.0, 1.0),
            origin=(0.0, 0.0),
            direction=(1.0, 0.0, 0.0, 1.0),
            is_2d=True,
            path=path,
        )

    spacing_xyz = tuple(float(s) for s in image.GetSpacing())
    origin = tuple(float(o) for o in image.GetOrigin())
    direction = tuple(float(d) for d in image.GetDirection())
    if dim == 2:
        return ImageData(
            array=array[:, None],
            spacing=(SPACING_2D_OUT_OF_PLANE, spacing_xyz[1], spacing_xyz[0]),
            origin=origin,
            direction=direction,
            is_2d=True,
            path=path,
        )
    if dim == 3:
        return ImageData(
            array=array,
            spacing=(spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]),
            origin=origin,
            direction=direction,
            is_2d=False,
            path=path,
        )
    raise ImageReadError(
        path,
        f"{dim}D image with shape {tuple(image.GetSize())}; expected 2D or 3D "
        "(put each channel in its own _XXXX file)",
    )


def write_image(
    path: str | Path,
    array: np.ndarray,
    spacing: tuple[float, ...],
    origin: tuple[float, ...] | None = None,
    direction: tuple[float, ...] | None = None,
) -> None:
    """Write a single-channel ``(z, y, x)`` or ``(y, x)`` array with its geometry.

    ``spacing`` is in the array's axis order (``(z, y, x)`` or ``(y, x)``); origin and
    direction are in SimpleITK order. Natural 2D formats get the array's plain values.
    The write is not atomic by itself; wrap it in :func:`segflow.io.atomic.atomic_path`.
    """
    path = Path(path)
    ending = ending_of(path)
    if ending in NATURAL_2D_ENDINGS:
        plane = array[0] if array.ndim == 3 else array
        sitk.WriteImage(sitk.GetImageFromArray(plane), str(path))
        return
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing[-array.ndim :])))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    sitk.WriteImage(image, str(path), useCompression=True)
