"""CPU training speed of the Hippocampus U-Nets: float32, bfloat16 autocast, channels-last, threads.

Times one training iteration's forward and backward pass (deep supervision on, a loss over
every output; no optimizer step) of the 3d_fullres and 2d networks that the plans give
Hippocampus, at the planned patch and batch size, for each setting:

* ``float32``: the default;
* ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward and the loss;
* ``channels_last`` (``channels_last_3d`` in 3D), in float32 and with bf16 autocast;
* ``*_torch_instance_norm``: with PyTorch's ``nn.InstanceNorm{2,3}d`` in place of segflow's
  (which computes the same function as a group normalization on the CPU), to measure that;
* each at ``torch.set_num_threads(1)`` and ``(2)``.

With ``--reuse-freed-memory`` the whole run has glibc's malloc keep freed memory for reuse, as
segflow's training and prediction set it on the CPU (:func:`segflow.compute.reuse_freed_memory`);
without it the allocator is glibc's default, as in nnU-Net. Run the benchmark both ways to
measure that setting (it is process-wide and cannot be undone within one run).

Each setting runs ``--warmup`` untimed iterations and reports the median of ``--iterations``
timed ones. The plans come from ``--plans`` (default: results/Dataset004_Hippocampus/plans.json)
or, if that file is missing, are planned from the shared Hippocampus dataset. One JSON line.

Example::

    .venv/bin/python benchmarks/network_speed.py --iterations 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from common import DEFAULT_PLANS, NUM_OUTPUTS, cpu_name, hippocampus_plans

from segflow.networks import build_network
from segflow.planning import ConfigurationPlan

#: name: (bf16 autocast, channels-last, PyTorch's own InstanceNorm layers)
SETTINGS = {
    "float32": (False, False, False),
    "bf16": (True, False, False),
    "channels_last_float32": (False, True, False),
    "channels_last_bf16": (True, True, False),
    "float32_torch_instance_norm": (False, False, True),
    "channels_last_float32_torch_instance_norm": (False, True, True),
}


def time_setting(
    conf: ConfigurationPlan,
    batch_size: int,
    bf16: bool,
    channels_last: bool,
    torch_norm: bool,
    threads: int,
    warmup: int,
    iterations: int,
) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(conf, 1, NUM_OUTPUTS, deep_supervision=True)
    if torch_norm:
        _use_torch_instance_norm(net)
    x = torch.randn(batch_size, 1, *conf.patch_size)
    if channels_last:
        fmt = torch.channels_last if conf.ndim == 2 else torch.channels_last_3d
        net = net.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    times = []
    for i in range(warmup + iterations):
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            outputs = net(x)
            loss = sum(o.float().square().mean() for o in outputs)
        loss.backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _use_torch_instance_norm(module: torch.nn.Module) -> None:
    """Replace segflow's instance normalization layers by PyTorch's (same parameters)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.instancenorm._InstanceNorm):
            kind = (
                torch.nn.InstanceNorm3d
                if isinstance(child, torch.nn.InstanceNorm3d)
                else torch.nn.InstanceNorm2d
            )
            plain = kind(child.num_features, eps=child.eps, affine=child.affine)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _use_torch_instance_norm(child)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=Path, default=DEFAULT_PLANS)
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="override the planned batch size")
    parser.add_argument(
        "--reuse-freed-memory", action="store_true",
        help="keep freed memory for reuse, as segflow's stages do on the CPU",
    )  # fmt: skip
    args = parser.parse_args(argv)
    reused = False
    if args.reuse_freed_memory:
        from segflow.compute import reuse_freed_memory

        reused = reuse_freed_memory()
        if not reused:
            parser.error("--reuse-freed-memory: not available here (glibc only) or turned off")

    plans = hippocampus_plans(args.plans)
    results = {}
    for name in args.configurations:
        conf = plans.configuration(name)
        batch = args.batch_size or conf.batch_size
        row = {"patch_size": list(conf.patch_size), "batch_size": batch, "seconds": {}}
        for threads in args.threads:
            for setting in args.settings:
                bf16, channels_last, torch_norm = SETTINGS[setting]
                seconds = time_setting(
                    conf, batch, bf16, channels_last, torch_norm, threads, args.warmup,
                    args.iterations,
                )  # fmt: skip
                row["seconds"][f"{setting}_threads{threads}"] = round(seconds, 3)
                print(f"{name} {setting} threads={threads}: {seconds:.3f} s", file=sys.stderr)
        results[name] = row
    print(
        json.dumps(
            {
                "benchmark": "network_speed",
                "what": "forward+backward seconds per iteration (median), deep supervision on",
                "torch": torch.__version__,
                "cpu": cpu_name(),
                "warmup": args.warmup,
                "iterations": args.iterations,
                "reuse_freed_memory": reused,
                # Other jobs share the cores: the 1-minute load average at the end says how much.
                "load_average_1min": round(os.getloadavg()[0], 2),
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
