"""``segflow plan``: the experiment's configurations from the fingerprint (``plans.json``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--fingerprint", type=Path, required=True)
    p.add_argument(
        "--preset",
        default="default",
        help="planner preset: default, resenc_m, resenc_l or resenc_xl",
    )
    p.add_argument(
        "--gpu-memory-gb",
        type=float,
        default=None,
        help="GPU memory target in GB (default: the preset's)",
    )
    p.add_argument(
        "--base-features", type=int, default=None, help="channels of the first stage (32)"
    )
    p.add_argument(
        "--max-features",
        type=int,
        default=None,
        help="cap on any stage's channels (default: nnU-Net's 512 in 2D, 320 in 3D)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)


def _plan(args: argparse.Namespace) -> None:
    from segflow.io.atomic import read_json, write_json
    from segflow.io.dataset import load_dataset_json
    from segflow.io.schema import check_against_schema
    from segflow.planning import plan_experiment

    dataset = load_dataset_json(args.dataset_json)
    fingerprint = read_json(args.fingerprint)
    check_against_schema(fingerprint, "fingerprint", str(args.fingerprint))
    plans = plan_experiment(
        fingerprint,
        dataset,
        preset=args.preset,
        gpu_memory_target_gb=args.gpu_memory_gb,
        seed=args.seed,
        base_features=args.base_features,
        max_features=args.max_features,
    )
    check_against_schema(plans, "plans", str(args.out))
    write_json(args.out, plans)
    for name, conf in plans["configurations"].items():
        logger.info(
            "%s: spacing %s, patch %s, batch %s",
            name,
            conf.get("spacing"),
            conf.get("patch_size"),
            conf.get("batch_size"),
        )


COMMANDS = (
    Command(
        "plan",
        "plan the experiment: configurations, spacing, patch, network",
        _plan_arguments,
        _plan,
    ),
)
