"""How fast can test-time-mirrored prediction be on this CPU in float32? A lower bound.

Runs the Hippocampus 3d_fullres network as ``segflow predict`` runs it on the CPU (inference,
deep supervision off, channels-last, two flips per call, segflow's compute set-up) and times
every convolution and transposed convolution inside the real forward pass (forward hooks).
From the layers' shapes it counts their floating-point operations (a multiply-add is two),
and prints per layer: GFLOP, milliseconds and GFLOP/s, then per flip (one network
evaluation of one window):

* ``pass_s``: the whole forward pass;
* ``convolution_s``: the convolutions alone, at the rates oneDNN reaches here;
* ``bound_s``: every convolution at the rate of the fastest one and nothing else taking any
  time: no float32 implementation built on these kernels can be faster;
* ``matmul_gflops``: a large float32 matrix product (MKL) for comparison.

With ``--holdout`` it also counts the windows of every test image (step 0.5, as predicted)
and prints the flips per case with mirroring and the network time per case at ``pass_s``,
``convolution_s`` and ``bound_s``; compare them with nnU-Net v2's seconds per case from
benchmarks/predict_speed.py to see which speed-up is possible at all.

Example::

    .venv/bin/python benchmarks/prediction_bound.py \
        --holdout /tmp/hippo_holdout/Dataset004_Hippocampus
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from common import DEFAULT_PLANS, NUM_OUTPUTS, hippocampus_plans, windows_of

from segflow.compute import set_up_compute
from segflow.inference.sliding_window import mirror_combinations
from segflow.networks import build_network, memory_format_for
from segflow.training.augmentation import default_mirror_axes

_LAYERS = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def layer_flop(module: torch.nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> float:
    """Floating-point operations of one call of a (transposed) convolution, bias ignored."""
    per_pair = math.prod(module.kernel_size) * module.in_channels // module.groups
    if isinstance(module, torch.nn.ConvTranspose2d | torch.nn.ConvTranspose3d):
        # Every input voxel scatters a kernel's worth of products into every output channel.
        return 2.0 * inputs.numel() * module.out_channels * math.prod(module.kernel_size)
    return 2.0 * output.numel() * per_pair


class LayerTimer:
    """Wall time and operations of every convolution of a network, per call of the network."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.names: list[str] = []
        self.seconds: dict[str, list[float]] = {}
        self.flop: dict[str, float] = {}
        self.shapes: dict[str, str] = {}
        self._start: dict[str, float] = {}
        for name, module in network.named_modules():
            if isinstance(module, _LAYERS):
                self.names.append(name)
                module.register_forward_pre_hook(self._before(name))
                module.register_forward_hook(self._after(name))

    def _before(self, name: str):
        def hook(module, args):
            self._start[name] = time.perf_counter()

        return hook

    def _after(self, name: str):
        def hook(module, args, output):
            self.seconds.setdefault(name, []).append(time.perf_counter() - self._start[name])
            self.flop[name] = layer_flop(module, args[0], output)
            self.shapes[name] = (
                f"{module.in_channels}->{module.out_channels} k{list(module.kernel_size)} "
                f"s{list(module.stride)} out {list(output.shape[2:])}"
            )

        return hook


def matmul_gflops(size: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2.0 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def flips_per_case(
    holdout: Path, patch: tuple[int, ...], mirror_axes: tuple[int, ...]
) -> list[int]:
    """Network evaluations of one window each that predicting every test image takes."""
    flips = len(mirror_combinations(mirror_axes))
    return [
        windows_of(path, patch) * flips
        for path in sorted((holdout / "imagesTs").glob("*_0000.nii.gz"))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=Path, default=DEFAULT_PLANS)
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--holdout", type=Path, help="a dataset folder with imagesTs")
    args = parser.parse_args(argv)

    set_up_compute("cpu", args.threads)
    configuration = hippocampus_plans(args.plans).configuration(args.configuration)
    patch = tuple(configuration.patch_size)
    torch.manual_seed(0)
    network = build_network(configuration, 1, NUM_OUTPUTS, deep_supervision=False).eval()
    memory_format = memory_format_for(len(patch), torch.device("cpu"))
    network = network.to(memory_format=memory_format)
    # segflow predict evaluates a single window's flips two at a time on the CPU.
    flips_per_call = 2
    batch = torch.randn(flips_per_call, 1, *patch).contiguous(memory_format=memory_format)
    passes = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            network(batch)
        timer = LayerTimer(network)
        for _ in range(args.repeats):
            start = time.perf_counter()
            network(batch)
            passes.append(time.perf_counter() - start)

    rows = []
    for name in (n for n in timer.names if n in timer.seconds):  # heads unused at inference
        seconds = statistics.median(timer.seconds[name])
        rows.append({
            "layer": name,
            "shape": timer.shapes[name],
            "gflop": timer.flop[name] / 1e9,
            "ms": seconds * 1e3,
            "gflops": timer.flop[name] / seconds / 1e9,
        })  # fmt: skip
    total_gflop = sum(r["gflop"] for r in rows)
    conv_s = sum(r["ms"] for r in rows) / 1e3
    best = max(r["gflops"] for r in rows)
    per_flip = {
        "pass_s": statistics.median(passes) / flips_per_call,
        "convolution_s": conv_s / flips_per_call,
        "bound_s": total_gflop / best / flips_per_call,
    }
    result = {
        "benchmark": "prediction_bound",
        "configuration": args.configuration,
        "patch_size": list(patch),
        "threads": args.threads,
        "flips_per_call": flips_per_call,
        "gflop_per_flip": round(total_gflop / flips_per_call, 2),
        "best_layer_gflops": round(best, 1),
        "whole_pass_gflops": round(total_gflop / statistics.median(passes), 1),
        "matmul_gflops": round(matmul_gflops(), 1),
        **{k: round(v, 4) for k, v in per_flip.items()},
    }
    if args.holdout:
        mirror_axes = default_mirror_axes(patch)  # the axes training mirrors
        counts = flips_per_case(args.holdout, patch, mirror_axes)
        flips = statistics.mean(counts)
        result["cases"] = len(counts)
        result["flips_per_case"] = round(flips, 3)
        for key, seconds in per_flip.items():
            result[key.replace("_s", "_per_case_s")] = round(seconds * flips, 3)

    print("| layer | shape | GFLOP | ms | GFLOP/s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layer']} | {r['shape']} | {r['gflop']:.2f} | {r['ms']:.1f} | "
              f"{r['gflops']:.0f} |")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
