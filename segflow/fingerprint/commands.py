"""``segflow fingerprint-case`` (one training case) and ``segflow fingerprint`` (the cases
gathered into ``fingerprint.json``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]


def _fingerprint_case_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--case-id", required=True)
    p.add_argument("--images", type=Path, nargs="+", required=True, help="channel files in order")
    p.add_argument("--label", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=10_000, help="foreground intensities sampled")
    p.add_argument("--out", type=Path, required=True)


def _fingerprint_case(args: argparse.Namespace) -> None:
    from segflow.fingerprint import fingerprint_case, write_case_fingerprint
    from segflow.io.dataset import load_dataset_json

    dataset = load_dataset_json(args.dataset_json)
    fp = fingerprint_case(
        case_id=args.case_id,
        images=args.images,
        label=args.label,
        dataset=dataset,
        seed=args.seed,
        num_samples=args.samples,
    )
    write_case_fingerprint(args.out, fp)


def _fingerprint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--cases", type=Path, nargs="+", required=True, help="case fingerprint files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)


def _fingerprint(args: argparse.Namespace) -> None:
    from segflow.fingerprint import gather_fingerprint
    from segflow.io.atomic import read_json, write_json
    from segflow.io.dataset import load_dataset_json
    from segflow.io.schema import check_against_schema

    dataset = load_dataset_json(args.dataset_json)
    case_fps = [read_json(p) for p in args.cases]
    fp = gather_fingerprint(case_fps, dataset, seed=args.seed, sources=[str(p) for p in args.cases])
    check_against_schema(fp, "fingerprint", str(args.out))
    write_json(args.out, fp)


COMMANDS = (
    Command(
        "fingerprint-case",
        "fingerprint one training case",
        _fingerprint_case_arguments,
        _fingerprint_case,
    ),
    Command(
        "fingerprint",
        "gather case fingerprints into fingerprint.json",
        _fingerprint_arguments,
        _fingerprint,
    ),
)
