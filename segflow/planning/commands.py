"""``segflow plan``: the experiment's configurations from the fingerprint (``plans.json``);
``segflow move-plans``: another dataset's plans made to fit this one (for fine-tuning)."""

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


def _move_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source-plans",
        type=Path,
        required=True,
        help="plans.json of the pretraining dataset: segflow's, or nnU-Net v2's "
        "(nnUNetPlans.json, a results folder's plans.json), converted",
    )
    p.add_argument("--target-dataset-json", type=Path, required=True, help="the new dataset's")
    p.add_argument(
        "--target-fingerprint", type=Path, required=True, help="the new dataset's fingerprint"
    )
    p.add_argument("--out", type=Path, required=True, help="the new dataset's plans.json")


def _move(args: argparse.Namespace) -> None:
    from segflow.io.atomic import read_json, write_json
    from segflow.io.dataset import load_dataset_json
    from segflow.io.schema import check_against_schema
    from segflow.planning.moving import move_plans
    from segflow.planning.nnunet_plans import from_nnunet_plans, is_nnunet_plans
    from segflow.planning.plans import Plans, load_plans

    try:
        raw = read_json(args.source_plans)
    except (OSError, ValueError):
        raw = None  # load_plans says what is wrong with the file
    if is_nnunet_plans(raw):
        source = Plans(from_nnunet_plans(raw, where=str(args.source_plans)))
    else:
        source = load_plans(args.source_plans)
    dataset = load_dataset_json(args.target_dataset_json)
    fingerprint = read_json(args.target_fingerprint)
    check_against_schema(fingerprint, "fingerprint", str(args.target_fingerprint))
    plans = move_plans(source, dataset, fingerprint)
    check_against_schema(plans, "plans", str(args.out))
    write_json(args.out, plans)


COMMANDS = (
    Command(
        "plan",
        "plan the experiment: configurations, spacing, patch, network",
        _plan_arguments,
        _plan,
    ),
    Command(
        "move-plans",
        "give a dataset the plans of another (its network topology) to fine-tune a network "
        "pretrained there",
        _move_arguments,
        _move,
    ),
)
