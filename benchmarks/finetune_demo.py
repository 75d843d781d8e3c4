"""Fine-tuning demonstration: pretrain on one dataset, fine-tune on another, against training
from scratch for the same number of iterations.

Through the workflow (Snakemake, the repository's Snakefile), on CPU:

1. pretraining: the synthetic demo dataset (``segflow.demo``, seed 0, ``--source-cases``),
   3d_fullres fold 0, ``--pretrain-epochs`` x ``--iterations`` iterations;
2. the target: a second synthetic demo dataset (seed 1, only ``--target-cases`` cases: the
   data-scarce case fine-tuning is for), planned with ``planning.plans_from`` = the source's
   plans (``segflow move-plans``: the source's topology, patch and spacing; the target's
   normalization and intensities);
3. fold 0 of the target trained for ``--finetune-epochs`` x ``--iterations`` iterations twice:
   from scratch, and with ``training.pretrained_weights`` = the pretraining's
   ``checkpoint_final.pt`` (every layer but the heads).

Prints the validation Dice of fold 0 of both (the workflow's cross-validation of that fold:
sliding-window prediction of its held-out cases, without mirroring) as one JSON line.

Why not Hippocampus as the target: its voxels are 1 mm isotropic and its images 36x50x35,
while the demo's are 3-3.6 mm x 1 mm; the demo's moved plans would resample Hippocampus to
3.3 mm slices (a third of its slices), and preprocessing its 200 cases takes longer than this
demonstration's budget on a small CPU. ``--source`` and ``--target`` take any raw datasets
with one channel (e.g. ``--source /work/shared/data/Dataset004_Hippocampus``) for a longer run.

Example (a few minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/finetune_demo.py --work /tmp/finetune_demo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def _snakemake(work: Path, config: dict[str, Any], target: Path, cores: int) -> float:
    """Run the workflow to ``target``; the seconds it took."""
    config_file = work / f"{Path(config['results']).name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "snakemake", str(target), "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(work), "--cores", str(cores), "--configfile", str(config_file),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed for {target}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def _config(dataset: Path, results: Path, folds: int, epochs: int, iterations: int) -> dict:
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": {"gpu_memory_target_gb": 0.5, "base_features": 8},
        "splits": {"num_folds": folds},
        "training": {
            "configurations": ["3d_fullres"],
            "folds": [0],
            "epochs": epochs,
            "iterations_per_epoch": iterations,
            "val_iterations_per_epoch": 2,
            "checkpoint_every": epochs,
            "threads": 2,
            "deterministic": True,
        },
        "inference": {"mirroring": False, "threads": 2},
    }


def _fold_summary(results: Path) -> Path:
    return results / "crossval" / "3d_fullres" / "fold_0" / "summary.json"


def _fold_dice(results: Path) -> dict[str, Any]:
    summary = json.loads(
        (results / "crossval" / "3d_fullres" / "fold_0" / "summary.json").read_text()
    )
    return {
        "mean_foreground_dice": summary["mean_foreground_dice"],
        "dice": {name: summary["mean"][name]["dice"] for name in summary["classes"]},
        "cases": summary["num_cases"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder")
    parser.add_argument("--source", type=Path, default=None, help="raw dataset (default: demo)")
    parser.add_argument("--target", type=Path, default=None, help="raw dataset (default: demo)")
    parser.add_argument("--source-cases", type=int, default=12)
    parser.add_argument("--target-cases", type=int, default=8)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20, help="iterations per epoch")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()

    from segflow.demo import make_demo_dataset

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = args.source or make_demo_dataset(
        work / "raw" / "Dataset990_Source", num_training=args.source_cases, num_test=0, seed=0
    )
    target = args.target or make_demo_dataset(
        work / "raw" / "Dataset991_Target", num_training=args.target_cases, num_test=0, seed=1
    )
    seconds = {}
    pretraining = work / "pretraining"
    config = _config(source, pretraining, 4, args.pretrain_epochs, args.iterations)
    seconds["pretraining"] = _snakemake(
        work,
        config,
        pretraining / "crossval" / "3d_fullres" / "fold_0" / "summary.json",
        args.cores,
    )
    checkpoint = pretraining / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    runs = {}
    for name, weights in (("scratch", None), ("finetuned", checkpoint)):
        results = work / name
        config = _config(target, results, 2, args.finetune_epochs, args.iterations)
        config["planning"]["plans_from"] = str(pretraining / "plans.json")
        if weights is not None:
            config["training"]["pretrained_weights"] = str(weights)
        seconds[name] = _snakemake(
            work, config, _fold_summary(results),
            args.cores,
        )  # fmt: skip
        runs[name] = _fold_dice(results)
    print(
        json.dumps(
            {
                "benchmark": "finetune_demo",
                "source": str(source.name),
                "target": str(target.name),
                "pretraining": _fold_dice(pretraining),
                "pretraining_iterations": args.pretrain_epochs * args.iterations,
                "iterations": args.finetune_epochs * args.iterations,
                "scratch": runs["scratch"],
                "finetuned": runs["finetuned"],
                "seconds": {k: round(v, 1) for k, v in seconds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
