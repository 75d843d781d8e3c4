"""``segflow preprocess``: cases preprocessed for one configuration."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command
from segflow.errors import SegflowError

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _preprocess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True, help="e.g. 2d, 3d_fullres, 3d_lowres")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--case-id", default=None, help="one case (with --images)")
    p.add_argument("--images", type=Path, nargs="+", default=None, help="channel files in order")
    p.add_argument("--label", type=Path, default=None, help="label file (omit for test cases)")
    p.add_argument(
        "--cases-file",
        type=Path,
        default=None,
        help='several cases: a JSON list of {"case_id", "images": [...], "label"}',
    )
    p.add_argument(
        "--dataset-report",
        type=Path,
        default=None,
        help="several training cases as validate-dataset found them (with --case-ids)",
    )
    p.add_argument(
        "--case-ids", nargs="+", action="extend", default=None,
        help="cases of --dataset-report; repeatable, so that an id beginning with '-' can be "
        "given as --case-ids=<id>",
    )  # fmt: skip
    p.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="when every case is done, list them and their files in this JSON file",
    )
    p.add_argument("--seed", type=int, default=None, help="default: the plans' seed")
    p.add_argument("--workers", type=int, default=1, help="worker processes (several cases)")
    p.add_argument("--out-dir", type=Path, required=True, help="the configuration's folder")


def _case_specs(args: argparse.Namespace) -> list:
    from segflow.io.atomic import read_json
    from segflow.preprocessing import CaseSpec, cases_from_dataset_report

    modes = [args.case_id is not None, args.cases_file is not None, args.dataset_report is not None]
    if sum(modes) != 1:
        raise SegflowError(
            "give exactly one of --case-id (with --images [--label]), --cases-file, or "
            "--dataset-report (with --case-ids); not both or neither"
        )
    if args.case_id is not None:
        if args.images is None:
            raise SegflowError("--case-id and --images go together")
        return [CaseSpec(args.case_id, tuple(args.images), args.label)]
    if args.images is not None or args.label is not None:
        raise SegflowError("--images and --label belong to --case-id")
    if args.dataset_report is not None:
        if not args.case_ids:
            raise SegflowError("--dataset-report needs --case-ids")
        return cases_from_dataset_report(read_json(args.dataset_report), args.case_ids)
    try:
        return [CaseSpec.from_dict(entry) for entry in read_json(args.cases_file)]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SegflowError(
            f"cannot read cases file {args.cases_file}: {err!r}; expected a JSON list of "
            '{"case_id": ..., "images": [...], "label": ... or null}'
        ) from None


def _preprocess(args: argparse.Namespace) -> None:
    from segflow.io.atomic import write_json
    from segflow.io.dataset import load_dataset_json
    from segflow.planning import load_plans
    from segflow.preprocessing import case_files, preprocess_cases

    cases = _case_specs(args)
    plans = load_plans(args.plans)
    dataset = load_dataset_json(args.dataset_json)
    seed = plans.seed if args.seed is None else args.seed
    done = preprocess_cases(
        cases, plans, args.configuration, dataset, seed, args.out_dir, args.workers
    )
    logger.info(
        "preprocessed %d case(s) for %s into %s", len(done), args.configuration, args.out_dir
    )
    if args.manifest is not None:
        # Written last: its presence says every listed case is complete.
        write_json(
            args.manifest,
            {
                "configuration": args.configuration,
                "cases": [
                    {"case_id": c, **{k: p.name for k, p in case_files(args.out_dir, c).items()}}
                    for c in done
                ],
            },
        )


COMMANDS = (
    Command(
        "preprocess",
        "preprocess cases for one configuration: <case>.data.b2nd, <case>.seg.b2nd, "
        "<case>.props.json in --out-dir",
        _preprocess_arguments,
        _preprocess,
    ),
)
