"""Seconds per training batch (patch drawing and augmentation) for Hippocampus, segflow vs nnU-Net.

For each configuration (3d_fullres, 2d) at its planned patch and batch size, times training
batches made in this process by :class:`segflow.training.dataloading.TrainingBatches` (fold 0's
training cases), and, with ``--nnunet-preprocessed``, the same with nnU-Net v2's
``nnUNetDataLoader`` and ``nnUNetTrainer.get_training_transforms`` run by the Python of
``--nnunet-python`` on nnU-Net's own preprocessed data. nnU-Net's transforms are built without
deep-supervision targets (segflow makes those on the device, in the loss) and its loader limits
itself to one thread, as segflow's computations are; both run with one torch thread.

``--overlap`` also times the reason behind :func:`segflow.training.dataloading.workers_for` on
a small machine: CPU training iterations (forward, backward, SGD step of the planned 3d_fullres
network, torch using every CPU of the job) with the batches made in the training process, and
with one background worker making them (the measurement behind giving 2 CPUs one worker).

Prepare the data first (segflow's preprocessing into ``--results``), e.g.::

    .venv/bin/snakemake --cores 2 --configfile config/hippocampus.yaml \\
        --config results=/tmp/hc_results
    .venv/bin/python benchmarks/dataloading_speed.py --results /tmp/hc_results \\
        --nnunet-preprocessed /tmp/nnunet/pre/Dataset004_Hippocampus --overlap

One JSON line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from segflow.io.atomic import read_json
from segflow.planning.plans import load_plans
from segflow.training.dataloading import TrainingBatches, batch_loader

# Run by nnU-Net's Python: one configuration, its planned patch and batch size, fold 0 of
# segflow's splits (the same cases), timing generate_train_batch.
_NNUNET_SCRIPT = r"""
import json, sys, time, statistics
import numpy as np, torch
torch.set_num_threads(1)
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

root, name, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
warmup, batches = int(sys.argv[4]), int(sys.argv[5])
plans = PlansManager(root + "/nnUNetPlans.json")
conf = plans.get_configuration(name)
labels = plans.get_label_manager(load_json(root + "/dataset.json"))
patch = conf.patch_size
dim = len(patch)
# nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size, without a trainer
if dim == 2:
    dummy = False
    angle = 15. if max(patch) / min(patch) > 1.5 else 180.
    mirror = (0, 1)
else:
    dummy = max(patch) / patch[0] > ANISO_THRESHOLD
    angle = 180. if dummy else 30.
    mirror = (0, 1, 2)
rotation = (-angle / 360 * 2. * np.pi, angle / 360 * 2. * np.pi)
initial = get_patch_size(patch[-dim:], rotation, rotation, rotation, (0.85, 1.25))
if dummy:
    initial[0] = patch[0]
transforms = nnUNetTrainer.get_training_transforms(
    patch, rotation, None, mirror, dummy, use_mask_for_norm=conf.use_mask_for_norm,
    is_cascaded=False, foreground_labels=labels.foreground_labels, regions=None,
    ignore_label=labels.ignore_label)
dataset = nnUNetDatasetBlosc2(root + "/" + conf.data_identifier, cases)
loader = nnUNetDataLoader(dataset, conf.batch_size, initial, patch, labels,
                          oversample_foreground_percent=0.33, transforms=transforms)
np.random.seed(0)
times = []
for i in range(warmup + batches):
    start = time.perf_counter()
    batch = loader.generate_train_batch()
    if i >= warmup:
        times.append(time.perf_counter() - start)
print(json.dumps({"initial_patch_size": [int(i) for i in initial], "batch_size": conf.batch_size,
                  "data_shape": list(batch["data"].shape),
                  "mean": statistics.mean(times), "median": statistics.median(times)}))
"""


def time_segflow(batches: TrainingBatches, warmup: int, count: int) -> dict[str, float]:
    times = []
    for k in range(warmup + count):
        start = time.perf_counter()
        batches[k]
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return {"mean": statistics.mean(times), "median": statistics.median(times)}


def time_nnunet(
    python: Path, root: Path, name: str, cases: list[str], warmup: int, count: int
) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.setdefault(key, str(root.parent))
    proc = subprocess.run(
        [str(python), "-c", _NNUNET_SCRIPT, str(root), name, json.dumps(cases), str(warmup),
         str(count)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"nnU-Net's data loader failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_overlap(
    batches: TrainingBatches, plans_path: Path, iterations: int, threads: int
) -> dict[str, float]:
    """Seconds per CPU training iteration, batches made in-process vs by one worker."""
    import torch.nn.functional as F

    from segflow.networks import build_network

    conf = load_plans(plans_path).configuration("3d_fullres")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(conf, 1, 3, deep_supervision=False)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)

    def run(num_workers: int) -> float:
        loader = batch_loader(batches, 0, iterations + 1, num_workers, prefetch=2)
        start = None
        for i, batch in enumerate(loader):
            if i == 1:  # the first iteration pays for start-up on both sides
                start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(batch["data"]), batch["target"][:, 0].long())
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / iterations

    return {"in_process": run(0), "one_worker": run(1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="segflow results folder")
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument(
        "--nnunet-preprocessed", type=Path, help="nnU-Net's preprocessed Dataset004 folder"
    )
    parser.add_argument("--nnunet-python", type=Path, default=Path("/tmp/nnunet-venv/bin/python"))
    parser.add_argument("--overlap", action="store_true", help="also time CPU training steps")
    parser.add_argument("--overlap-iterations", type=int, default=8)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    plans_path = args.results / "plans.json"
    plans = load_plans(plans_path)
    split = read_json(args.results / "splits.json")["folds"][args.fold]
    seconds: dict[str, dict] = {}
    for name in args.configurations:
        conf = plans.configuration(name)
        batches = TrainingBatches.from_configuration(
            args.results / "preprocessed" / name, conf, split["train"], seed=plans.seed, fold=0
        )
        row = {
            "patch_size": list(conf.patch_size),
            "initial_patch_size": list(batches.sampler.patch_size),
            "batch_size": conf.batch_size,
            "segflow": time_segflow(batches, args.warmup, args.batches),
        }
        print(f"{name} segflow: {row['segflow']}", file=sys.stderr)
        if args.nnunet_preprocessed is not None:
            row["nnunet"] = time_nnunet(
                args.nnunet_python,
                args.nnunet_preprocessed,
                name,
                split["train"],
                args.warmup,
                args.batches,
            )
            print(f"{name} nnU-Net: {row['nnunet']}", file=sys.stderr)
        seconds[name] = row
    result = {
        "benchmark": "dataloading_speed",
        "what": "seconds per training batch made in-process (mean, median), augmentation included",
        "cpus": len(os.sched_getaffinity(0)),
        "batches": args.batches,
        "results": seconds,
    }
    if args.overlap:
        cpus = len(os.sched_getaffinity(0))
        batches = TrainingBatches.from_configuration(
            args.results / "preprocessed" / "3d_fullres",
            plans.configuration("3d_fullres"),
            split["train"],
            seed=plans.seed,
            fold=0,
        )
        result["cpu_training_seconds_per_iteration"] = {
            "threads": cpus,
            **time_overlap(batches, plans_path, args.overlap_iterations, cpus),
        }
        print(f"overlap: {result['cpu_training_seconds_per_iteration']}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
