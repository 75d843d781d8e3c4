"""Seconds per training iteration of nnU-Net v2's own trainer, for benchmarks/train_speed.py.

Not part of segflow: runs with the nnU-Net virtual environment's Python (never a segflow
dependency), with ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` set by the
caller. Builds ``nnUNetTrainer`` for fold 0 of a configuration on the CPU exactly as
``nnUNetv2_train -device cpu`` does (torch threads = the CPUs; nnU-Net's own choice of
augmentation processes unless ``nnUNet_n_proc_DA`` says otherwise), starts its data loaders,
and times ``train_step``:

* ``with_loading``: each step takes the next batch from nnU-Net's background augmenter, as in
  its training loop;
* ``without_loading``: every step trains on the same, already made batch.

Prints one JSON line with the per-iteration seconds (median of ``--iterations`` after
``--warmup``).

Usage (from benchmarks/train_speed.py)::

    /tmp/nnunet-venv/bin/python benchmarks/nnunet_train_step.py --dataset Dataset004_Hippocampus \
        --configuration 3d_fullres --iterations 3 --warmup 1
"""

import argparse
import json
import multiprocessing
import os
import statistics
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def timed(step, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="DatasetXXX_Name, preprocessed")
    parser.add_argument("--configuration", required=True)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    # What nnUNetv2_train does for -device cpu.
    torch.set_num_threads(multiprocessing.cpu_count())
    folder = os.path.join(os.environ["nnUNet_preprocessed"], args.dataset)  # noqa: SIM112
    plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
    dataset_json = load_json(os.path.join(folder, "dataset.json"))
    plans["continue_training"] = False  # what nnUNetv2_train's loader adds (2.8.1)
    trainer = nnUNetTrainer(plans, args.configuration, 0, dataset_json, device=torch.device("cpu"))
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    try:
        loader = trainer.dataloader_train
        timed(lambda: trainer.train_step(next(loader)), args.warmup)
        with_loading = timed(lambda: trainer.train_step(next(loader)), args.iterations)
        batch = next(loader)
        without_loading = timed(lambda: trainer.train_step(batch), args.iterations)
    finally:
        for augmenter in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(augmenter, "_finish"):
                augmenter._finish()
    conf = plans["configurations"][args.configuration]
    print(
        json.dumps(
            {
                "tool": "nnunet",
                "configuration": args.configuration,
                "patch_size": conf["patch_size"],
                "batch_size": conf["batch_size"],
                "threads": torch.get_num_threads(),
                "augmentation_processes": int(os.environ.get("nnUNet_n_proc_DA", "0"))  # noqa: SIM112
                or min(12, os.cpu_count()),
                "with_loading_s": round(statistics.median(with_loading), 3),
                "without_loading_s": round(statistics.median(without_loading), 3),
                "with_loading_all_s": [round(t, 3) for t in with_loading],
                "without_loading_all_s": [round(t, 3) for t in without_loading],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
