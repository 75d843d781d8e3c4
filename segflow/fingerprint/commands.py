"""``segflow fingerprint-batch`` (a batch of a dataset report's training cases: the workflow's
fingerprint jobs), ``segflow fingerprint-case`` (one training case) and ``segflow fingerprint``
(batch or case files gathered into ``fingerprint.json``)."""

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
    from segflow.fingerprint.case import fingerprint_case, write_case_fingerprint
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


def _fingerprint_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--batch", required=True, help="the batch's name: batch_0000, batch_0001, ...")
    p.add_argument(
        "--cases-per-job", type=int, required=True, help="the batch size the cases are split by"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=10_000, help="foreground intensities sampled")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--out", type=Path, required=True, help="the batch's fingerprint file")


def _fingerprint_batch(args: argparse.Namespace) -> None:
    from segflow.fingerprint.batch import fingerprint_batch

    fingerprint_batch(
        args.dataset_json, args.dataset_report, args.batch, args.cases_per_job,
        args.seed, args.samples, args.workers, args.out,
    )  # fmt: skip


def _fingerprint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-json", type=Path, required=True)
    cases = p.add_mutually_exclusive_group(required=True)
    cases.add_argument("--batches", type=Path, nargs="+", help="batch fingerprint files")
    cases.add_argument("--cases", type=Path, nargs="+", help="case fingerprint files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)


def _fingerprint(args: argparse.Namespace) -> None:
    from segflow.fingerprint.batch import gather_files

    files = [*(args.batches or []), *(args.cases or [])]
    gather_files(args.dataset_json, files, args.seed, args.out)


COMMANDS = (
    Command(
        "fingerprint-batch",
        "fingerprint one batch of the training cases of a dataset report",
        _fingerprint_batch_arguments,
        _fingerprint_batch,
    ),
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
