"""Storage of preprocessed cases: compressed, atomic, readable patch by patch.

One case of one configuration is three files in the configuration's folder:

- ``<case>.data.b2nd``: the normalized image, float32 ``(c, z, y, x)``;
- ``<case>.seg.b2nd``: the segmentation, int8 (int16 when a label exceeds 127)
  ``(1, z, y, x)``; -1 marks voxels outside the nonzero region; absent for cases without
  a label;
- ``<case>.props.json``: the properties (geometry, crop box, shapes, class locations).

The arrays are blosc2 NDArrays compressed with ZSTD level 1, with byte shuffling or without
it, whichever compresses a sample of the array better (see :func:`choose_filter`). Blocks,
the unit blosc2 decompresses, are shaped like the configuration's patch, scaled to about
:data:`BLOCK_BYTES`, so a random patch decompresses little beyond itself; a file opened
memory-mapped reads only the blocks a patch touches. ``benchmarks/storage_formats.py``
measures the choice against memory-mapped ``.npy`` (faster patch reads, but 1.4 to 2.8 times
the bytes) and other codecs (LZ4HC: faster reads, 5 times slower writes, larger files).

The image stays float32. float16 keeps about three significant digits: rounding moves
normalized intensities between 4 and 8 (common after z-scoring) by up to 2e-3, those between
8 and 16 by up to 4e-3, more than the 1e-3 within which segflow matches nnU-Net; compression
keeps the files smaller than nnU-Net's anyway.

Every file is written under a temporary name and renamed into place. The properties file
is removed first and written last: a case counts as stored only when its properties exist
and describe arrays of the shapes found, so a job killed at any point leaves nothing that
:func:`open_case` (or a rerun checking :func:`is_case_complete`) accepts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.io.atomic import atomic_path, read_json, temporary_prefix

__all__ = [
    "BLOCK_BYTES",
    "CHUNK_BYTES",
    "DATA_SUFFIX",
    "PROPS_SUFFIX",
    "SEG_SUFFIX",
    "PreprocessedCase",
    "case_files",
    "choose_filter",
    "chunk_and_block_shape",
    "is_case_complete",
    "open_case",
    "remove_leftovers",
    "save_case",
    "seg_dtype_for",
]

logger = logging.getLogger(__name__)

DATA_SUFFIX = ".data.b2nd"
SEG_SUFFIX = ".seg.b2nd"
PROPS_SUFFIX = ".props.json"

#: Target size of one blosc2 block (the unit decompressed on a read).
BLOCK_BYTES = 128 * 1024
#: Upper size of one blosc2 chunk (the unit of storage, split evenly into blocks).
CHUNK_BYTES = 8 * 1024 * 1024

_CODEC = blosc2.Codec.ZSTD
_CLEVEL = 1
_FILTER_CANDIDATES = (blosc2.Filter.NOFILTER, blosc2.Filter.SHUFFLE)
# How much of the central block the filter choice compresses on trial.
_FILTER_SAMPLE_BYTES = 64 * 1024

# A test hook: the workflow tests kill a job in the middle of writing a case to show that a
# rerun starts from scratch. Set to "data", "seg" or "props" to SIGKILL the process after that
# file was written under its temporary name and before it is renamed.
_KILL_HOOK_ENV = "SEGFLOW_TEST_KILL_DURING_WRITE"


def case_files(folder: str | os.PathLike[str], case_id: str) -> dict[str, Path]:
    """The paths of one case's files: ``{"data", "seg", "props"}``."""
    folder = Path(folder)
    return {
        "data": folder / f"{case_id}{DATA_SUFFIX}",
        "seg": folder / f"{case_id}{SEG_SUFFIX}",
        "props": folder / f"{case_id}{PROPS_SUFFIX}",
    }


def seg_dtype_for(seg: np.ndarray) -> np.dtype:
    """int8 when every value fits (-1..127), else int16."""
    if seg.size and (int(seg.max()) > 127 or int(seg.min()) < -128):
        return np.dtype(np.int16)
    return np.dtype(np.int8)


def chunk_and_block_shape(
    shape: Sequence[int],
    patch_size: Sequence[int],
    itemsize: int,
    block_bytes: int = BLOCK_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk and block shapes of a ``(c, z, y, x)`` array read in patches.

    A random patch of extent ``p`` overlaps on average ``(p - 1) / b + 1`` blocks of extent
    ``b`` along an axis, so it decompresses about ``prod(p - 1 + b)`` voxels. For blocks of
    a fixed size that is smallest when blocks have the patch's proportions; so blocks are
    the patch scaled down to ``block_bytes`` (one channel, a single slice for 2D patches).
    Chunks grow from there by whole blocks, keeping the patch's proportions (whole slices
    first for 2D patches), until they hold the whole image or reach ``chunk_bytes``: a
    memory-mapped read decompresses only the blocks it needs whatever the chunk size, while
    every chunk costs a header and a separate write (many small chunks made writing a small
    case five times slower).

    Args:
        shape: the array's shape ``(c, z, y, x)``.
        patch_size: the configuration's patch, 3 axes or 2 (a 2D patch reads one z slice).
        itemsize: bytes per voxel.
        block_bytes: target block size.
        chunk_bytes: upper chunk size.

    Returns:
        ``(chunks, blocks)``, both 4D.
    """
    spatial = [int(s) for s in shape[1:]]
    patch = [int(p) for p in patch_size]
    if len(patch) == 2:
        patch = [1, *patch]
    voxels = max(1, block_bytes // itemsize)
    cap = [max(1, min(p, s)) for p, s in zip(patch, spatial, strict=True)]
    free = [i for i in range(3) if cap[i] > 1] or [0]
    scale = (voxels / math.prod(cap)) ** (1 / len(free))
    block = [max(1, min(c, round(c * scale))) for c in cap]
    # Rounding and clamping leave the block off its target; correct on the axis furthest
    # from (or closest to) the patch's proportions.
    while math.prod(block) > voxels:
        shrinkable = [i for i in range(3) if block[i] > 1]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda i: block[i] / cap[i])
        block[axis] = max(1, block[axis] - max(1, block[axis] // 8))
    # Grow within the patch first; a patch smaller than the target (a 2D slice of a small
    # image) then extends the block beyond it, as tiny blocks compress poorly.
    for bound in (cap, spatial):
        while True:
            growable = [
                i
                for i in range(3)
                if block[i] < bound[i]
                and math.prod(block) // block[i] * min(bound[i], block[i] * 2) <= voxels
            ]
            if not growable:
                break
            axis = min(growable, key=lambda i: block[i] / cap[i])
            block[axis] = min(bound[axis], block[axis] * 2)

    chunk = list(block)
    limit = max(1, chunk_bytes // itemsize)
    while True:
        grown = {i: min(spatial[i], chunk[i] + block[i]) for i in range(3) if chunk[i] < spatial[i]}
        growable = [i for i, n in grown.items() if math.prod(chunk) // chunk[i] * n <= limit]
        if not growable:
            break
        axis = min(growable, key=lambda i: chunk[i] / cap[i])
        chunk[axis] = grown[axis]
    # blosc2 pads the array to whole chunks and each chunk to whole blocks, and compresses
    # the padding too: split each axis into equal parts instead (35 voxels in blocks of 28
    # would be padded to 56; as one block of 35, not at all). Parts may exceed the target a
    # little, the whole block by at most twice.
    chunk = _split_evenly(spatial, chunk, limit)
    block = _split_evenly(chunk, block, 2 * voxels)
    return (1, *chunk), (1, *block)


def _split_evenly(extents: Sequence[int], parts: Sequence[int], budget: int) -> list[int]:
    """Per axis, equal parts of about ``parts`` covering ``extents``, at most ``budget`` in all."""
    larger = [_even_split(e, p, allow_larger=True) for e, p in zip(extents, parts, strict=True)]
    if math.prod(larger) <= budget:
        return larger
    return [_even_split(e, p) for e, p in zip(extents, parts, strict=True)]


def _even_split(extent: int, part: int, allow_larger: bool = False) -> int:
    """Split ``extent`` into equal parts of about ``part``; the size of one part.

    Parts never exceed ``part`` unless ``allow_larger``: then the count of parts is rounded
    to the nearest, so that a part may be up to 1.5 times ``part``.
    """
    count = max(1, round(extent / part)) if allow_larger else -(-extent // part)
    return -(-extent // count)


def _kill_hook(stage: str) -> None:
    if os.environ.get(_KILL_HOOK_ENV) == stage:
        logger.warning("test hook %s=%s: killing this process", _KILL_HOOK_ENV, stage)
        os.kill(os.getpid(), signal.SIGKILL)


def _central_sample(array: np.ndarray, blocks: Sequence[int], max_bytes: int) -> bytes:
    """The middle ``max_bytes`` of the central block of ``array``, as stored (C order)."""
    start = [(s - b) // 2 for s, b in zip(array.shape, blocks, strict=True)]
    where = tuple(slice(a, a + b) for a, b in zip(start, blocks, strict=True))
    flat = np.ascontiguousarray(array[where]).reshape(-1)
    keep = max(1, max_bytes // array.itemsize)
    first = max(0, (flat.size - keep) // 2)
    return flat[first : first + keep].tobytes()


def choose_filter(array: np.ndarray, blocks: Sequence[int]) -> blosc2.Filter:
    """The byte filter that compresses ``array`` better, judged on a sample of it.

    Byte shuffling groups the exponent bytes of float32 values together, which pays off for
    resampled (continuous) intensities; intensities that kept a few distinct values (not
    resampled, integer-valued scans) repeat whole 4-byte patterns that shuffling would split,
    and compress better unfiltered. Which case holds is a property of the image, so it is
    measured rather than guessed. One-byte data has nothing to shuffle.
    """
    if array.itemsize == 1 or array.size == 0:
        return blosc2.Filter.NOFILTER
    sample = _central_sample(array, blocks, _FILTER_SAMPLE_BYTES)
    sizes = {
        candidate: len(
            blosc2.compress2(
                sample,
                typesize=array.itemsize,
                codec=_CODEC,
                clevel=_CLEVEL,
                filters=[candidate],
                nthreads=1,
            )
        )
        for candidate in _FILTER_CANDIDATES
    }
    return min(sizes, key=sizes.get)


def _write_array(path: Path, array: np.ndarray, patch_size: Sequence[int], stage: str) -> None:
    chunks, blocks = chunk_and_block_shape(array.shape, patch_size, array.itemsize)
    cparams = {
        "codec": _CODEC,
        "clevel": _CLEVEL,
        "filters": [choose_filter(array, blocks)],
        "nthreads": 1,
    }
    with atomic_path(path) as tmp:
        stored = blosc2.asarray(
            np.ascontiguousarray(array),
            urlpath=str(tmp),
            mode="w",
            chunks=chunks,
            blocks=blocks,
            cparams=cparams,
        )
        del stored  # closes the file before it is synced and renamed
        _kill_hook(stage)


def remove_leftovers(folder: str | os.PathLike[str], case_ids: Iterable[str]) -> int:
    """Delete temporary files that killed writes of these cases left in ``folder``.

    One listing of the folder serves all cases, so a batch pays for it once.

    Returns:
        how many files were removed.
    """
    # atomic_path names them "<temporary_prefix><random><suffixes>" beside the target.
    prefixes = tuple(
        temporary_prefix(path)
        for case_id in case_ids
        for path in case_files(folder, case_id).values()
    )
    removed = 0
    if not prefixes or not os.path.isdir(folder):
        return removed
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefixes):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def save_case(
    folder: str | os.PathLike[str],
    case_id: str,
    data: np.ndarray,
    seg: np.ndarray | None,
    properties: dict[str, Any],
    patch_size: Sequence[int],
    clean_leftovers: bool = True,
) -> dict[str, Path]:
    """Store one preprocessed case atomically.

    Args:
        folder: the configuration's output folder (created if missing).
        case_id: the case identifier.
        data: the normalized image ``(c, z, y, x)``; stored as float32.
        seg: the segmentation ``(1, z, y, x)`` or None; stored as int8/int16.
        properties: JSON-serializable properties; shapes and dtypes of the stored arrays are
            added under ``"stored"``.
        patch_size: the configuration's patch size (decides the chunking).
        clean_leftovers: first delete what a killed earlier write of this case left (a
            batch does that for all its cases at once, see :func:`remove_leftovers`).

    Returns:
        the paths written, as :func:`case_files` (without ``"seg"`` when ``seg`` is None).
    """
    files = case_files(folder, case_id)
    Path(folder).mkdir(parents=True, exist_ok=True)
    # The properties mark a case complete: remove them first, write them last.
    with contextlib.suppress(FileNotFoundError):
        files["props"].unlink()
    if clean_leftovers:
        remove_leftovers(folder, [case_id])
    data = data.astype(np.float32, copy=False)
    _write_array(files["data"], data, patch_size, "data")
    stored: dict[str, Any] = {"data": {"shape": list(data.shape), "dtype": "float32"}}
    if seg is None:
        with contextlib.suppress(FileNotFoundError):
            files["seg"].unlink()
        del files["seg"]
    else:
        seg = seg.astype(seg_dtype_for(seg), copy=False)
        _write_array(files["seg"], seg, patch_size, "seg")
        stored["seg"] = {"shape": list(seg.shape), "dtype": seg.dtype.name}
    properties = {**properties, "stored": stored}
    with atomic_path(files["props"]) as tmp:
        tmp.write_text(json.dumps(properties, allow_nan=False) + "\n", encoding="utf-8")
        _kill_hook("props")
    return files


@dataclass
class PreprocessedCase:
    """One stored case, opened lazily.

    Attributes:
        case_id: the identifier.
        data: the image ``(c, z, y, x)``; slicing it reads and decompresses only the blocks
            the slice touches and returns a numpy array.
        seg: the segmentation ``(1, z, y, x)``, or None for a case without a label.
        properties: the parsed properties JSON.
    """

    case_id: str
    data: Any
    seg: Any
    properties: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(z, y, x)`` after preprocessing."""
        return tuple(int(s) for s in self.data.shape[1:])

    def class_locations(self) -> dict[str, np.ndarray]:
        """Sampled voxel locations per class (or region) as ``(n, 3)`` arrays of (z, y, x)."""
        shape = self.shape
        return {
            key: np.stack(np.unravel_index(np.asarray(flat, dtype=np.int64), shape), axis=1)
            for key, flat in (self.properties.get("class_locations") or {}).items()
        }


def _stored_problems(files: dict[str, Path], props: dict[str, Any]) -> list[Problem]:
    if not isinstance(props, dict) or not isinstance(props.get("stored"), dict):
        return [Problem(str(files["props"]), "no 'stored' section; not a segflow case")]
    return [
        Problem(str(files[kind]), "missing (the case was not written completely)")
        for kind in props["stored"]
        if kind not in files or not files[kind].is_file()
    ]


def _open_array(path: Path, meta: dict[str, Any]) -> Any:
    kwargs = {} if os.name == "nt" else {"mmap_mode": "r"}
    try:
        array = blosc2.open(str(path), mode="r", dparams={"nthreads": 1}, **kwargs)
    except Exception as err:  # blosc2 raises several kinds for a damaged file
        raise SegflowError(
            "cannot read preprocessed case", [Problem(str(path), f"unreadable ({err})")]
        ) from None
    if list(array.shape) != list(meta["shape"]) or np.dtype(array.dtype).name != meta["dtype"]:
        raise SegflowError(
            "preprocessed case is inconsistent",
            [
                Problem(
                    str(path),
                    f"holds {array.dtype} {tuple(array.shape)}, its properties say "
                    f"{meta['dtype']} {tuple(meta['shape'])}; preprocess the case again",
                )
            ],
        )
    return array


def is_case_complete(folder: str | os.PathLike[str], case_id: str) -> bool:
    """Whether a case was stored completely (its properties exist and every array too)."""
    files = case_files(folder, case_id)
    if not files["props"].is_file():
        return False
    try:
        props = read_json(files["props"])
    except (OSError, ValueError):
        return False
    return not _stored_problems(files, props)


def open_case(folder: str | os.PathLike[str], case_id: str) -> PreprocessedCase:
    """Open a stored case without loading its arrays.

    Args:
        folder: the configuration's preprocessed folder.
        case_id: the case identifier.

    Raises:
        SegflowError: the case is missing, incomplete, or its files disagree.
    """
    files = case_files(folder, case_id)
    if not files["props"].is_file():
        raise SegflowError(
            f"preprocessed case '{case_id}' not found",
            [Problem(str(files["props"]), "file does not exist; run preprocessing first")],
        )
    try:
        props = read_json(files["props"])
    except (OSError, ValueError) as err:
        raise SegflowError(
            "cannot read preprocessed case", [Problem(str(files["props"]), str(err))]
        ) from None
    problems = _stored_problems(files, props)
    if problems:
        raise SegflowError(f"preprocessed case '{case_id}' is incomplete", problems)
    stored = props["stored"]
    data = _open_array(files["data"], stored["data"])
    seg = _open_array(files["seg"], stored["seg"]) if "seg" in stored else None
    return PreprocessedCase(case_id=case_id, data=data, seg=seg, properties=props)
