"""Prediction speed and memory on the held-out Hippocampus cases: segflow vs nnU-Net v2.

Each tool predicts the 40 held-out test cases (``imagesTs`` of the holdout made by
benchmarks/train_vs_nnunet.py) with its own fold-0 3d_fullres model trained there (same plans:
patch 40x56x40, the same 4-stage U-Net), once with test-time mirroring and once without:

* segflow: ``segflow predict -i imagesTs -o OUT -m <segflow results>/models/3d_fullres -f 0``,
  one case at a time with every thread (``--jobs 1``) and, for each other value of
  ``--segflow-jobs``, that many cases at a time in processes sharing the threads; with
  ``--segflow-bf16`` each of these also with ``--precision bfloat16`` (for CPUs with native
  bf16); the default backend (``auto``) unless ``--segflow-backend`` names one
  (benchmarks/deploy_speed.py compares the backends);
* nnU-Net v2: ``nnUNetv2_predict ... -f 0 -chk checkpoint_final.pth [--disable_tta]``, with
  ``-npp 1 -nps 1`` (one preprocessing and one export worker, as suits 2 CPUs).

Both run on the CPU with the machine's threads. Reported per run: wall seconds (model loading
included) and seconds per case, the peak summed RSS of the process tree (sampled each 0.2 s),
and the mean Dice per class of the predictions against ``labelsTs`` (computed by segflow's
evaluation for both). Prints one JSON line per run and a Markdown table.

Example::

    .venv/bin/python benchmarks/predict_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from common import NNUNET_TRAINER, add_holdout_model, run_measured

TRAINER = NNUNET_TRAINER


def _dice(holdout: Path, predictions: Path) -> dict[str, float]:
    from segflow.evaluation.evaluate import evaluate_files, summarize
    from segflow.io.dataset import load_dataset_json

    dataset = load_dataset_json(holdout / "dataset.json")
    ending = dataset.file_ending
    cases = sorted(p.name[: -len(ending)] for p in (holdout / "labelsTs").glob(f"*{ending}"))
    rows = evaluate_files(
        [(c, holdout / "labelsTs" / f"{c}{ending}", predictions / f"{c}{ending}") for c in cases],
        dataset,
    )
    summary = summarize(rows)
    return {k: round(v["dice"], 4) for k, v in summary["mean"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_holdout_model(parser)
    parser.add_argument("--nnunet-work", type=Path, default=Path("/tmp/nnunet_ho"))
    parser.add_argument("--nnunet-bin", type=Path, default=Path("/tmp/nnunet-venv/bin"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/predict_speed"))
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument("--segflow-jobs", type=int, nargs="+", default=[1, 2],
                        help="segflow predict --jobs values to measure")  # fmt: skip
    parser.add_argument("--segflow-bf16", action="store_true",
                        help="also measure segflow predict --precision bfloat16 (for CPUs "
                             "with native bf16; float32 elsewhere)")  # fmt: skip
    parser.add_argument("--segflow-backend", default="auto",
                        help="segflow predict --backend (default: auto)")  # fmt: skip
    args = parser.parse_args()

    holdout = args.holdout.absolute()
    images = holdout / "imagesTs"
    num_cases = len(list(images.glob("*_0000.nii.gz")))
    threads = len(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []
    for mirroring in (True, False):
        tag = "mirroring" if mirroring else "no_mirroring"
        precisions = [False, True] if args.segflow_bf16 else [False]
        runs = [(
            ("segflow" if jobs == 1 else f"segflow --jobs {jobs}")
            + (" bfloat16" if bf16 else ""),
            [
                sys.executable, "-m", "segflow", "predict", "-i", str(images),
                "-o", str(args.out / f"segflow_{jobs}_{tag}{'_bf16' if bf16 else ''}"),
                "-m", str(args.segflow_model), "-f", "0", "--device", "cpu",
                "--threads", str(threads), "--jobs", str(jobs),
                "--backend", args.segflow_backend,
                *([] if mirroring else ["--no-mirroring"]),
                *(["--precision", "bfloat16"] if bf16 else []),
            ],
            None,
        ) for bf16 in precisions for jobs in args.segflow_jobs]  # fmt: skip
        if not args.skip_nnunet:
            env = dict(
                os.environ,
                nnUNet_raw=str(args.nnunet_work / "raw"),
                nnUNet_preprocessed=str(args.nnunet_work / "pre"),
                nnUNet_results=str(args.nnunet_work / "res"),
            )
            runs.append(("nnunet", [
                str(args.nnunet_bin / "nnUNetv2_predict"), "-i", str(images),
                "-o", str(args.out / f"nnunet_{tag}"), "-d", holdout.name, "-c", "3d_fullres",
                "-f", "0", "-tr", TRAINER, "-chk", "checkpoint_final.pth", "-device", "cpu",
                "-npp", "1", "-nps", "1", *([] if mirroring else ["--disable_tta"]),
            ], env))  # fmt: skip
        for tool, cmd, env in runs:
            out = Path(cmd[cmd.index("-o") + 1])
            shutil.rmtree(out, ignore_errors=True)
            measured = run_measured(cmd, env, interval=0.2)
            wall, peak = measured.wall, measured.peak
            row = {
                "tool": tool,
                "mirroring": mirroring,
                "cases": num_cases,
                "wall_s": round(wall, 1),
                "seconds_per_case": round(wall / num_cases, 2),
                "peak_rss_gb": round(peak / 1024**3, 2),
                "dice": _dice(holdout, out),
                "threads": threads,
                "load_avg_after": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    print("\n| tool | mirroring | s/case | peak RSS (GB) | Dice per class |")
    print("|---|---|---|---|---|")
    for r in rows:
        dice = ", ".join(f"{k} {v:.4f}" for k, v in r["dice"].items())
        print(f"| {r['tool']} | {'on' if r['mirroring'] else 'off'} | "
              f"{r['seconds_per_case']:.2f} | {r['peak_rss_gb']:.2f} | {dice} |")  # fmt: skip
    for mirroring in (True, False):
        by_tool = {r["tool"]: r for r in rows if r["mirroring"] == mirroring}
        reference = by_tool.pop("nnunet", None)
        if reference is None:
            continue
        for tool, row in by_tool.items():
            ratio = reference["seconds_per_case"] / row["seconds_per_case"]
            memory = row["peak_rss_gb"] / reference["peak_rss_gb"]
            print(f"mirroring {'on' if mirroring else 'off'}: {tool} {ratio:.2f}x faster per "
                  f"case than nnU-Net, at {memory:.2f}x its peak RSS")  # fmt: skip


if __name__ == "__main__":
    main()
