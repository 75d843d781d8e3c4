"""What bfloat16 prediction (``segflow predict --precision bfloat16``) changes: Dice, voxels.

Predicts held-out Hippocampus test cases with the fold-0 3d_fullres model of the training
comparison twice, in float32 and with ``--precision bfloat16 --backend torch`` (bfloat16
autocast; the windows' logits are summed in float32 either way), and prints per case and
in the mean: the Dice of each against ``labelsTs``, how many voxels of the two
segmentations differ, and the largest difference of their probabilities; plus each run's
wall time. One JSON line, then a table.

(Since issue 29 a CPU without native bf16 predicts in float32 instead: this measurement
needs one that has it.) Emulated bf16 took about 100 s per network evaluation of a 40x56x40
window, so by default it takes the first ``--cases`` test images
that fit in one window, without mirroring (``--mirroring`` for 8 evaluations a window).
The emulation rounds operands and results to bfloat16 as native kernels do, so the effect on
the segmentations measured here is indicative of theirs; its speed is not.

Example::

    .venv/bin/python benchmarks/bf16_prediction.py --cases 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import add_holdout_model, emit, windows_of

from segflow.evaluation.evaluate import evaluate_labels
from segflow.inference.export import load_probabilities
from segflow.io.image import read_image

PATCH = (40, 56, 40)  # the Hippocampus 3d_fullres patch
CLASSES = {"Anterior": 1, "Posterior": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_holdout_model(parser)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bf16_prediction"))
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--mirroring", action="store_true")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    images = sorted((args.holdout / "imagesTs").glob("*_0000.nii.gz"))
    chosen = [p for p in images if windows_of(p, PATCH) == 1][: args.cases]
    inputs = args.out / "images"
    shutil.rmtree(args.out, ignore_errors=True)
    inputs.mkdir(parents=True)
    for path in chosen:
        (inputs / path.name).symlink_to(path.absolute())
    seconds = {}
    for name, extra in (("float32", []), ("bf16", ["--precision", "bfloat16"])):
        cmd = [
            sys.executable, "-m", "segflow", "predict", "-i", str(inputs),
            "-o", str(args.out / name), "-m", str(args.segflow_model), "-f", "0",
            "--device", "cpu", "--threads", str(args.threads), "--save-probabilities",
            "--backend", "torch",
            *([] if args.mirroring else ["--no-mirroring"]), *extra,
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds[name] = round(time.perf_counter() - start, 1)

    rows = []
    for path in chosen:
        case = path.name[: -len("_0000.nii.gz")]
        reference = read_image(args.holdout / "labelsTs" / f"{case}.nii.gz")
        seg = {n: read_image(args.out / n / f"{case}.nii.gz").array for n in seconds}
        prob = {n: load_probabilities(args.out / n / f"{case}.npz")[0] for n in seconds}
        rows.append({
            "case": case,
            "voxels": int(reference.array.size),
            "differing_voxels": int((seg["float32"] != seg["bf16"]).sum()),
            "max_probability_difference": round(
                float(np.abs(prob["float32"] - prob["bf16"]).max()), 4
            ),
            **{f"dice_{n}": [round(m["dice"], 4)
                             for m in evaluate_labels(reference, seg[n][0], CLASSES).values()]
               for n in seconds},
        })  # fmt: skip
    summary = {
        "benchmark": "bf16_prediction",
        "cases": len(rows),
        "mirroring": args.mirroring,
        "seconds": seconds,
        "differing_voxels": sum(r["differing_voxels"] for r in rows),
        "voxels": sum(r["voxels"] for r in rows),
        "max_probability_difference": max(r["max_probability_difference"] for r in rows),
        **{f"mean_dice_{n}": [round(float(np.mean([r[f"dice_{n}"][k] for r in rows])), 4)
                              for k in (0, 1)] for n in seconds},
    }  # fmt: skip
    emit(summary)
    print("\n| case | Dice float32 | Dice bf16 | differing voxels | max prob. difference |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['dice_float32']} | {r['dice_bf16']} | "
              f"{r['differing_voxels']} of {r['voxels']} | "
              f"{r['max_probability_difference']} |")  # fmt: skip


if __name__ == "__main__":
    main()
