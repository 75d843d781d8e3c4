"""Seconds per training iteration on the CPU, segflow vs nnU-Net v2, on the Hippocampus plans.

For 3d_fullres and 2d, times a full training iteration (forward, deep-supervision loss,
backward, gradient clipping, SGD step) of fold 0:

* segflow's :class:`~segflow.training.trainer.FoldTrainer`, built from segflow's plans and
  preprocessed data, in float32 and (where the CPU has native bf16, or with ``--bf16``) with
  bfloat16 autocast (``training.cpu_bf16``), at 1 and 2 torch threads, without data loading
  (every step on the same batch); and with data loading (the next batch from the background
  workers each step, ``training.num_workers`` chosen from the threads as in a training job)
  at the machine's CPUs;
* nnU-Net v2's ``nnUNetTrainer`` with its own plans and preprocessed data and its CPU defaults
  (``benchmarks/nnunet_train_step.py``, run in nnU-Net's virtual environment), with and without
  loading; with ``--nnunet-reuse-freed-memory`` a second time with glibc's malloc set as
  :func:`segflow.compute.reuse_freed_memory` sets it for segflow (through ``GLIBC_TUNABLES``),
  to show how much of the difference that setting is.

segflow's trainer applies :func:`segflow.compute.reuse_freed_memory` on the CPU; run the
benchmark with ``SEGFLOW_REUSE_FREED_MEMORY=0`` to measure segflow without it (the JSON lines
say which: ``reuse_freed_memory``).

Each number is the median of ``--iterations`` after ``--warmup``. The data are those of the
held-out Hippocampus set of benchmarks/train_vs_nnunet.py: segflow's workflow runs (plans and
preprocessing of every configuration) into ``--work`` if needed; nnU-Net's preprocessed folder
is taken from ``--nnunet-work`` (made by ``train_vs_nnunet.py --nnunet``). Prints one JSON
line per measurement and a summary table.

Example::

    .venv/bin/python benchmarks/train_speed.py --iterations 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGURATIONS = ("3d_fullres", "2d")
#: (name, cpu_bf16, threads, with data loading)
SEGFLOW_VARIANTS = (
    ("float32", False, 2, False),
    ("float32", False, 1, False),
    ("float32", False, 2, True),
)
#: Measured only where the CPU runs bf16 natively (or with --bf16): emulated bf16 is several
#: times slower than float32 and would only make the run long.
BF16_VARIANTS = (
    ("bf16", True, 2, False),
    ("bf16", True, 1, False),
    ("bf16", True, 2, True),
)


def _timed(step: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def prepare_segflow(holdout: Path, work: Path) -> Path:
    """Plans and preprocessing of every configuration of the held-out set; the results folder."""
    import yaml

    results = work / "results"
    config = {
        "dataset": str(holdout),
        "results": str(results),
        "seed": 12345,
        "preprocessing": {"cases_per_job": 100, "threads": 1},
    }
    work.mkdir(parents=True, exist_ok=True)
    config_file = work / "config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    snakemake = [
        str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(REPO), "--configfile", str(config_file), "--cores", "2",
    ]  # fmt: skip
    with open(work / "snakemake.log", "w", encoding="utf-8") as log:
        subprocess.run([*snakemake, "preprocessed"], check=True, stdout=log, stderr=log)
    return results


def measure_segflow(
    results: Path, holdout: Path, configuration: str, variant: tuple[str, bool, int, bool],
    iterations: int, warmup: int,
) -> dict[str, Any]:  # fmt: skip
    import torch

    from segflow import compute
    from segflow.io.atomic import read_json
    from segflow.io.dataset import load_dataset_json
    from segflow.planning.plans import load_plans
    from segflow.training.settings import TrainingSettings
    from segflow.training.trainer import FoldTrainer

    name, bf16, threads, loading = variant
    plans = load_plans(results / "plans.json")
    dataset = load_dataset_json(holdout / "dataset.json")
    fold = read_json(results / "splits.json")["folds"][0]
    owner = plans.configuration(configuration).data_identifier
    folder = next(
        results / "preprocessed" / n
        for n in plans.configuration_names
        if plans.configuration(n).data_identifier == owner
    )
    settings = TrainingSettings(device="cpu", cpu_bf16=bf16, threads=threads)
    with tempfile.TemporaryDirectory() as out:
        trainer = FoldTrainer(plans, configuration, dataset, folder, fold["train"], fold["val"],
                              0, out, settings)  # fmt: skip
        trainer.prepare()
        trainer.network.train()
        if loading:
            batches = trainer.batches("train", 0, warmup + iterations)
            _timed(lambda: trainer.train_step(next(batches)), warmup)
            times = _timed(lambda: trainer.train_step(next(batches)), iterations)
        else:
            batch = next(trainer.batches("train", 0, 1))
            _timed(lambda: trainer.train_step(batch), warmup)
            times = _timed(lambda: trainer.train_step(batch), iterations)
    conf = plans.configuration(configuration)
    return {
        "tool": "segflow",
        "configuration": configuration,
        "variant": name,
        "threads": torch.get_num_threads(),
        "data_loading": loading,
        "patch_size": list(conf.patch_size),
        "batch_size": conf.batch_size,
        "seconds": round(statistics.median(times), 3),
        "all_seconds": [round(t, 3) for t in times],
        "reuse_freed_memory": compute.reusing_freed_memory(),
    }


def measure_nnunet(
    python: Path, nnunet_work: Path, dataset_name: str, configuration: str, iterations: int,
    warmup: int, reuse_freed_memory: bool = False,
) -> dict[str, Any]:  # fmt: skip
    env = dict(
        os.environ,
        nnUNet_raw=str(nnunet_work / "raw"),
        nnUNet_preprocessed=str(nnunet_work / "pre"),
        nnUNet_results=str(nnunet_work / "speed_res"),
    )
    if reuse_freed_memory:
        from segflow.compute import GLIBC_TUNABLES_REUSE_FREED_MEMORY

        env["GLIBC_TUNABLES"] = GLIBC_TUNABLES_REUSE_FREED_MEMORY
    cmd = [
        str(python), str(REPO / "benchmarks" / "nnunet_train_step.py"), "--dataset", dataset_name,
        "--configuration", configuration, "--iterations", str(iterations),
        "--warmup", str(warmup),
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    row["reuse_freed_memory"] = reuse_freed_memory
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", type=Path,
                        default=Path("/tmp/hippo_holdout/Dataset004_Hippocampus"))  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow_speed"))
    parser.add_argument("--nnunet-work", type=Path, default=Path("/tmp/nnunet_ho"))
    parser.add_argument("--nnunet-python", type=Path, default=Path("/tmp/nnunet-venv/bin/python"))
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS))
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure every tool this many times, alternating, and compare within each round "
             "(the machine's speed drifts between minutes)",
    )  # fmt: skip
    parser.add_argument("--bf16", action="store_true", help="measure bf16 even if emulated")
    parser.add_argument(
        "--nnunet-reuse-freed-memory", action="store_true",
        help="also measure nnU-Net with glibc's malloc set as segflow sets it on the CPU",
    )  # fmt: skip
    args = parser.parse_args()

    from segflow.compute import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()
    variants = SEGFLOW_VARIANTS + (BF16_VARIANTS if native_bf16 or args.bf16 else ())
    print(f"native bf16: {native_bf16}", flush=True)

    holdout = args.holdout.absolute()
    results = prepare_segflow(holdout, args.work.absolute())
    rows = []
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds):
        for configuration in args.configurations:
            for heap in (False, True) if args.nnunet_reuse_freed_memory else (False,):
                if args.skip_nnunet:
                    break
                row = measure_nnunet(args.nnunet_python, args.nnunet_work.absolute(),
                                     holdout.name, configuration, args.iterations,
                                     args.warmup, heap)  # fmt: skip
                row["round"] = round_
                print(json.dumps(row), flush=True)
                rows.append(row)
            for variant in variants:
                row = measure_segflow(results, holdout, configuration, variant, args.iterations,
                                      args.warmup)  # fmt: skip
                row["round"] = round_
                print(json.dumps(row), flush=True)
                rows.append(row)
    _print_table(rows, args.configurations, variants, args.rounds)
    print(f"\nload average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}, "
          f"CPUs: {len(os.sched_getaffinity(0))}")  # fmt: skip


def _print_table(
    rows: list[dict[str, Any]], configurations: list[str], variants: tuple, rounds: int
) -> None:
    """One Markdown row per configuration, tool, setting and round; with several rounds, also
    the median over rounds of segflow's ratio to nnU-Net within a round."""
    print("| configuration | round | tool | setting | threads | s/iteration without loading | "
          "s/iteration with loading | vs nnU-Net, same round (without / with loading) "
          "|")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    ratios: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for configuration in configurations:
        for round_ in range(rounds):
            in_round = [r for r in rows if r["configuration"] == configuration
                        and r["round"] == round_]  # fmt: skip
            nnunet = [r for r in in_round if r["tool"] == "nnunet"]
            ref = next((r for r in nnunet if not r["reuse_freed_memory"]), None)
            for row in nnunet:
                setting = "float32, freed memory reused" if row["reuse_freed_memory"] else "float32"
                ratio = "1.00"
                if row is not ref and ref is not None:
                    ratio = (f"{row['without_loading_s'] / ref['without_loading_s']:.2f} / "
                             f"{row['with_loading_s'] / ref['with_loading_s']:.2f}")  # fmt: skip
                print(f"| {configuration} | {round_} | nnU-Net v2 | {setting} | "
                      f"{row['threads']} | {row['without_loading_s']:.2f} | "
                      f"{row['with_loading_s']:.2f} | {ratio} |")  # fmt: skip
            mine = [r for r in in_round if r["tool"] == "segflow"]
            for name, threads in dict.fromkeys((v[0], v[2]) for v in variants):
                pair = [r for r in mine if r["variant"] == name and r["threads"] == threads]
                without = next((r["seconds"] for r in pair if not r["data_loading"]), None)
                with_ = next((r["seconds"] for r in pair if r["data_loading"]), None)
                if without is None:
                    continue
                ratio = "-"
                if ref is not None and with_ is not None:
                    a = without / ref["without_loading_s"]
                    b = with_ / ref["with_loading_s"]
                    ratio = f"{a:.2f} / {b:.2f}"
                    ratios.setdefault((configuration, name, threads), []).append((a, b))
                with_text = f"{with_:.2f}" if with_ else "-"
                print(f"| {configuration} | {round_} | segflow | {name} | {threads} | "
                      f"{without:.2f} | {with_text} | {ratio} |")  # fmt: skip
    if rounds > 1:
        for (configuration, name, threads), values in ratios.items():
            a = statistics.median(v[0] for v in values)
            b = statistics.median(v[1] for v in values)
            print(f"{configuration} segflow {name} ({threads} threads): median over {len(values)} "
                  f"rounds {a:.2f}x nnU-Net without loading, {b:.2f}x with loading")  # fmt: skip


if __name__ == "__main__":
    main()
