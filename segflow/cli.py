"""The ``segflow`` command line: one subcommand per stage of the workflow.

Every Snakemake rule calls one of these with explicit paths. A user mistake (bad input,
bad arguments) ends with one clear line per problem and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from segflow import __version__
from segflow.errors import Interrupted, Problem, SegflowError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("segflow")


def _cmd_make_demo(args: argparse.Namespace) -> None:
    from segflow.demo import make_demo_dataset

    make_demo_dataset(
        args.out,
        num_training=args.cases,
        num_test=args.test_cases,
        seed=args.seed,
    )


def _cmd_validate_dataset(args: argparse.Namespace) -> None:
    from segflow.io.atomic import write_json
    from segflow.validation import validate_dataset

    report = validate_dataset(args.dataset, workers=args.workers)
    write_json(args.out, report)
    logger.info(
        "dataset %s is valid: %d training cases, %d test cases",
        args.dataset,
        len(report["training_cases"]),
        len(report["test_cases"]),
    )


def _cmd_fingerprint_case(args: argparse.Namespace) -> None:
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


def _cmd_fingerprint_batch(args: argparse.Namespace) -> None:
    from segflow.fingerprint.batch import fingerprint_batch

    fingerprint_batch(
        args.dataset_json, args.dataset_report, args.batch, args.cases_per_job,
        args.seed, args.samples, args.workers, args.out,
    )  # fmt: skip


def _cmd_fingerprint(args: argparse.Namespace) -> None:
    from segflow.fingerprint.batch import gather_files

    files = [*(args.batches or []), *(args.cases or [])]
    gather_files(args.dataset_json, files, args.seed, args.out)


def _cmd_plan(args: argparse.Namespace) -> None:
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


def _cmd_split(args: argparse.Namespace) -> None:
    from segflow.io.atomic import read_json, write_json
    from segflow.training.splits import make_splits

    case_ids = [c["case_id"] for c in read_json(args.dataset_report)["training_cases"]]
    splits = make_splits(case_ids, args.num_folds, args.seed, args.manual, args.groups)
    for warning in splits["warnings"]:
        logger.warning("%s", warning)
    write_json(args.out, splits)
    logger.info("%s: %d %s folds", args.out, splits["num_folds"], splits["source"])


def _cmd_holdout(args: argparse.Namespace) -> None:
    from segflow.io.holdout import make_holdout

    make_holdout(args.dataset, args.output, args.num_test, args.seed)


def _cmd_train(args: argparse.Namespace) -> None:
    from segflow.training.trainer import TrainingSettings, train_fold

    settings = TrainingSettings(
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        val_iterations_per_epoch=args.val_iterations_per_epoch,
        initial_lr=args.initial_lr,
        oversample_foreground_percent=args.oversample_foreground_percent,
        seed=args.seed,
        deterministic=args.deterministic,
        cpu_bf16=args.cpu_bf16,
        channels_last={"true": True, "false": False}.get(args.channels_last, "auto"),
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        threads=args.threads,
        num_workers=args.num_workers,
    )
    train_fold(
        plans_path=args.plans,
        configuration=args.configuration,
        fold=args.fold,
        dataset_json=args.dataset_json,
        splits_path=args.splits,
        preprocessed_folder=args.preprocessed,
        output_folder=args.out_dir,
        settings=settings,
    )


def _cmd_validate_fold(args: argparse.Namespace) -> None:
    from segflow.evaluation.crossval import validate_fold

    validate_fold(
        plans_path=args.plans,
        configuration=args.configuration,
        fold=args.fold,
        dataset_json=args.dataset_json,
        dataset_report=args.dataset_report,
        splits_path=args.splits,
        preprocessed_folder=args.preprocessed,
        checkpoint=args.checkpoint,
        output_folder=args.out_dir,
        mirroring=not args.no_mirroring,
        save_probabilities=args.save_probabilities,
        device=args.device,
        threads=args.threads,
        cpu_bf16=args.cpu_bf16,
    )


def _cmd_crossval(args: argparse.Namespace) -> None:
    from segflow.evaluation.crossval import merge_folds

    summary = merge_folds(args.fold_metrics, args.configuration, args.out_dir)
    logger.info(
        "%s: mean foreground Dice %s over %d cases of folds %s",
        args.configuration,
        summary["mean_foreground_dice"],
        summary["num_cases"],
        summary["folds"],
    )


def _cmd_predict(args: argparse.Namespace) -> None:
    import functools

    import torch

    from segflow.compute import set_up_compute
    from segflow.inference.ensemble import load_predictor
    from segflow.inference.images import (
        gather_input_cases,
        predict_images,
        predict_images_in_processes,
    )
    from segflow.inference.sliding_window import predicts_in_cpu_bf16

    if args.jobs < 1:
        raise SegflowError(
            "invalid option", [Problem("--jobs", f"must be at least 1, got {args.jobs}")]
        )
    device = set_up_compute(args.device, args.threads)
    if args.jobs > 1 and device.type != "cpu":
        raise SegflowError(
            "invalid option",
            [Problem("--jobs", f"predicts with several processes on the CPU only, not {device}; "
                               "use --device cpu or --jobs 1")],
        )  # fmt: skip
    options = dict(
        configurations=args.configuration,
        folds=args.folds,
        selection=args.selection,
        postprocessing=args.postprocessing,
        use_postprocessing=not args.no_postprocessing,
    )
    predictor = load_predictor(args.model, **options, device=device)
    cases = gather_input_cases(args.input, predictor.dataset)
    jobs = min(args.jobs, len(cases))
    cpu_bf16 = predicts_in_cpu_bf16(device, args.cpu_bf16)
    logger.info(
        "predicting %d case(s) with %s on %s%s%s%s",
        len(cases),
        predictor.describe(),
        device,
        "" if not args.no_mirroring else ", no mirroring",
        ", bfloat16 autocast" if cpu_bf16 else "",
        f", {jobs} processes" if jobs > 1 else "",
    )
    if jobs > 1:
        dataset = predictor.dataset
        del predictor  # every process loads its own
        predict_images_in_processes(
            functools.partial(load_predictor, args.model, **options, device="cpu"),
            dataset,
            cases,
            args.output,
            jobs=jobs,
            threads=torch.get_num_threads(),
            mirroring=not args.no_mirroring,
            save_probabilities=args.save_probabilities,
            cpu_bf16=cpu_bf16,
        )
        return
    predict_images(
        predictor,
        cases,
        args.output,
        mirroring=not args.no_mirroring,
        save_probabilities=args.save_probabilities,
        device=device,
        cpu_bf16=cpu_bf16,
    )


def _cmd_select(args: argparse.Namespace) -> None:
    from segflow.ensembling import select_model

    select_model(
        crossval_folders={Path(p).name: p for p in args.crossval},
        dataset_json=args.dataset_json,
        dataset_report=args.dataset_report,
        output_json=args.out,
        predictions_folder=args.predictions_out,
        ensembles=not args.no_ensembles,
    )


def _cmd_postprocess(args: argparse.Namespace) -> None:
    from segflow.postprocessing import run_decide

    run_decide(
        args.predictions, args.references, args.dataset_json, args.out,
        try_rules=not args.no_largest_component,
    )  # fmt: skip


def _cmd_apply_postprocessing(args: argparse.Namespace) -> None:
    from segflow.postprocessing import run_apply

    written = run_apply(args.postprocessing, args.input, args.output, args.dataset_json)
    logger.info("postprocessed %d segmentation(s) into %s", len(written), args.output)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from segflow.evaluation.crossval import write_metrics
    from segflow.evaluation.evaluate import evaluate_folders, summarize
    from segflow.io.atomic import write_json
    from segflow.io.dataset import load_dataset_json

    dataset = load_dataset_json(args.dataset_json)
    rows = evaluate_folders(args.references, args.predictions, dataset)
    write_metrics(args.metrics_out, rows)
    summary = summarize(rows)
    write_json(args.summary_out, summary)
    logger.info("%d case(s): mean foreground Dice %s", summary["num_cases"],
                summary["mean_foreground_dice"])  # fmt: skip


def _cmd_export(args: argparse.Namespace) -> None:
    from segflow.export import export_model

    checkpoints: dict[str, dict[int, Path]] = {}
    for path in sorted(args.models.glob("*/fold_*/checkpoint_final.pt")):
        fold = int(path.parent.name.removeprefix("fold_"))
        checkpoints.setdefault(path.parent.parent.name, {})[fold] = path
    summaries = {p.parent.name: p for p in sorted(args.crossval.glob("*/summary.json"))}
    export_model(
        dataset_json=args.dataset_json, plans=args.plans, fingerprint=args.fingerprint,
        selection=args.selection, postprocessing=args.postprocessing, checkpoints=checkpoints,
        crossval_summaries=summaries, output_dir=args.out, zip_path=args.zip,
    )  # fmt: skip
    logger.info("exported the model to %s%s", args.out, f" and {args.zip}" if args.zip else "")


def _cmd_import_model(args: argparse.Namespace) -> None:
    from segflow.export import run_import

    run_import(args.zip, args.output)


def _cmd_report_pages(args: argparse.Namespace) -> None:
    from segflow.report import TEST_REPORT_FILES, test_boxplot, test_page, write_report_pages

    if args.part == "test":
        if args.test_metrics is None:
            raise SegflowError("report-pages --part test needs --test-metrics")
        written = {
            "test": test_page(args.test_metrics, args.out_dir / TEST_REPORT_FILES["test"]),
            "test_dice": test_boxplot(
                args.test_metrics, args.out_dir / TEST_REPORT_FILES["test_dice"]
            ),
        }
    else:
        missing = [
            f"--{name.replace('_', '-')}"
            for name in ("dataset_json", "dataset_report", "fingerprint", "plans",
                         "crossval_metrics", "selection", "postprocessing")
            if getattr(args, name) is None
        ]  # fmt: skip
        if missing:
            raise SegflowError(f"report-pages --part {args.part} needs {', '.join(missing)}")
        written = write_report_pages(
            dataset_json=args.dataset_json, dataset_report=args.dataset_report,
            fingerprint=args.fingerprint, plans=args.plans,
            crossval_metrics={Path(p).parent.name: p for p in args.crossval_metrics},
            selection=args.selection, postprocessing=args.postprocessing,
            test_metrics=args.test_metrics if args.part == "all" else None,
            out_dir=args.out_dir,
        )  # fmt: skip
    logger.info("report pages: %s", ", ".join(str(p) for p in written.values()))


def _preprocess_case_specs(args: argparse.Namespace) -> list:
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


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from segflow.io.atomic import write_json
    from segflow.io.dataset import load_dataset_json
    from segflow.planning import load_plans
    from segflow.preprocessing import case_files, preprocess_cases

    cases = _preprocess_case_specs(args)
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


def _configure_logging(verbose: bool, log_file: Path | None) -> list[logging.Handler]:
    """INFO to stderr, or with a log file: everything to the file and warnings to stderr.

    Returns the handlers added, the log file's first, so that :func:`main` can remove them.
    """
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(sys.stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
        console.setLevel(logging.WARNING)
    handlers.append(console)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    return handlers


def _add_prediction_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that predict (validate-fold, predict)."""
    p.add_argument("--no-mirroring", action="store_true", help="no test-time mirroring")
    p.add_argument(
        "--save-probabilities", action="store_true", help="also write <case>.npz probabilities"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="on the CPU, run the networks in bfloat16 autocast: fast on CPUs with native bf16 "
        "(AVX-512 BF16, AMX), emulated and very slow elsewhere (CUDA always uses float16)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; misspelled flags are errors (no ``parse_known_args``)."""
    parser = argparse.ArgumentParser(
        prog="segflow",
        description="segflow: the nnU-Net method as a reproducible Snakemake workflow.",
    )
    parser.add_argument("--version", action="version", version=f"segflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="also write the log to this file (errors and warnings still reach stderr)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], None], help_: str):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add(
        "make-demo", _cmd_make_demo, "build the synthetic demo dataset in nnU-Net v2 raw layout"
    )
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--cases", type=int, default=20, help="training cases")
    p.add_argument("--test-cases", type=int, default=4, help="test cases (imagesTs, labelsTs)")
    p.add_argument("--seed", type=int, default=0)

    p = add("validate-dataset", _cmd_validate_dataset, "check a raw dataset and list every problem")
    p.add_argument("--dataset", type=Path, required=True, help="raw dataset folder")
    p.add_argument("--out", type=Path, required=True, help="dataset_report.json to write")
    p.add_argument("--workers", type=int, default=1, help="parallel readers")

    p = add("fingerprint-case", _cmd_fingerprint_case, "fingerprint one training case")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--case-id", required=True)
    p.add_argument("--images", type=Path, nargs="+", required=True, help="channel files in order")
    p.add_argument("--label", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=10_000, help="foreground intensities sampled")
    p.add_argument("--out", type=Path, required=True)

    p = add(
        "fingerprint-batch",
        _cmd_fingerprint_batch,
        "fingerprint one batch of the training cases of a dataset report",
    )
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

    p = add("fingerprint", _cmd_fingerprint, "gather case fingerprints into fingerprint.json")
    p.add_argument("--dataset-json", type=Path, required=True)
    cases = p.add_mutually_exclusive_group(required=True)
    cases.add_argument("--batches", type=Path, nargs="+", help="batch fingerprint files")
    cases.add_argument("--cases", type=Path, nargs="+", help="case fingerprint files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)

    p = add("plan", _cmd_plan, "plan the experiment: configurations, spacing, patch, network")
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

    p = add(
        "preprocess",
        _cmd_preprocess,
        "preprocess cases for one configuration: <case>.data.b2nd, <case>.seg.b2nd, "
        "<case>.props.json in --out-dir",
    )
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
    p.add_argument("--case-ids", nargs="+", default=None, help="cases of --dataset-report")
    p.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="when every case is done, list them and their files in this JSON file",
    )
    p.add_argument("--seed", type=int, default=None, help="default: the plans' seed")
    p.add_argument("--workers", type=int, default=1, help="worker processes (several cases)")
    p.add_argument("--out-dir", type=Path, required=True, help="the configuration's folder")
    p = add("split", _cmd_split, "write the cross-validation folds (splits.json)")
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--num-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--manual", type=Path, default=None, help="a splits file to use as it is")
    p.add_argument("--groups", type=Path, default=None, help="case_id,group table (CSV/TSV)")
    p.add_argument("--out", type=Path, required=True)

    p = add(
        "holdout",
        _cmd_holdout,
        "hold training cases out as a test set: a new raw dataset of symbolic links",
    )
    p.add_argument("--dataset", type=Path, required=True, help="raw dataset folder")
    p.add_argument("--output", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--num-test", type=int, required=True, help="training cases to hold out")
    p.add_argument("--seed", type=int, default=12345, help="seeds the choice of test cases")

    p = add(
        "train",
        _cmd_train,
        "train one cross-validation fold of one configuration (resumes from "
        "checkpoint_latest.pt in --out-dir)",
    )
    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True, help="e.g. 2d, 3d_fullres, 3d_lowres")
    p.add_argument("--fold", type=int, required=True, help="fold of --splits")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True, help="splits.json")
    p.add_argument("--preprocessed", type=Path, required=True, help="preprocessed folder")
    p.add_argument("--out-dir", type=Path, required=True, help="the fold's model folder")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--iterations-per-epoch", type=int, default=250)
    p.add_argument("--val-iterations-per-epoch", type=int, default=50)
    p.add_argument("--initial-lr", type=float, default=1e-2)
    p.add_argument("--oversample-foreground-percent", type=float, default=0.33)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--checkpoint-every", type=int, default=50, help="epochs between checkpoints")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible training")
    p.add_argument("--cpu-bf16", action="store_true", help="bfloat16 autocast on CPU")
    p.add_argument(
        "--channels-last",
        choices=("auto", "true", "false"),
        default="auto",
        help="channels-last memory format (auto: 3D networks on the CPU)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument(
        "--num-workers", type=int, default=None, help="augmentation processes (default: auto)"
    )

    p = add(
        "validate-fold",
        _cmd_validate_fold,
        "predict a fold's held-out cases with its final checkpoint and score them "
        "(predictions/, metrics.csv, summary.json in --out-dir)",
    )
    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--splits", type=Path, required=True, help="splits.json")
    p.add_argument("--preprocessed", type=Path, required=True, help="preprocessed folder")
    p.add_argument("--checkpoint", type=Path, required=True, help="the fold's checkpoint_final.pt")
    p.add_argument("--out-dir", type=Path, required=True)
    _add_prediction_options(p)

    p = add(
        "predict",
        _cmd_predict,
        "segment new images with a trained model: its folds' probabilities averaged, each "
        "segmentation in its image's geometry",
    )
    p.add_argument(
        "-i", "--input", type=Path, nargs="+", required=True,
        help="folders of images in the raw layout (<case>_0000<ending>, ...) or image files",
    )  # fmt: skip
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for <case><ending>")
    p.add_argument(
        "-m", "--model", type=Path, required=True,
        help="an exported model (segflow export: <results>/model), a configuration's "
             "fold_<k>/checkpoint_final.pt folder (<results>/models/3d_fullres), or a folder "
             "of configurations (<results>/models) with -c or --selection",
    )  # fmt: skip
    p.add_argument(
        "-c", "--configuration", nargs="+", default=None,
        help="configuration(s) in --model; several are ensembled",
    )  # fmt: skip
    p.add_argument("-f", "--folds", type=int, nargs="+", default=None, help="default: all")
    p.add_argument(
        "--selection", type=Path, default=None,
        help="selection.json: predict with its selected configurations (ensembled) and folds",
    )  # fmt: skip
    p.add_argument(
        "--postprocessing", type=Path, default=None,
        help="postprocessing.json whose rules to apply (an exported model brings its own)",
    )  # fmt: skip
    p.add_argument("--no-postprocessing", action="store_true", help="apply no postprocessing rule")
    p.add_argument(
        "-j", "--jobs", type=int, default=1,
        help="CPU only: predict this many cases at a time in separate processes, sharing "
             "--threads between them (faster for many cases: PyTorch uses many threads poorly "
             "on one case; each process holds its own copy of the model)",
    )  # fmt: skip
    _add_prediction_options(p)

    p = add(
        "select",
        _cmd_select,
        "compare the configurations and their pairs by cross-validation Dice "
        "(selection.json) and write the winner's cross-validation segmentations",
    )
    p.add_argument(
        "--crossval", type=Path, nargs="+", required=True,
        help="crossval/<configuration> folders (the name is the configuration), in the order "
             "ties are broken by",
    )  # fmt: skip
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--out", type=Path, required=True, help="selection.json")
    p.add_argument(
        "--predictions-out", type=Path, required=True,
        help="folder for the selected model's cross-validation segmentations",
    )  # fmt: skip
    p.add_argument("--no-ensembles", action="store_true", help="compare single configurations")

    p = add(
        "postprocess",
        _cmd_postprocess,
        "decide the connected-component postprocessing on cross-validation predictions "
        "(postprocessing.json)",
    )
    p.add_argument("--predictions", type=Path, required=True, help="folder of <case><ending>")
    p.add_argument("--references", type=Path, required=True, help="folder of the labels")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="postprocessing.json")
    p.add_argument(
        "--no-largest-component", action="store_true",
        help="try no rule: record the scores, apply nothing",
    )  # fmt: skip

    p = add(
        "apply-postprocessing",
        _cmd_apply_postprocessing,
        "apply postprocessing.json's rules to segmentations (same geometry, new folder)",
    )
    p.add_argument("--postprocessing", type=Path, required=True, help="postprocessing.json")
    p.add_argument("-i", "--input", type=Path, nargs="+", required=True, help="files or folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--dataset-json", type=Path, required=True)

    p = add(
        "evaluate",
        _cmd_evaluate,
        "score predicted segmentations against reference labels (metrics per case and class)",
    )
    p.add_argument("--references", type=Path, required=True, help="folder of <case><ending>")
    p.add_argument(
        "--predictions", type=Path, nargs="+", required=True,
        help="prediction files or folders; each <case><ending> is scored",
    )  # fmt: skip
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--metrics-out", type=Path, required=True, help="metrics CSV")
    p.add_argument("--summary-out", type=Path, required=True, help="summary JSON")

    p = add(
        "export",
        _cmd_export,
        "write the selected model as a self-contained folder (and zip) for `segflow predict -m`",
    )
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--plans", type=Path, required=True)
    p.add_argument("--fingerprint", type=Path, required=True)
    p.add_argument("--selection", type=Path, required=True)
    p.add_argument("--postprocessing", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True, help="<results>/models")
    p.add_argument("--crossval", type=Path, required=True, help="<results>/crossval")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write")
    p.add_argument("--zip", type=Path, default=None, help="also write this zip")

    p = add(
        "import-model",
        _cmd_import_model,
        "unpack an exported model zip safely (no absolute paths, '..' or links; hashes checked)",
    )
    p.add_argument("zip", type=Path, help="the model zip (segflow export)")
    p.add_argument("-o", "--output", type=Path, required=True, help="new or empty folder")

    p = add(
        "report-pages",
        _cmd_report_pages,
        "write the report's pages and figures (dataset, plans, cross-validation, selection, test)",
    )
    p.add_argument(
        "--part", choices=["main", "test", "all"], default="all",
        help="main: every page but the test set's; test: only the test set's (needs only "
             "--test-metrics); all: both",
    )  # fmt: skip
    p.add_argument("--dataset-json", type=Path)
    p.add_argument("--dataset-report", type=Path)
    p.add_argument("--fingerprint", type=Path)
    p.add_argument("--plans", type=Path)
    p.add_argument(
        "--crossval-metrics", type=Path, nargs="+", help="crossval/<configuration>/metrics.csv"
    )
    p.add_argument("--selection", type=Path)
    p.add_argument("--postprocessing", type=Path)
    p.add_argument("--test-metrics", type=Path, default=None)
    p.add_argument("--out-dir", type=Path, required=True)

    p = add(
        "crossval",
        _cmd_crossval,
        "merge the folds' metrics of a configuration (metrics.csv, summary.json in --out-dir)",
    )
    p.add_argument("--configuration", required=True)
    p.add_argument("--fold-metrics", type=Path, nargs="+", required=True, help="metrics.csv files")
    p.add_argument("--out-dir", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = _configure_logging(args.verbose, args.log)
    try:
        args.func(args)
    except SegflowError as err:
        message = f"segflow {args.command}: error: {err.render()}"
        print(message, file=sys.stderr)
        if args.log is not None:  # into the log file too, without a second copy on stderr
            handlers[0].stream.write(message + "\n")
        return 1
    except Interrupted as err:
        message = f"segflow {args.command}: {err}"
        print(message, file=sys.stderr)
        if args.log is not None:
            handlers[0].stream.write(message + "\n")
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"segflow {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return 0
