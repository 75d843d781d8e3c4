"""nnU-Net v2's trained Hippocampus model, predicted by nnU-Net and by segflow after
``segflow import-nnunet``; and the way back (``segflow export-nnunet``, predicted by nnU-Net).

nnU-Net runs in its own virtual environment (``--nnunet-bin``, see
``../shared/NNUNET_REFERENCE.md``; never a segflow dependency) on private folders under
``--work``:

1. ``segflow holdout``: ``--num-test`` of the 200 shared Hippocampus cases become the test set;
2. nnU-Net plans and preprocesses 2d and 3d_fullres, trains ``--folds`` of
   ``--configurations`` (default both; 3d_fullres first, fold by fold) with the short trainer
   of ``benchmarks/nnunet_short_trainer.py`` (``--epochs`` x ``--iterations``), and runs
   ``nnUNetv2_find_best_configuration``; a fold already trained and validated under ``--work``
   is not trained again (a stopped run resumes);
3. nnU-Net predicts the test cases as its ``inference_instructions.txt`` says (each selected
   configuration with test-time mirroring, ``nnUNetv2_ensemble`` for a pair,
   ``nnUNetv2_apply_postprocessing``), timed;
4. ``segflow import-nnunet`` of the results folder, then, timed as nnU-Net's run,
   ``segflow predict`` of the same cases (mirroring on, probabilities saved) and ``segflow
   apply-postprocessing``: both compared with nnU-Net's, before and after postprocessing;
5. ``segflow export-nnunet`` of the imported model, or of ``--export-model`` (a model
   segflow trained: ``benchmarks/nnunet_finetune.py`` exports one), into a fresh results
   folder, predicted by ``nnUNetv2_predict`` (first selected configuration, all its folds;
   the first ``--export-cases`` test cases), compared with segflow's prediction of that
   configuration; then nnU-Net's own postprocessing function, given the
   ``postprocessing.json`` export-nnunet wrote
   (``nnUNetv2_apply_postprocessing`` itself only reads a pickle, which segflow never
   writes), against segflow's postprocessing of segflow's prediction.

Per case: the fraction of equal voxels, both Dice scores against the held-out labels, and the
largest probability difference. The last line printed is one JSON summary; ``--result FILE``
also writes it. Targets (issue 28): at least 99.9 % equal voxels per case, Dice within 1e-3,
probabilities within 1e-3.

Smallest run that exercises every step (a few minutes of nnU-Net on 2 busy cores)::

    .venv/bin/python benchmarks/nnunet_interop.py --work /tmp/nnunet_interop \
        --num-test 5 --folds 0 --epochs 1 --iterations 2

The runs of docs/results/nnunet-interop.md (2d and 3d_fullres, folds 0 and 1, 200 iterations
each; about two hours on 2 quiet cores), then, once ``benchmarks/nnunet_finetune.py`` has
fine-tuned and exported a segflow model on the same folder, the way back with it::

    .venv/bin/python benchmarks/nnunet_interop.py --work /tmp/nnunet_interop_trained \
        --num-test 40 --folds 0 1 --epochs 10 --iterations 20 --result result.json
    .venv/bin/python benchmarks/nnunet_interop.py --work /tmp/nnunet_interop_trained \
        --num-test 40 --folds 0 1 --epochs 10 --iterations 20 --only-way-back \
        --export-model /tmp/nnunet_interop_trained/finetune/model --result way_back.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import emit

from segflow.holdout import make_holdout
from segflow.io.image import read_image

logger = logging.getLogger("nnunet_interop")

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "Dataset004_Hippocampus").resolve()
DATASET = "Dataset004_Hippocampus"
TRAINER = "nnUNetTrainer_segflowShort"
CONFIGURATIONS = ("2d", "3d_fullres")


def run(command: list[str], env: dict[str, str] | None = None) -> float:
    """Run ``command``; its wall time in seconds."""
    logger.info("+ %s", " ".join(command))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - start


def nnunet_env(work: Path, args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "pre"),
        "nnUNet_results": str(work / "results"),
        "SEGFLOW_NNUNET_EPOCHS": str(args.epochs),
        "SEGFLOW_NNUNET_ITERATIONS": str(args.iterations),
        "SEGFLOW_NNUNET_VAL_ITERATIONS": str(max(1, args.iterations // 4)),
        "nnUNet_n_proc_DA": str(args.threads),
        "nnUNet_def_n_proc": str(args.threads),
        "nnUNet_compile": "f",
    }


def train_nnunet(work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    bin_dir = args.nnunet_bin
    python = str(bin_dir / "python")
    code = "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"
    site = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    trainers = Path(site.stdout.strip()) / "training" / "nnUNetTrainer"
    shutil.copy(REPO / "benchmarks" / "nnunet_short_trainer.py", trainers / f"{TRAINER}.py")
    times = {}
    n = str(args.threads)
    pre = work / "pre" / DATASET
    if not all((pre / f"nnUNetPlans_{c}").is_dir() for c in CONFIGURATIONS):
        times["plan_preprocess"] = run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d",
                                        "4", "-c", *CONFIGURATIONS, "-np", n, n], env)  # fmt: skip
    # 3d_fullres fold by fold first: its first fold is usable (for example by
    # benchmarks/nnunet_finetune.py) while the others train.
    for fold in args.folds:
        for configuration in sorted(args.configurations, reverse=True):
            folder = work / "results" / DATASET / f"{TRAINER}__nnUNetPlans__{configuration}"
            if (folder / f"fold_{fold}" / "validation" / "summary.json").is_file():
                logger.info("%s fold %d: trained and validated before", configuration, fold)
                continue  # a run that stopped after it, resumed
            times[f"train_{configuration}_{fold}"] = run(
                [str(bin_dir / "nnUNetv2_train"), "4", configuration, str(fold), "-tr", TRAINER,
                 "-device", "cpu", "--npz"], env)  # fmt: skip
    times["find_best"] = run([str(bin_dir / "nnUNetv2_find_best_configuration"), "4", "-c",
                              *args.configurations, "-tr", TRAINER, "-f",
                              *map(str, args.folds), "-np", n], env)  # fmt: skip
    return times


def predict_nnunet(work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """nnU-Net's prediction of the test cases as find_best_configuration says."""
    bin_dir = args.nnunet_bin
    info = json.loads((work / "results" / DATASET / "inference_information.json").read_text())
    best = info["best_model_or_ensemble"]
    models = best["selected_model_or_models"]
    images = work / "raw" / DATASET / "imagesTs"
    out = work / "nnunet_pred"
    folds = [str(k) for k in args.folds]
    start = time.perf_counter()
    folders = []
    for model in models:
        folder = out / model["configuration"]
        run([str(bin_dir / "nnUNetv2_predict"), "-i", str(images), "-o", str(folder), "-d", "4",
             "-c", model["configuration"], "-tr", model["trainer"], "-p",
             model["plans_identifier"], "-f", *folds, "-device", "cpu", "--save_probabilities",
             "-npp", "1", "-nps", "1"], env)  # fmt: skip
        folders.append(folder)
    raw = folders[0]
    if len(folders) > 1:
        raw = out / "ensemble"
        run([str(bin_dir / "nnUNetv2_ensemble"), "-i", *map(str, folders), "-o", str(raw),
             "-np", str(args.threads), "--save_npz"], env)  # fmt: skip
    pkl = Path(best["postprocessing_file"])
    final = out / "final"
    run([str(bin_dir / "nnUNetv2_apply_postprocessing"), "-i", str(raw), "-o", str(final),
         "-pp_pkl_file", str(pkl), "-np", str(args.threads), "-plans_json",
         str(pkl.parent / "plans.json")], env)  # fmt: skip
    return {"seconds": time.perf_counter() - start, "raw": raw, "final": final,
            "configurations": [m["configuration"] for m in models]}  # fmt: skip


# nnU-Net's apply_postprocessing_to_folder with the functions named in a postprocessing.json
# (argv: the json, input folder, output folder, plans.json, dataset.json).
APPLY_JSON = """
import json, sys
from nnunetv2.postprocessing import remove_connected_components as rcc
decision = json.load(open(sys.argv[1]))
functions = [getattr(rcc, name) for name in decision["postprocessing_fns"]]
rcc.apply_postprocessing_to_folder(sys.argv[2], sys.argv[3], functions,
    decision["postprocessing_kwargs"], sys.argv[4], sys.argv[5], num_processes=1)
"""


def segflow(*argv: str) -> float:
    return run([sys.executable, "-m", "segflow", *argv])


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = x.sum() + y.sum()
    return 1.0 if total == 0 else float(2 * (x & y).sum() / total)


def compare(ours: Path, theirs: Path, labels: Path | None, probabilities: bool) -> dict:
    """Per case: equal voxels, both Dice scores per class, largest probability difference."""
    cases = {}
    for path in sorted(theirs.glob("*.nii.gz")):
        case = path.name[: -len(".nii.gz")]
        a = read_image(ours / path.name).array[0]
        b = read_image(path).array[0]
        row: dict[str, Any] = {"equal_voxels": float((a == b).mean())}
        if labels is not None:
            ref = read_image(labels / path.name).array[0]
            for label in (1, 2):
                row[f"dice_{label}_segflow"] = dice(a, ref, label)
                row[f"dice_{label}_nnunet"] = dice(b, ref, label)
        if probabilities:
            p = np.load(ours / f"{case}.npz")["probabilities"]
            q = np.load(theirs / f"{case}.npz")["probabilities"]
            row["max_prob_diff"] = float(np.abs(p - q).max())
        cases[case] = row
    return cases


def summary(cases: dict[str, dict]) -> dict[str, Any]:
    rows = list(cases.values())
    out = {"cases": len(rows), "min_equal_voxels": min(r["equal_voxels"] for r in rows)}
    if rows and "dice_1_segflow" in rows[0]:
        out["max_dice_diff"] = max(abs(r[f"dice_{k}_segflow"] - r[f"dice_{k}_nnunet"])
                                   for r in rows for k in (1, 2))  # fmt: skip
        for who in ("segflow", "nnunet"):
            out[f"mean_dice_{who}"] = float(np.mean([r[f"dice_{k}_{who}"] for r in rows
                                                     for k in (1, 2)]))  # fmt: skip
    if rows and "max_prob_diff" in rows[0]:
        out["max_prob_diff"] = max(r["max_prob_diff"] for r in rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--nnunet-bin", type=Path, default=Path("/tmp/nnunet-venv/bin"))
    parser.add_argument("--num-test", type=int, default=40)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--result", type=Path, default=None)
    parser.add_argument("--backend", default="auto", help="segflow predict --backend")
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS),
                        choices=CONFIGURATIONS, help="what nnU-Net trains")  # fmt: skip
    parser.add_argument("--export-model", type=Path, default=None,
                        help="the way back: export this segflow model (default: the imported "
                             "one)")  # fmt: skip
    parser.add_argument("--export-cases", type=int, default=None,
                        help="the way back: predict only the first N test cases")  # fmt: skip
    parser.add_argument("--only-way-back", action="store_true",
                        help="only step 5, with --export-model, once nnU-Net has trained under "
                             "--work")  # fmt: skip
    args = parser.parse_args(argv)
    if args.only_way_back and args.export_model is None:
        parser.error("--only-way-back needs --export-model")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    work = args.work.absolute()
    raw = work / "raw" / DATASET
    if not raw.exists():
        make_holdout(SHARED, raw, args.num_test)
    env = nnunet_env(work, args)
    result: dict[str, Any] = {"benchmark": "nnunet_interop", "num_test": args.num_test,
                              "folds": args.folds, "epochs": args.epochs,
                              "iterations": args.iterations,
                              "configurations": args.configurations,
                              "segflow_backend": args.backend}  # fmt: skip
    model = work / "segflow_model"
    images = str(raw / "imagesTs")
    ours = work / "segflow_pred"
    labels = raw / "labelsTs"
    if not args.only_way_back:
        if not (work / "results" / DATASET / "inference_information.json").is_file():
            result["nnunet_training_seconds"] = train_nnunet(work, args, env)
        theirs = predict_nnunet(work, args, env)
        result["selected"] = theirs["configurations"]
        result["nnunet_predict_seconds"] = round(theirs["seconds"], 1)

        shutil.rmtree(model, ignore_errors=True)
        result["import_seconds"] = round(segflow("import-nnunet", str(work / "results" / DATASET),
                                                 "-o", str(model)), 1)  # fmt: skip
        shutil.rmtree(ours, ignore_errors=True)
        # As nnU-Net's timed run: probabilities saved, then the postprocessing applied.
        seconds = segflow("predict", "-i", images, "-o", str(ours / "raw"), "-m", str(model),
                          "--no-postprocessing", "--save-probabilities", "--device", "cpu",
                          "--backend", args.backend)  # fmt: skip
        seconds += segflow("apply-postprocessing", "--postprocessing",
                           str(model / "postprocessing.json"), "-i", str(ours / "raw"),
                           "-o", str(ours / "final"), "--dataset-json",
                           str(model / "dataset.json"))  # fmt: skip
        result["segflow_predict_seconds"] = round(seconds, 1)
        final = compare(ours / "final", theirs["final"], labels, probabilities=False)
        before = compare(ours / "raw", theirs["raw"], None, probabilities=True)
        result["import"] = {"final": summary(final), "before_postprocessing": summary(before)}

    # The way back: segflow's model as nnU-Net results, predicted by nnU-Net.
    exported = args.export_model.absolute() if args.export_model else model
    result["exported_model"] = str(exported)
    back = work / "exported_results"
    shutil.rmtree(back, ignore_errors=True)
    segflow("export-nnunet", str(exported), "-o", str(back))
    selected = json.loads((exported / "selection.json").read_text())["selected"]
    configuration = selected["configurations"][0]
    folder = next(back.glob(f"*/nnUNetTrainer__*__{configuration}"))
    back_folds = sorted(p.name.removeprefix("fold_") for p in folder.glob("fold_*"))
    back_env = {**env, "nnUNet_results": str(back)}
    subset = work / "exported_inputs"
    shutil.rmtree(subset, ignore_errors=True)
    subset.mkdir()
    for path in sorted(Path(images).glob("*.nii.gz"))[: args.export_cases]:
        (subset / path.name).symlink_to(path.resolve())
    nnunet_back = work / "exported_nnunet_pred"
    shutil.rmtree(nnunet_back, ignore_errors=True)
    run([str(args.nnunet_bin / "nnUNetv2_predict"), "-i", str(subset), "-o", str(nnunet_back),
         "-d", "4", "-c", configuration, "-tr", "nnUNetTrainer", "-f", *back_folds,
         "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1"], back_env)  # fmt: skip
    segflow_back = ours / "raw"  # the same model and options when one configuration was chosen
    if exported != model or len(result["selected"]) > 1:
        segflow_back = work / "exported_segflow_pred"
        shutil.rmtree(segflow_back, ignore_errors=True)
        segflow("predict", "-i", str(subset), "-o", str(segflow_back), "-m", str(exported),
                "-c", configuration, "--no-postprocessing", "--save-probabilities",
                "--device", "cpu", "--backend", args.backend)  # fmt: skip
    result["export"] = summary(compare(segflow_back, nnunet_back, labels, probabilities=True))

    # nnU-Net's own postprocessing function, given what export-nnunet wrote
    # (postprocessing.json; nnUNetv2_apply_postprocessing itself only takes a pickle), against
    # segflow's rules applied to segflow's prediction.
    decision = next(folder.glob("crossval_results_folds_*/postprocessing.json"))
    nnunet_pp = work / "exported_nnunet_pp"
    shutil.rmtree(nnunet_pp, ignore_errors=True)
    run([str(args.nnunet_bin / "python"), "-c", APPLY_JSON, str(decision), str(nnunet_back),
         str(nnunet_pp), str(folder / "plans.json"), str(folder / "dataset.json")])  # fmt: skip
    segflow_pp = work / "exported_segflow_pp"
    shutil.rmtree(segflow_pp, ignore_errors=True)
    segflow("apply-postprocessing", "--postprocessing", str(exported / "postprocessing.json"),
            "-i", *[str(segflow_back / p.name) for p in sorted(nnunet_back.glob("*.nii.gz"))],
            "-o", str(segflow_pp), "--dataset-json", str(exported / "dataset.json"))  # fmt: skip
    result["export_postprocessed"] = summary(compare(segflow_pp, nnunet_pp, labels, False))
    emit(result, args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
