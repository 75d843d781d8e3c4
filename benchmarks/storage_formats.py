"""Measure candidate storage formats for preprocessed cases: size, write time, patch reads.

Candidates: memory-mapped ``.npy`` (uncompressed) and blosc2 NDArrays with several codecs,
filters and chunk/block rules. The data is synthetic but shaped like preprocessed images:
smooth anatomy-like structure plus noise, resampled with third-order splines (so the
float32 mantissas are as busy as real preprocessed data) and z-scored. Each format writes
the case, then reads random training patches from a freshly opened file (as a data loader
does) and reports milliseconds per patch. Prints one JSON line per format and a last JSON
line with all of them.

Example::

    .venv/bin/python benchmarks/storage_formats.py --shape 1 96 256 256 --patch 80 160 160
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import blosc2
import numpy as np
from scipy import ndimage

from segflow.preprocessing.resampling import resample_data
from segflow.preprocessing.storage import chunk_and_block_shape, open_case, save_case

logger = logging.getLogger("storage_formats")


def synthetic_case(
    shape: tuple[int, ...], seed: int, quantized: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A z-scored float32 image ``(c, z, y, x)`` and an int8 segmentation ``(1, z, y, x)``.

    ``quantized``: an integer-valued scan normalized without resampling (few distinct
    values), as for data already at the target spacing.
    """
    rng = np.random.default_rng(seed)
    c, *spatial = shape
    if quantized:
        base = ndimage.gaussian_filter(rng.normal(size=(c, *spatial)), (0, 3, 3, 3))
        data = np.rint(base / base.std() * 40 + 200 + rng.normal(size=base.shape) * 5)
    else:
        coarse = [max(2, s * 4 // 5) for s in spatial]
        base = ndimage.gaussian_filter(rng.normal(size=(c, *coarse)), (0, 3, 3, 3))
        base += 0.2 * rng.normal(size=base.shape)
        data = resample_data(base.astype(np.float32), spatial, axis=None, order=3)
    data = (data - data.mean()) / data.std()
    seg = np.zeros((1, *spatial), dtype=np.int8)
    seg[0][data[0] > 1.0] = 1
    seg[0][data[0] > 2.0] = 2
    return data.astype(np.float32), seg


def random_slices(shape, patch, rng) -> tuple[slice, ...]:
    starts = [rng.integers(0, max(1, s - p + 1)) for s, p in zip(shape[1:], patch, strict=True)]
    return (slice(None), *(slice(a, a + p) for a, p in zip(starts, patch, strict=True)))


def measure(fmt: dict, data: np.ndarray, seg: np.ndarray, patch, folder: Path, reads: int) -> dict:
    data_path = folder / f"data{fmt['ext']}"
    seg_path = folder / f"seg{fmt['ext']}"
    t0 = time.perf_counter()
    if fmt["kind"] == "npy":
        np.save(data_path, data)
        np.save(seg_path, seg)
    elif fmt["kind"] == "segflow":
        files = save_case(folder, "case", data, seg, {}, patch)
        data_path, seg_path = files["data"], files["seg"]
    else:
        for array, path in ((data, data_path), (seg, seg_path)):
            chunks, blocks = fmt["shapes"](array.shape, patch, array.itemsize)
            blosc2.asarray(
                np.ascontiguousarray(array),
                urlpath=str(path),
                mode="w",
                chunks=chunks,
                blocks=blocks,
                cparams={
                    "codec": fmt["codec"],
                    "clevel": fmt["clevel"],
                    "filters": fmt["filters"],
                    "nthreads": 1,
                },
            )
    write_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(reads):
        where = random_slices(data.shape, patch, rng)
        if fmt["kind"] == "segflow":
            case = open_case(folder, "case")
            d = case.data[where]
            s = case.seg[where]
        elif fmt["kind"] == "npy":
            d = np.load(data_path, mmap_mode="r")[where]
            s = np.load(seg_path, mmap_mode="r")[where]
            d = np.array(d)
            s = np.array(s)
        else:
            d = blosc2.open(str(data_path), mode="r", mmap_mode="r", dparams={"nthreads": 1})[where]
            s = blosc2.open(str(seg_path), mode="r", mmap_mode="r", dparams={"nthreads": 1})[where]
        if not np.array_equal(d, data[where]) or not np.array_equal(s, seg[where]):
            raise RuntimeError(f"{fmt['name']}: read back differs")
    read_ms = (time.perf_counter() - t0) / reads * 1000
    t0 = time.perf_counter()
    if fmt["kind"] == "npy":
        full = np.array(np.load(data_path, mmap_mode="r"))
    else:
        full = blosc2.open(str(data_path), mode="r", dparams={"nthreads": 1})[...]
    full_ms = (time.perf_counter() - t0) * 1000
    del full
    size = data_path.stat().st_size + seg_path.stat().st_size
    return {
        "format": fmt["name"],
        "bytes": size,
        "ratio": round((data.nbytes + seg.nbytes) / size, 2),
        "write_s": round(write_s, 3),
        "patch_read_ms": round(read_ms, 2),
        "full_read_ms": round(full_ms, 1),
    }


def whole_case_chunks(shape, patch, itemsize):
    """One chunk for the whole case, blocks of about 256 KiB."""
    del patch
    chunks = tuple(shape)
    blocks = list(shape)
    while np.prod(blocks) * itemsize > 256 * 1024:
        axis = int(np.argmax(blocks[1:])) + 1
        blocks[axis] = (blocks[axis] + 1) // 2
    return chunks, tuple(blocks)


def formats() -> list[dict]:
    shuffle = [blosc2.Filter.SHUFFLE]
    bytedelta = [blosc2.Filter.SHUFFLE, blosc2.Filter.BYTEDELTA]
    ours = chunk_and_block_shape
    nofilter = [blosc2.Filter.NOFILTER]
    return [
        {"name": "segflow (zstd1, filter by trial)", "kind": "segflow", "ext": ".b2nd"},
        {"name": "npy-mmap", "kind": "npy", "ext": ".npy"},
        {
            "name": "zstd1-nofilter",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.ZSTD,
            "clevel": 1,
            "filters": nofilter,
            "shapes": ours,
        },
        {
            "name": "lz4hc5-nofilter",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.LZ4HC,
            "clevel": 5,
            "filters": nofilter,
            "shapes": ours,
        },
        {
            "name": "lz4hc5-shuffle",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.LZ4HC,
            "clevel": 5,
            "filters": shuffle,
            "shapes": ours,
        },
        {
            "name": "lz4-5-shuffle",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.LZ4,
            "clevel": 5,
            "filters": shuffle,
            "shapes": ours,
        },
        {
            "name": "zstd1-shuffle",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.ZSTD,
            "clevel": 1,
            "filters": shuffle,
            "shapes": ours,
        },
        {
            "name": "zstd3-shuffle",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.ZSTD,
            "clevel": 3,
            "filters": shuffle,
            "shapes": ours,
        },
        {
            "name": "zstd1-bytedelta",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.ZSTD,
            "clevel": 1,
            "filters": bytedelta,
            "shapes": ours,
        },
        {
            "name": "zstd3-bytedelta",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.ZSTD,
            "clevel": 3,
            "filters": bytedelta,
            "shapes": ours,
        },
        {
            "name": "zstd1-shuffle-wholechunk",
            "kind": "b2",
            "ext": ".b2nd",
            "codec": blosc2.Codec.ZSTD,
            "clevel": 1,
            "filters": shuffle,
            "shapes": whole_case_chunks,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 96, 256, 256])
    parser.add_argument("--patch", type=int, nargs="+", default=[80, 160, 160])
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="format names to run")
    parser.add_argument(
        "--quantized", action="store_true", help="few distinct values (not resampled data)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    blosc2.set_nthreads(1)
    patch = tuple(args.patch)
    if len(patch) == 2:  # a 2d configuration reads one slice at a time
        patch = (1, *patch)
    data, seg = synthetic_case(tuple(args.shape), args.seed, args.quantized)
    results = []
    folder = Path(tempfile.mkdtemp(prefix="segflow-storage-"))
    try:
        for index, fmt in enumerate(formats()):
            if args.only and fmt["name"] not in args.only:
                continue
            own = folder / str(index)  # a fresh folder: overwriting files costs extra
            own.mkdir()
            row = measure(fmt, data, seg, patch, own, args.reads)
            row.update(shape=list(data.shape), patch=list(patch), quantized=args.quantized)
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"benchmark": "storage_formats", "results": results}))


if __name__ == "__main__":
    main()
