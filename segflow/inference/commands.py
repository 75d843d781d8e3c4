"""``segflow predict``: new images segmented by a trained or exported model; and the options
every command that predicts shares (:func:`add_prediction_options`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command
from segflow.errors import Problem, SegflowError
from segflow.inference.settings import InferenceSettings
from segflow.settings import add_arguments, from_arguments

__all__ = ["COMMANDS", "add_prediction_options"]

logger = logging.getLogger(__name__)


def add_prediction_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that predict (validate-fold, predict): the fields of
    :class:`~segflow.inference.settings.InferenceSettings`."""
    add_arguments(p, InferenceSettings)


def _predict_arguments(p: argparse.ArgumentParser) -> None:
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
    add_prediction_options(p)


def _predict(args: argparse.Namespace) -> None:
    import functools

    import torch

    from segflow.compute import set_up_compute
    from segflow.inference.backends import check_backend
    from segflow.inference.ensemble import load_predictor
    from segflow.inference.images import (
        gather_input_cases,
        predict_images,
        predict_images_in_processes,
        resampled_size_problems,
    )

    if args.jobs < 1:
        raise SegflowError(
            "invalid option", [Problem("--jobs", f"must be at least 1, got {args.jobs}")]
        )
    settings = from_arguments(InferenceSettings, args)
    device = set_up_compute(settings.device, settings.threads)
    if args.jobs > 1 and device.type != "cpu":
        raise SegflowError(
            "invalid option",
            [Problem("--jobs", f"predicts with several processes on the CPU only, not {device}; "
                               "use --device cpu or --jobs 1")],
        )  # fmt: skip
    check_backend(settings.backend, settings.precision, device)
    options = dict(
        configurations=args.configuration,
        folds=args.folds,
        selection=args.selection,
        postprocessing=args.postprocessing,
        use_postprocessing=not args.no_postprocessing,
    )
    predictor = load_predictor(args.model, **options, device=device)
    cases = gather_input_cases(args.input, predictor.dataset, output=args.output)
    problems = resampled_size_problems(cases, predictor)
    if problems:
        raise SegflowError("cannot predict these inputs", problems)
    jobs = min(args.jobs, len(cases))
    prediction = settings.prediction_options(device)
    # Every fold converted (and every ONNX file checked) before the first case.
    runtimes = sorted({r.describe() for r in predictor.prepare(prediction)})
    logger.info(
        "predicting %d case(s) with %s on %s (%s)%s%s",
        len(cases),
        predictor.describe(),
        device,
        "; ".join(runtimes),
        "" if settings.mirroring else ", no mirroring",
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
            options=prediction,
            mirroring=settings.mirroring,
            save_probabilities=settings.save_probabilities,
        )
        return
    predict_images(
        predictor,
        cases,
        args.output,
        prediction,
        mirroring=settings.mirroring,
        save_probabilities=settings.save_probabilities,
    )


COMMANDS = (
    Command(
        "predict",
        "segment new images with a trained model: its folds' probabilities averaged, each "
        "segmentation in its image's geometry",
        _predict_arguments,
        _predict,
    ),
)
