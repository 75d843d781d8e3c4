"""Reading and writing images in the formats of the nnU-Net v2 raw layout.

Every image is returned as a 4D array ``(channels, z, y, x)`` with its spacing in the same
axis order, in millimetres. 2D images get a singleton ``z`` axis whose spacing is
:data:`SPACING_2D_OUT_OF_PLANE` (999, as nnU-Net does), so that 2D data plans like extremely
anisotropic 3D data and only ever gets a 2d configuration that matters. Origin and direction
are kept in SimpleITK's (x, y, z) order so that predictions can be written back with the exact
geometry of their input.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segflow.errors import Problem, SegflowError
from segflow.io.endings import MEDICAL_ENDINGS, NATURAL_2D_ENDINGS, SUPPORTED_ENDINGS

__all__ = [
    "MAX_COMPRESSION_RATIO",
    "MEDICAL_ENDINGS",
    "NATURAL_2D_ENDINGS",
    "SPACING_2D_OUT_OF_PLANE",
    "SUPPORTED_ENDINGS",
    "ImageData",
    "ImageHeader",
    "ImageReadError",
    "check_image_file",
    "ending_of",
    "read_image",
    "read_image_header",
    "sitk_path",
    "write_image",
]

#: Out-of-plane spacing given to the fake ``z`` axis of 2D images.
SPACING_2D_OUT_OF_PLANE = 999.0


#: Most bytes of voxels a header may declare per byte of data on disk. Deflate (gzip, zlib:
#: NIfTI .gz, PNG, compressed NRRD/MetaImage/TIFF) cannot exceed about 1032:1, so a header
#: that declares more is corrupt or a decompression bomb.
MAX_COMPRESSION_RATIO = 1100
# Headers of tiny files may declare a little more than the ratio allows (padding, headers).
_SLACK = 1 << 20
# Detached headers (.mhd, .nhdr) name their data file within the first bytes.
_HEADER_TEXT_BYTES = 1 << 16


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
    """The informative part of an ITK exception, without source locations, addresses or the
    path: e.g. ``Bad direction, determinant is 0. Refusing to change direction ...``."""
    text = str(err)
    marker = re.search(r"ITK ERROR: \w+\(0x[0-9a-fA-F]+\):\s*", text)
    if marker is not None:
        reason = text[marker.end() :]
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        reason = next(
            (ln.split("Description:", 1)[1] for ln in lines if "Description:" in ln),
            lines[-1] if lines else "unknown error",
        )
    reason = " ".join(reason.replace(str(path), "the file").split())
    return reason[:300] or "unknown error"


def ending_of(path: str | Path) -> str | None:
    """Return the supported file ending of ``path`` (``.nii.gz`` counts as one), or None."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return None


def sitk_path(path: str | Path) -> str:
    """``path`` as SimpleITK takes it, or :class:`ImageReadError` naming the file.

    SimpleITK passes file names to C++ as UTF-8; a name that is not valid UTF-8 (Python
    holds its bytes as lone surrogates) aborts the whole process inside SimpleITK
    (``basic_string::_S_construct null not valid``). Every path handed to SimpleITK goes
    through here first.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ImageReadError(
            path,
            "the path is not valid UTF-8 (undecodable bytes shown as \\xNN); "
            "SimpleITK cannot open it: rename the file or folder",
        ) from None
    return text


def check_image_file(path: str | Path) -> Path:
    """Check that ``path`` is a readable, non-empty regular file SimpleITK may be given.

    Catches, each with its own message, what would otherwise crash SimpleITK, hang it or
    read as a misleading error: names that are not UTF-8, folders (also through links),
    broken links and link loops, pipes and devices, empty and unreadable files.

    Raises:
        ImageReadError: naming the file and the problem.
    """
    path = Path(path)
    sitk_path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise ImageReadError(path, _stat_problem(path, err)) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(path, f"is a folder{_link_note(path)}, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(
            path, f"is not a regular file{_link_note(path)} (a pipe, socket or device)"
        )
    if info.st_size == 0:
        raise ImageReadError(path, f"the file is empty (0 bytes){_link_note(path)}")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as err:
        raise ImageReadError(path, f"cannot be read ({err.strerror or err})") from None
    return path


def _stat_problem(path: Path, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symbolic link loop (the link points back to itself through other links)"
    if err.errno == errno.ENOENT:
        if path.is_symlink():
            return f"broken symbolic link to {os.readlink(path)}, which does not exist"
        return "file does not exist"
    return f"cannot be read ({err.strerror or err})"


def _link_note(path: Path) -> str:
    return f" (a symbolic link to {os.readlink(path)})" if path.is_symlink() else ""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares, read without its voxels.

    Attributes:
        size: voxels per axis, SimpleITK (x, y[, z]) order.
        spacing: voxel size per axis, same order.
        components: values per voxel (3 for RGB).
        pixel_type: SimpleITK's name of the pixel type, e.g. ``16-bit signed integer``.
        bytes_per_component: size of one value in memory.
        origin: world position of the first voxel, same order.
        direction: flattened direction cosines, SimpleITK order.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    components: int
    pixel_type: str
    bytes_per_component: int
    origin: tuple[float, ...] = ()
    direction: tuple[float, ...] = ()

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def voxel_bytes(self) -> int:
        """Bytes the voxels take in memory once read."""
        return math.prod(self.size) * self.components * self.bytes_per_component


def _reader(path: Path, ending: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(sitk_path(path))
    reader.SetImageIO(_IMAGE_IO[ending])  # skips SimpleITK's probing of every format
    return reader


def _cannot_read(err: RuntimeError, path: Path) -> ImageReadError:
    return ImageReadError(path, f"cannot be read as an image: {_itk_reason(err, path)}")


def read_image_header(path: str | Path) -> ImageHeader:
    """Read and check an image's header without its voxels.

    The header must describe a 2D or 3D image with at least one voxel, and it may declare no
    more voxel data than the file can hold: :data:`MAX_COMPRESSION_RATIO` times the bytes on
    disk (the data file's, for a detached ``.mhd``/``.nhdr`` header), so that a corrupt or
    hostile header cannot make a reader allocate more memory than the data could fill. Its
    geometry must be usable: positive finite spacing, a finite origin and an invertible
    direction matrix (natural 2D images excepted: their geometry is not used).

    Raises:
        ImageReadError: the file is missing, not a readable regular file, of an unsupported
            ending, unreadable, or its header declares something segflow cannot use.
    """
    path = Path(path)
    ending = _supported_ending(path)
    check_image_file(path)
    header = _read_information(_reader(path, ending), path)
    _check_header(path, ending, header)
    _check_size(path, ending, header.voxel_bytes, header.size)
    extent = _nifti_extent(path, ending)
    if extent is not None:
        _check_nifti_spacing(path, *extent[1:])
    if ending not in NATURAL_2D_ENDINGS:  # their geometry is not used (see read_image)
        _check_geometry(path, header.spacing, header.origin, header.direction)
    return header


def _supported_ending(path: Path) -> str:
    ending = ending_of(path)
    if ending is None:
        raise ImageReadError(
            path, f"unsupported file ending; expected one of {', '.join(SUPPORTED_ENDINGS)}"
        )
    return ending


def _read_information(reader: sitk.ImageFileReader, path: Path) -> ImageHeader:
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise _cannot_read(err, path) from None
    return _header(
        reader.GetSize(),
        reader.GetSpacing(),
        reader.GetNumberOfComponents(),
        sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        reader.GetOrigin(),
        reader.GetDirection(),
    )


def _header(
    size: tuple[int, ...],
    spacing: tuple[float, ...],
    components: int,
    pixel_type: str,
    origin: tuple[float, ...] = (),
    direction: tuple[float, ...] = (),
) -> ImageHeader:
    bits = re.search(r"(\d+)-bit", pixel_type)
    width = int(bits[1]) // 8 if bits else 8
    return ImageHeader(
        size=tuple(int(s) for s in size),
        spacing=tuple(float(s) for s in spacing),
        components=int(components),
        pixel_type=pixel_type,
        bytes_per_component=width * (2 if pixel_type.startswith("complex") else 1),
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(d) for d in direction),
    )


def _check_header(path: Path, ending: str, header: ImageHeader) -> None:
    """Dimension, voxel count and pixel type of a header (or of a read image)."""
    size = header.size
    natural_volume = ending in NATURAL_2D_ENDINGS and header.dimension == 3 and size[2] != 1
    if ending in NATURAL_2D_ENDINGS and (header.dimension > 3 or natural_volume):
        raise ImageReadError(
            path,
            f"expected a 2D image for {ending}, found {header.dimension}D (use NIfTI for volumes)",
        )
    if header.dimension not in (2, 3):
        raise ImageReadError(
            path,
            f"{header.dimension}D image with shape {size}; expected 2D or 3D "
            "(put each channel in its own _XXXX file)",
        )
    if min(size) < 1:
        raise ImageReadError(path, f"the header declares no voxels (shape {size})")
    if header.pixel_type.startswith("complex"):
        raise ImageReadError(path, f"{header.pixel_type} voxels; expected real numbers")


def _check_size(path: Path, ending: str, voxel_bytes: int, size: tuple[int, ...]) -> None:
    """Refuse a header that declares more voxel bytes than the data on disk can hold."""
    on_disk = _data_bytes(path, ending)
    if on_disk is not None and voxel_bytes > on_disk * MAX_COMPRESSION_RATIO + _SLACK:
        raise ImageReadError(
            path,
            f"the header declares {voxel_bytes:,} bytes of voxels (shape {size}) but the "
            f"data on disk is {on_disk:,} bytes, more than {MAX_COMPRESSION_RATIO}:1 "
            "compression can hold: a corrupt header or a decompression bomb",
        )


def _nifti_extent(path: Path, ending: str) -> tuple[int, tuple[int, ...], tuple[float, ...]] | None:
    """Voxel bytes, shape and voxel sizes (``pixdim``) a NIfTI-1/2 header declares, parsed
    directly (much cheaper than SimpleITK's header reading); None for other formats and
    unparsable headers."""
    if ending not in (".nii", ".nii.gz"):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096 if ending == ".nii.gz" else 540)
        if ending == ".nii.gz":
            head = zlib.decompressobj(wbits=31).decompress(head, 540)
    except (OSError, zlib.error):
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack(f"{order}i", head[:4])[0] == 348:
            ndim, *dims = struct.unpack(f"{order}8h", head[40:56])
            bitpix = struct.unpack(f"{order}h", head[72:74])[0]
            pixdim = struct.unpack(f"{order}8f", head[76:108])[1:]
            break
        if len(head) >= 540 and struct.unpack(f"{order}i", head[:4])[0] == 540:
            bitpix = struct.unpack(f"{order}h", head[14:16])[0]
            ndim, *dims = struct.unpack(f"{order}8q", head[16:80])
            pixdim = struct.unpack(f"{order}8d", head[104:168])[1:]
            break
    else:
        return None
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    shape = tuple(max(int(d), 1) for d in dims[:ndim])
    return math.prod(shape) * bitpix // 8, shape, tuple(float(v) for v in pixdim[:ndim])


def _check_nifti_spacing(path: Path, shape: tuple[int, ...], pixdim: tuple[float, ...]) -> None:
    """SimpleITK reads a voxel size of 0, NaN or infinity as 1 mm without a word; refuse it
    on every spatial axis longer than one voxel."""
    bad = [
        v
        for v, n in zip(pixdim[:3], shape[:3], strict=False)
        if n > 1 and not (math.isfinite(v) and v != 0)
    ]
    if bad:
        raise ImageReadError(
            path,
            f"voxel size (pixdim) {pixdim[:3]} in the header: 0, NaN and infinite sizes are "
            "read as 1 mm by SimpleITK; fix the header",
        )


_META_DATA_FILE = re.compile(r"^\s*ElementDataFile\s*=\s*(.*?)\s*$", re.MULTILINE)
_NRRD_DATA_FILE = re.compile(r"^\s*data ?file\s*:\s*(.*?)\s*$", re.MULTILINE | re.IGNORECASE)
# The formats whose header may name a separate data file (.mha and .nrrd usually do not).
_DATA_FILE_KEY = {
    ".mhd": _META_DATA_FILE,
    ".mha": _META_DATA_FILE,
    ".nhdr": _NRRD_DATA_FILE,
    ".nrrd": _NRRD_DATA_FILE,
}


def _data_bytes(path: Path, ending: str) -> int | None:
    """Bytes on disk that hold the voxels: the file, or a detached header's data file.

    None when a detached header names its data in a way not followed here (a list of files,
    a numbered pattern); those are read unbounded, as SimpleITK would.
    """
    size = path.stat().st_size
    key = _DATA_FILE_KEY.get(ending)
    if key is None:
        return size
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_TEXT_BYTES).decode("latin-1")
    if key is _NRRD_DATA_FILE:
        head = head.split("\n\n", 1)[0]  # a blank line ends a NRRD header
    found = key.search(head)
    if found is None or found[1] in ("", "LOCAL"):
        return size
    name = found[1]
    if name.upper().startswith("LIST") or "%" in name:
        return None
    data = path.parent / name
    try:
        check_image_file(data)
    except ImageReadError as err:
        raise ImageReadError(path, f"its data file {name}: {err.problems[0].message}") from None
    return data.stat().st_size


def read_image(path: str | Path) -> ImageData:
    """Read one image file into an :class:`ImageData`.

    The header is read and checked first (see :func:`read_image_header`), so that a file
    that is not what its header declares is refused before any voxel memory is allocated.

    Args:
        path: a ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` volume (2D or 3D, scalar or vector
            pixels) or a 2D ``.png``/``.bmp``/``.tif`` image (an RGB image is three channels).

    Raises:
        ImageReadError: the file is missing, not a regular non-empty readable file, not
            valid UTF-8 in its name, unreadable, 4D, declares more voxels than it can hold,
            has a non-positive or non-finite spacing or a singular direction, or is of an
            unknown kind.
    """
    path = Path(path)
    ending = _supported_ending(path)
    check_image_file(path)
    reader = _reader(path, ending)
    extent = _nifti_extent(path, ending)
    if extent is None:
        _check_header(path, ending, header := _read_information(reader, path))
        _check_size(path, ending, header.voxel_bytes, header.size)
    else:  # NIfTI: bound the allocation from the raw header, check the rest once read
        _check_size(path, ending, *extent[:2])
        _check_nifti_spacing(path, *extent[1:])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise _cannot_read(err, path) from None
    if extent is not None:
        _check_header(
            path,
            ending,
            _header(
                image.GetSize(),
                image.GetSpacing(),
                image.GetNumberOfComponentsPerPixel(),
                image.GetPixelIDTypeAsString(),
            ),
        )
    try:
        array = sitk.GetArrayFromImage(image)
    except MemoryError:
        raise ImageReadError(path, "not enough memory to read the file") from None

    dim = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    # Vector pixels (RGB png, multi-component nifti) come last from SimpleITK.
    array = np.moveaxis(array, -1, 0) if components > 1 else array[None]

    if ending in NATURAL_2D_ENDINGS:
        if dim == 3:
            array = array[:, 0]
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
    _check_geometry(path, spacing_xyz, origin, direction)
    if dim == 2:
        return ImageData(
            array=array[:, None],
            spacing=(SPACING_2D_OUT_OF_PLANE, spacing_xyz[1], spacing_xyz[0]),
            origin=origin,
            direction=direction,
            is_2d=True,
            path=path,
        )
    return ImageData(
        array=array,
        spacing=(spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]),
        origin=origin,
        direction=direction,
        is_2d=False,
        path=path,
    )


def _check_geometry(
    path: Path,
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: tuple[float, ...],
) -> None:
    """Refuse geometry that would make every later millimetre computation wrong."""
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ImageReadError(
            path, f"spacing {spacing} (x, y, z) mm; expected positive, finite voxel sizes"
        )
    if not all(math.isfinite(o) for o in origin):
        raise ImageReadError(path, f"origin {origin} is not finite")
    n = len(spacing)
    matrix = np.asarray(direction, dtype=float).reshape(n, n)
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-6:
        raise ImageReadError(
            path, f"direction {direction} is not an invertible matrix of direction cosines"
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
    target = sitk_path(path)
    ending = ending_of(path)
    if ending in NATURAL_2D_ENDINGS:
        plane = array[0] if array.ndim == 3 else array
        sitk.WriteImage(sitk.GetImageFromArray(plane), target)
        return
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing[-array.ndim :])))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    sitk.WriteImage(image, target, useCompression=True)
