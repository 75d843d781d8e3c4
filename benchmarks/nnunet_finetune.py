"""Fine-tuning from nnU-Net v2's checkpoint against training from scratch, same budget.

Runs on the work folder of ``benchmarks/nnunet_interop.py`` once nnU-Net has trained its
``3d_fullres`` fold (``--fold``, default 0); nnU-Net itself is not run here:

1. the fold's validation cases are nnU-Net's own (its ``splits_final.json``, which
   ``segflow train`` reads as it is): the checkpoint never trained on them (checked and
   printed), and none is a held-out test case;
   segflow's default folds of these cases are nnU-Net's (checked and printed);
2. nnU-Net's plans, converted (``segflow import-nnunet`` of that fold: the imported model's
   ``plans.json``, also a model ``segflow predict`` takes), preprocess the fold's cases in
   segflow (``segflow preprocess``);
3. ``segflow train`` of the fold twice with the same seed and budget (``--epochs`` x
   ``--iterations``, ``--val-iterations`` validation batches per epoch): from scratch, and
   with ``--pretrained-weights`` = nnU-Net's ``checkpoint_final.pth`` (every layer but the
   segmentation heads, as nnU-Net's own fine-tuning).

4. ``segflow validate-fold`` of both final checkpoints: the fold's validation cases
   predicted whole (test-time mirroring) and scored;
5. ``segflow crossval``, ``segflow select``, ``segflow postprocess`` and ``segflow export``
   of the fine-tuned fold, as the workflow runs them: a segflow-trained
   Hippocampus model (``finetune/model``) for the way back of ``benchmarks/nnunet_interop.py``
   (``--export-model``).

Prints one JSON line (``--result FILE`` also writes it): the mean pseudo Dice of the
foreground classes on the validation batches after each epoch (the first is "the first
validation Dice"), per class, for both runs, the fold's validation Dice of each final
checkpoint, and their seconds.

Example (a few minutes on 2 busy CPU cores)::

    .venv/bin/python benchmarks/nnunet_finetune.py --work /tmp/nnunet_interop_full \\
        --epochs 1 --iterations 10 --val-iterations 10
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import emit

logger = logging.getLogger("nnunet_finetune")

DATASET = "Dataset004_Hippocampus"
TRAINER = "nnUNetTrainer_segflowShort"
CONFIGURATION = "3d_fullres"


def segflow(*argv: str) -> float:
    """Run ``segflow`` with this Python; its wall time in seconds."""
    command = [sys.executable, "-m", "segflow", *argv]
    logger.info("+ %s", " ".join(command))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - start


def pseudo_dice(out_dir: Path) -> list[dict[str, float]]:
    """The epochs' validation pseudo Dice from ``progress.csv``."""
    with open(out_dir / "progress.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {k: round(float(v), 4) for k, v in row.items() if "pseudo_dice" in k or k == "val_loss"}
        for row in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="nnunet_interop.py's --work")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--val-iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--result", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    work = args.work.absolute()
    raw = work / "raw" / DATASET
    source = work / "results" / DATASET / f"{TRAINER}__nnUNetPlans__{CONFIGURATION}"
    checkpoint = source / f"fold_{args.fold}" / "checkpoint_final.pth"
    splits = work / "pre" / DATASET / "splits_final.json"
    for path in (checkpoint, splits, raw / "dataset.json"):
        if not path.is_file():
            raise SystemExit(f"{path}: missing (run benchmarks/nnunet_interop.py first)")

    folds = json.loads(splits.read_text())
    train, val = folds[args.fold]["train"], folds[args.fold]["val"]
    test = {p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTs").glob("*_0000.nii.gz")}
    overlap = sorted((set(train) | test) & set(val))
    if overlap:
        raise SystemExit(f"validation cases nnU-Net trained on or held out: {overlap}")
    # segflow's own folds (seed 12345, 5 folds over the sorted case ids) are nnU-Net's.
    from segflow.training.splits import kfold_splits

    ours = kfold_splits(sorted(train + val), len(folds), 12345)
    same = [sorted(a["val"]) == sorted(b["val"]) for a, b in zip(ours, folds, strict=True)]
    result: dict[str, Any] = {
        "segflow_default_folds_equal_nnunets": all(same),
        "benchmark": "nnunet_finetune", "fold": args.fold, "epochs": args.epochs,
        "iterations": args.iterations, "val_iterations": args.val_iterations, "seed": args.seed,
        "checkpoint": str(checkpoint), "train_cases": len(train), "val_cases": len(val),
        "val_cases_nnunet_trained_on": 0,
    }  # fmt: skip

    out = work / "finetune"
    model = out / "imported_3d_fullres"
    if not (model / "manifest.json").is_file():
        shutil.rmtree(model, ignore_errors=True)
        result["import_seconds"] = round(
            segflow("import-nnunet", str(source), "-f", str(args.fold), "-o", str(model)), 1
        )
    plans = model / "plans.json"
    pre = out / "preprocessed" / CONFIGURATION
    cases = [
        {"case_id": c, "images": [str(raw / "imagesTr" / f"{c}_0000.nii.gz")],
         "label": str(raw / "labelsTr" / f"{c}.nii.gz")}
        for c in sorted(train + val)
    ]  # fmt: skip
    if not (pre / "manifest.json").is_file():
        cases_file = out / "cases.json"
        cases_file.parent.mkdir(parents=True, exist_ok=True)
        cases_file.write_text(json.dumps(cases))
        argv = ["preprocess", "--plans", str(plans), "--configuration", CONFIGURATION,
                "--dataset-json", str(raw / "dataset.json"), "--cases-file", str(cases_file),
                "--workers", str(args.threads), "--out-dir", str(pre),
                "--manifest", str(pre / "manifest.json")]  # fmt: skip
        result["preprocess_seconds"] = round(segflow(*argv), 1)
    runs = {"scratch": [], "nnunet_checkpoint": ["--pretrained-weights", str(checkpoint)]}
    for name, extra in runs.items():
        out_dir = out / name
        shutil.rmtree(out_dir, ignore_errors=True)
        seconds = segflow(
            "train", "--plans", str(plans), "--configuration", CONFIGURATION,
            "--fold", str(args.fold), "--dataset-json", str(raw / "dataset.json"),
            "--splits", str(splits), "--preprocessed", str(pre), "--out-dir", str(out_dir),
            "--epochs", str(args.epochs), "--iterations-per-epoch", str(args.iterations),
            "--val-iterations-per-epoch", str(args.val_iterations), "--seed", str(args.seed),
            "--device", "cpu", "--threads", str(args.threads), *extra,
        )  # fmt: skip
        epochs = pseudo_dice(out_dir)
        result[name] = {"seconds": round(seconds, 1), "first_val_pseudo_dice": epochs[0],
                        "epochs": epochs}  # fmt: skip
    report = out / "dataset_report.json"
    if not report.is_file():
        segflow("validate-dataset", "--dataset", str(raw), "--out", str(report))
    # The fine-tuned fold's validation where the workflow keeps it (crossval/<c>/fold_<k>),
    # which segflow select reads.
    crossval = out / "crossval" / CONFIGURATION
    for folder in (out / "validation", out / "crossval", out / "models", out / "model"):
        shutil.rmtree(folder, ignore_errors=True)
    folders = {"scratch": out / "validation" / "scratch",
               "nnunet_checkpoint": crossval / f"fold_{args.fold}"}  # fmt: skip
    for name, validation in folders.items():
        checkpoint_final = out / name / "checkpoint_final.pt"
        seconds = segflow(
            "validate-fold", "--plans", str(plans), "--configuration", CONFIGURATION,
            "--fold", str(args.fold), "--dataset-json", str(raw / "dataset.json"),
            "--dataset-report", str(report), "--splits", str(splits), "--preprocessed", str(pre),
            "--checkpoint", str(checkpoint_final), "--out-dir", str(validation),
            "--device", "cpu", "--threads", str(args.threads), "--backend", "torch",
        )  # fmt: skip
        fold_summary = json.loads((validation / "summary.json").read_text())
        result[name]["validation"] = {
            "seconds": round(seconds, 1), "cases": fold_summary["num_cases"],
            "mean_foreground_dice": round(fold_summary["mean_foreground_dice"], 4),
        }  # fmt: skip
    # The fine-tuned fold as an exported segflow model (trained by segflow, from nnU-Net's
    # weights), for the way back of benchmarks/nnunet_interop.py (--export-model).
    models = out / "models" / CONFIGURATION / f"fold_{args.fold}"
    models.mkdir(parents=True)
    shutil.copy(out / "nnunet_checkpoint" / "checkpoint_final.pt", models / "checkpoint_final.pt")
    segflow("crossval", "--configuration", CONFIGURATION, "--fold-metrics",
            str(crossval / f"fold_{args.fold}" / "metrics.csv"), "--checkpoints",
            str(models / "checkpoint_final.pt"), "--out-dir", str(crossval))  # fmt: skip
    segflow("select", "--crossval", str(crossval), "--dataset-json", str(raw / "dataset.json"),
            "--dataset-report", str(report), "--out", str(out / "selection.json"),
            "--predictions-out", str(out / "crossval" / "selected"))  # fmt: skip
    segflow("postprocess", "--predictions", str(out / "crossval" / "selected"), "--references",
            str(raw / "labelsTr"), "--dataset-json", str(raw / "dataset.json"), "--out",
            str(out / "postprocessing.json"))  # fmt: skip
    segflow("export", "--dataset-json", str(raw / "dataset.json"), "--plans", str(plans),
            "--fingerprint", str(model / "fingerprint.json"), "--selection",
            str(out / "selection.json"), "--postprocessing",
            str(out / "postprocessing.json"), "--models", str(out / "models"), "--crossval",
            str(out / "crossval"), "--out", str(out / "model"))  # fmt: skip
    result["exported_model"] = str(out / "model")
    summary = source / f"fold_{args.fold}" / "validation" / "summary.json"
    if summary.is_file():  # nnU-Net's own score of its checkpoint on these cases
        result["nnunet_fold_validation_dice"] = json.loads(summary.read_text())["foreground_mean"][
            "Dice"
        ]
    emit(result, args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
