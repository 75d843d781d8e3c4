"""segflow's prediction with nnU-Net 2.8.1's float16 window accumulation emulated, against
nnU-Net's own probabilities: is the probability gap nnU-Net's rounding?

nnU-Net 2.8.1's predictor (``nnUNetPredictor``) sums the sliding window's Gaussian-weighted
logits, and the Gaussian weights themselves, in float16 tensors; its Gaussian is scaled to a
maximum of 10 and cast to float16 (zeros then set to its smallest nonzero value); the sum is
divided by the summed weights in float16. Near the edges and corners of a window the products
are float16 subnormals, so nnU-Net's logits there are off. segflow sums in float32.

This script runs ``segflow predict`` (PyTorch backend, test-time mirroring, probabilities
saved, no postprocessing) of an imported model in this process with segflow's window sum
replaced by one that rounds as described above (the network's float32 outputs, flips averaged,
are untouched), and compares the probabilities with nnU-Net's ``.npz`` files: the largest
difference per case with the emulation, and (``--plain``, a folder of segflow's ordinary
probabilities of the same cases) without it.

Example, on the work folder of ``benchmarks/nnunet_interop.py``::

    .venv/bin/python benchmarks/nnunet_float16.py -m /tmp/nnunet_interop_full/segflow_model \\
        -i /tmp/nnunet_interop_full/raw/Dataset004_Hippocampus/imagesTs \\
        --nnunet /tmp/nnunet_interop_full/nnunet_pred/3d_fullres \\
        --plain /tmp/nnunet_interop_full/segflow_pred/raw --cases 5 --out /tmp/fp16
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from common import emit

from segflow.cli import main as segflow_main
from segflow.inference import sliding_window
from segflow.inference.sliding_window import _gaussian_array, _window_grid, _windows

#: nnU-Net 2.8.1's Gaussian scale (``value_scaling_factor``).
NNUNET_GAUSSIAN_MAX = 10.0


def nnunet_float16_gaussian(patch: tuple[int, ...]) -> torch.Tensor:
    """The Gaussian as nnU-Net 2.8.1 holds it: maximum 10, float16, zeros set to the least."""
    weights = torch.from_numpy(_gaussian_array(patch, 1.0 / 8) * NNUNET_GAUSSIAN_MAX).half()
    zero = weights == 0
    if zero.any():
        weights[zero] = weights[~zero].min()
    return weights


def mirrored_in_nnunet_order(network, batch: torch.Tensor, combinations) -> torch.Tensor:
    """The flips' mean summed as nnU-Net sums it: one flip per network call, the unflipped
    window first, then one axis, two axes, three axes (float32 sums in another order, or
    two flips in one call, differ in the last bits, which float16 then magnifies)."""
    axes = sorted({a for c in combinations for a in c})
    order = [(), *(c for k in range(1, len(axes) + 1) for c in itertools.combinations(axes, k))]
    total = network(batch).float()
    for flip in order[1:]:
        dims = [a + 2 for a in flip]
        total += torch.flip(network(torch.flip(batch, dims)), dims).float()
    return total / len(order)


def float16_sum_windows(network, data, patch, combinations, step_size, batch_windows, device,
                        accumulate, memory_format, autocast) -> torch.Tensor:  # fmt: skip
    """segflow's window sum, rounded as nnU-Net 2.8.1 rounds it (3D patches only)."""
    data = data.to(accumulate)
    spatial = tuple(data.shape[1:])
    if len(patch) != len(spatial):
        raise ValueError("the emulation covers 3D patches on 3D images")
    gaussian = nnunet_float16_gaussian(patch).to(accumulate)
    grid = _window_grid(spatial, patch, step_size)
    logits = weights = None
    with autocast:
        for window in _windows(spatial, grid, False):
            batch = data[window.where][None].to(device).contiguous(memory_format=memory_format)
            predicted = mirrored_in_nnunet_order(network, batch, combinations)[0]
            predicted = predicted.to(accumulate) * gaussian  # float32 times float16: float32
            if logits is None:
                logits = torch.zeros((predicted.shape[0], *spatial), dtype=torch.half)
                weights = torch.zeros(spatial, dtype=torch.half)
            logits[window.where] += predicted  # rounded into the float16 sum
            weights[window.where[1:]] += gaussian
    torch.div(logits, weights, out=logits)  # in float16
    return logits.float()


def max_difference(ours: Path, theirs: Path) -> float:
    p = np.load(ours)["probabilities"].astype(np.float64)
    q = np.load(theirs)["probabilities"].astype(np.float64)
    return float(np.abs(p - q).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", type=Path, required=True, help="imported model")
    parser.add_argument("-i", "--images", type=Path, required=True)
    parser.add_argument("--nnunet", type=Path, required=True, help="nnU-Net's <case>.npz")
    parser.add_argument("--plain", type=Path, default=None, help="segflow's own <case>.npz")
    parser.add_argument("--cases", type=int, default=5, help="the first N images")
    parser.add_argument("-c", "--configuration", default=None,
                        help="predict with this configuration's folds only (the emulation "
                             "covers 3D ones)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, default=None)
    args = parser.parse_args(argv)
    inputs = args.out / "inputs"
    shutil.rmtree(args.out, ignore_errors=True)
    inputs.mkdir(parents=True)
    for path in sorted(args.images.glob("*_0000.nii.gz"))[: args.cases]:
        (inputs / path.name).symlink_to(path.resolve())
    sliding_window._sum_windows = float16_sum_windows
    only = ["-c", args.configuration] if args.configuration else []
    status = segflow_main(["predict", "-i", str(inputs), "-o", str(args.out / "pred"), "-m",
                           str(args.model), "--no-postprocessing", "--save-probabilities",
                           "--device", "cpu", "--backend", "torch", *only])  # fmt: skip
    if status != 0:
        return status
    rows = {}
    for path in sorted((args.out / "pred").glob("*.npz")):
        row = {"emulated": max_difference(path, args.nnunet / path.name)}
        if args.plain is not None:
            row["plain"] = max_difference(args.plain / path.name, args.nnunet / path.name)
        rows[path.stem] = row
    result = {"cases": rows, "max_emulated": max(r["emulated"] for r in rows.values())}
    if args.plain is not None:
        result["max_plain"] = max(r["plain"] for r in rows.values())
    emit(result, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
