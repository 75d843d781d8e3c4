"""A raw look at NIfTI files, for what SimpleITK hides when it reads them.

SimpleITK (ITK 5.4, through the NIfTI C library) reads a ``.nii``/``.nii.gz`` that was cut
short without complaint, filling the missing voxels with zeros, and it turns every NaN and
infinite float voxel into 0. Validation must report both, so this module reads the header
itself and, where needed, streams the voxel data once: floats are scanned for non-finite
values and every file is checked to hold all the bytes its header announces. Integer files
whose gzip trailer already states the right size are not decompressed at all.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NiftiScan", "scan_nifti"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_CHUNK_OUT = 1 << 24
# Enough for the NIfTI-2 header and the extensions of ordinary files.
_HEAD_BYTES = 1 << 16
# NIfTI datatype codes of real floating-point voxels (float32, float64).
_FLOAT_CODES = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiScan:
    """What the raw bytes of a NIfTI file say.

    Attributes:
        expected_bytes: where the voxel data ends according to the header.
        found_bytes: how many of those bytes the file holds (``expected_bytes`` when complete).
        nan: NaN voxel values (floats only; 0 when not scanned).
        inf: infinite voxel values (floats only).
    """

    expected_bytes: int
    found_bytes: int
    nan: int = 0
    inf: int = 0

    @property
    def truncated(self) -> bool:
        return self.found_bytes < self.expected_bytes


@dataclass(frozen=True)
class _Header:
    data_offset: int
    data_bytes: int
    float_dtype: np.dtype | None


def scan_nifti(path: str | Path) -> NiftiScan | None:
    """Check that a NIfTI file is complete and count its non-finite float voxels.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file that SimpleITK could read.

    Returns:
        The scan, or None for other formats and for headers this module cannot parse
        (then SimpleITK's reading is all there is to go by).
    """
    path = Path(path)
    name = path.name.lower()
    compressed = name.endswith(".nii.gz")
    if not (compressed or name.endswith(".nii")):
        return None
    header = _parse_header(_head(path, compressed))
    if header is None:
        return None
    end = header.data_offset + header.data_bytes
    if header.float_dtype is None:
        if not compressed:
            return NiftiScan(end, min(end, path.stat().st_size))
        if _gzip_trailer_size(path) == end % (1 << 32):
            return NiftiScan(end, end)
    return _stream(path, compressed, header)


def _head(path: Path, compressed: bool) -> bytes:
    """The first (decompressed) bytes of the file, as many as there are up to _HEAD_BYTES."""
    head = b""
    try:
        for chunk in _chunks(path, compressed, _HEAD_BYTES):
            head += chunk
            if len(head) >= _HEAD_BYTES:
                break
    except (OSError, zlib.error):
        pass
    return head[:_HEAD_BYTES]


def _parse_header(head: bytes) -> _Header | None:
    """Data offset, size and float type from a NIfTI-1 or NIfTI-2 header."""
    if len(head) < 348:
        return None
    for order in "<>":
        (size,) = struct.unpack(f"{order}i", head[:4])
        if size == 348:
            ndim, *dims = struct.unpack(f"{order}8h", head[40:56])
            datatype, bitpix = struct.unpack(f"{order}2h", head[70:74])
            (vox_offset,) = struct.unpack(f"{order}f", head[108:112])
            break
        if size == 540 and len(head) >= 540:
            datatype, bitpix = struct.unpack(f"{order}2h", head[12:16])
            ndim, *dims = struct.unpack(f"{order}8q", head[16:80])
            (vox_offset,) = struct.unpack(f"{order}q", head[168:176])
            break
    else:
        return None
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[:ndim]], dtype=np.int64))
    offset = int(vox_offset)
    if offset < size + 4:
        # Some writers leave vox_offset at 0; readers then find the data after the header.
        offset = size + 4 + _extensions_size(head, size, order)
    code = _FLOAT_CODES.get(int(datatype))
    float_dtype = np.dtype(order + code) if code is not None else None
    return _Header(offset, voxels * bitpix // 8, float_dtype)


def _extensions_size(head: bytes, size: int, order: str) -> int:
    if len(head) < size + 4 or head[size] == 0:
        return 0
    total, pos = 0, size + 4
    while pos + 8 <= len(head):
        (esize,) = struct.unpack(f"{order}i", head[pos : pos + 4])
        if esize < 16 or esize % 16:
            break
        total += esize
        pos += esize
    return total


def _gzip_trailer_size(path: Path) -> int | None:
    """ISIZE of the last gzip member: the uncompressed size mod 2**32 in a complete file."""
    if path.stat().st_size < 18:
        return None
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        return int(struct.unpack("<I", fh.read(4))[0])


def _chunks(path: Path, compressed: bool, out_size: int = _MAX_CHUNK_OUT) -> Iterator[bytes]:
    """The file's (decompressed) bytes in chunks; several gzip members are joined."""
    with open(path, "rb") as fh:
        if not compressed:
            while chunk := fh.read(_CHUNK):
                yield chunk
            return
        decomp = zlib.decompressobj(wbits=31)
        while chunk := fh.read(_CHUNK):
            while chunk:
                out = decomp.decompress(chunk, out_size)
                if out:
                    yield out
                if decomp.eof:
                    chunk = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=31)
                else:
                    chunk = decomp.unconsumed_tail


def _stream(path: Path, compressed: bool, header: _Header) -> NiftiScan:
    start, end = header.data_offset, header.data_offset + header.data_bytes
    dtype = header.float_dtype
    pos, nan, inf = 0, 0, 0
    rest = b""
    try:
        for chunk in _chunks(path, compressed):
            lo, hi = max(0, start - pos), min(len(chunk), end - pos)
            if dtype is not None and lo < hi:
                data = rest + chunk[lo:hi]
                usable = len(data) - len(data) % dtype.itemsize
                values = np.frombuffer(data, dtype=dtype, count=usable // dtype.itemsize)
                nan += int(np.count_nonzero(np.isnan(values)))
                inf += int(np.count_nonzero(np.isinf(values)))
                rest = data[usable:]
            pos += len(chunk)
            if pos >= end:
                break
    except zlib.error:
        # Padding or damage after the last member; what came before still counts.
        logger.debug("%s: gzip data ends in bytes that do not decompress", path)
    return NiftiScan(end, min(pos, end), nan, inf)
