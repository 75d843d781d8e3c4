"""Predict raw images outside the workflow (``segflow predict``): gather the input files into
cases, check them all before any work, and predict them with a model folder's folds.

Inputs follow the raw layout: channel ``k`` of case ``<case>`` is ``<case>_<kkkk><ending>``
(``_0000`` first); a single-channel model also takes files without the channel suffix. The
output for a case is ``<output>/<case><ending>``; an input file is never overwritten.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from segflow.compute import set_up_compute
from segflow.errors import Problem, SegflowError
from segflow.inference.backends import effective_precision
from segflow.inference.ensemble import Predictor
from segflow.inference.export import probabilities_path
from segflow.inference.model import TrainedModel
from segflow.inference.options import PredictionOptions
from segflow.io.dataset import DatasetJson
from segflow.io.image import ImageReadError, read_image_header
from segflow.io.nifti import scan_nifti
from segflow.io.paths import (
    access_reason,
    name_reason,
    output_folder_problems,
    readable_path,
)
from segflow.io.resampled_size import header_grid, resampled_size_problem
from segflow.progress_bar import ProgressBar

__all__ = [
    "InputCase",
    "gather_input_cases",
    "predict_images",
    "predict_images_in_processes",
    "resampled_size_problems",
]

logger = logging.getLogger(__name__)

_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its id and its channel files, channel 0 first."""

    case_id: str
    files: tuple[Path, ...]


def _entry_reason(path: Path) -> str | None:
    """Why ``path`` (a name the user gave, or one found in a given folder) cannot be read."""
    reason = name_reason(path) or access_reason(path)
    if reason is None and not path.is_dir() and not path.is_file():
        reason = "is not a regular file (a device, pipe or socket), so not an image"
    return reason


def _folder_images(folder: Path, ending: str, problems: list[Problem]) -> list[Path]:
    """The ``<ending>`` files of ``folder`` (not its subfolders); every entry that looks like
    one and is not a readable file is a problem, never skipped."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        problems.append(Problem(readable_path(folder), f"cannot be listed: {err.strerror}"))
        return []
    found, before = [], len(problems)
    for name in names:
        path = folder / name
        if not name.endswith(ending):
            if name.lower().endswith(ending.lower()):
                problems.append(Problem(readable_path(path), f"ends in "
                                f"'{readable_path(name[-len(ending):])}'; the model reads "
                                f"'{ending}' files: rename it"))  # fmt: skip
            continue
        reason = _entry_reason(path)
        if reason is None and path.is_dir():
            reason = "is a folder (or a link to one), not an image file"
        if reason is not None:
            problems.append(Problem(readable_path(path), reason))
            continue
        found.append(path)
    if not found and len(problems) == before:
        problems.append(Problem(readable_path(folder), f"holds no {ending} files"))
    return found


def _files_of(inputs: Sequence[Path], ending: str, problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for path in inputs:
        reason = _entry_reason(path)
        if reason is not None:
            problems.append(Problem(readable_path(path), reason))
        elif path.is_dir():
            files += _folder_images(path, ending, problems)
        elif path.name.endswith(ending):
            files.append(path)
        else:
            problems.append(
                Problem(readable_path(path), f"is not a {ending} file (the model's format)")
            )
    return files


def _read_header(path: Path) -> tuple[int, tuple[int, ...]] | str:
    """``(channels, size)`` of an image file from its header, or why it cannot be read or
    predicted (see :func:`~segflow.io.image.read_image_header`: the same checks as the
    dataset's images, a decompression bound among them). A NIfTI file is also checked for
    what SimpleITK would read as zeros without a word: missing bytes and non-finite values
    (:func:`~segflow.io.nifti.scan_nifti`)."""
    try:
        header = read_image_header(path)
    except ImageReadError as err:
        return err.problems[0].message
    scan = scan_nifti(path)
    if scan is not None and scan.truncated:
        return (
            f"truncated file: holds {scan.found_bytes} of the {scan.expected_bytes} bytes its "
            "header announces (was it cut off while copying?)"
        )
    if scan is not None and (scan.nan or scan.inf):
        return (
            f"{scan.nan} NaN and {scan.inf} infinite voxel values, which SimpleITK reads as 0: "
            "replace them (e.g. with the image's minimum) before predicting"
        )
    return header.components, header.size


def _output_problems(output: Path, inputs: Sequence[Path]) -> list[Problem]:
    """Why ``output`` cannot take the predictions of ``inputs``."""
    problems = output_folder_problems(output)
    if not problems and output.exists():
        target = output.resolve()
        problems += [
            Problem(readable_path(output), f"is the input folder {readable_path(folder)}; the "
                    "segmentations would mix with the images (and be taken for inputs by the "
                    "next run): choose another output folder")
            for folder in inputs
            if folder.is_dir() and folder.resolve() == target
        ]  # fmt: skip
    return problems


def gather_input_cases(
    inputs: Sequence[str | Path], dataset: DatasetJson, output: str | Path | None = None
) -> list[InputCase]:
    """The cases in ``inputs`` (folders and files), checked: every problem is listed at once,
    with those of the ``output`` folder when it is given.

    Every file is checked from its header: readable, its spacing and direction usable, and
    no more voxels than the file can hold (see :func:`~segflow.io.image.read_image_header`).

    Raises:
        SegflowError: missing, unreadable or hostile files (names that are not UTF-8, links
            that lead nowhere or loop, folders named like images, headers declaring more
            voxels than the file holds), files of another format, a case without all of the
            model's channels or with channels it does not have, two files for one channel,
            channels of different sizes; an output that is a file, is not writable or is an
            input folder.
    """
    ending = dataset.file_ending
    paths = [Path(p) for p in inputs]
    problems: list[Problem] = []
    if output is not None:
        problems += _output_problems(Path(output), paths)
    files = _files_of(paths, ending, problems)
    channels: dict[str, dict[int, Path]] = {}
    for path in files:
        stem = path.name[: -len(ending)]
        match = _CHANNEL_STEM.match(stem)
        if match:
            case_id, channel = match["case"], int(match["channel"])
        elif dataset.num_channels == 1:
            case_id, channel = stem, 0
        else:
            problems.append(
                Problem(readable_path(path), f"has no channel suffix; name the channels "
                        f"{stem}_0000{ending} to {stem}_{dataset.num_channels - 1:04d}{ending}")
            )  # fmt: skip
            continue
        seen = channels.setdefault(case_id, {})
        if channel in seen:
            other = readable_path(seen[channel])
            problems.append(Problem(readable_path(path), f"is channel {channel} of case "
                                    f"'{case_id}', as is {other}"))  # fmt: skip
            continue
        seen[channel] = path
    names = ", ".join(f"{k} ({v})" for k, v in dataset.channel_names.items())
    cases = []
    for case_id, found in sorted(channels.items()):
        gaps = sorted(set(range(max(found) + 1)) - set(found))
        if gaps:
            problems.append(Problem(case_id, f"lacks the file(s) of channel {gaps}"))
        headers = {k: _read_header(found[k]) for k in sorted(found)}
        unreadable = {k: h for k, h in headers.items() if isinstance(h, str)}
        for k, reason in unreadable.items():
            problems.append(Problem(readable_path(found[k]), reason))
        if gaps or unreadable:
            continue
        # An RGB png is three channels in one file, as nnU-Net reads it.
        total = sum(h[0] for h in headers.values())
        if total != dataset.num_channels:
            problems.append(Problem(case_id, f"has {total} channel(s); the model takes "
                                             f"{dataset.num_channels}: {names}"))  # fmt: skip
            continue
        sizes = {h[1] for h in headers.values()}
        if len(sizes) > 1:
            problems.append(Problem(case_id, "its channel files differ in size: " + ", ".join(
                f"{found[k].name} {list(h[1])}" for k, h in headers.items())))  # fmt: skip
            continue
        cases.append(InputCase(case_id, tuple(found[k] for k in sorted(found))))
    if not channels and not problems:
        problems.append(Problem(", ".join(map(readable_path, paths)), f"no {ending} images given"))
    if problems:
        raise SegflowError("cannot predict these inputs", problems)
    return cases


def resampled_size_problems(cases: Sequence[InputCase], predictor: Predictor) -> list[Problem]:
    """The cases that, resampled to a configuration's spacing, would have less than one voxel
    along an axis or more voxels than prediction can hold (a header spacing of 1e-6 or 1e6
    mm), told from their headers before any work; one problem per case and configuration."""
    # Preprocessing's rule for the spacing a case is resampled to (2d keeps its slices').
    from segflow.preprocessing.preprocessor import target_spacing

    problems = []
    for case in cases:
        header = read_image_header(case.files[0])  # read and checked by gather_input_cases
        shape, spacing = header_grid(header, case.files[0])
        for model in predictor.models:
            axes = model.plans.transpose_forward
            conf = model.plans.configuration(model.configuration)
            moved = target_spacing(conf, [spacing[a] for a in axes])
            target = [0.0] * len(axes)
            for position, axis in enumerate(axes):  # back to (z, y, x)
                target[axis] = moved[position]
            reason = resampled_size_problem(
                shape, spacing, target, model.dataset.num_channels,
                f"the model's configuration {model.configuration}",
            )  # fmt: skip
            if reason is not None:
                problems.append(Problem(readable_path(case.files[0]),
                                        f"case '{case.case_id}': {reason}"))  # fmt: skip
    return problems


def _outputs_for(
    dataset: DatasetJson, cases: Sequence[InputCase], output_dir: Path, save_probabilities: bool
) -> list[Path]:
    """``<output_dir>/<case><ending>`` of every case, after checking that ``output_dir`` can be
    a folder to write into and that no output (nor its probabilities) would overwrite an
    input; creates ``output_dir``.

    Raises:
        SegflowError: ``output_dir`` is a file or not writable, or an output would overwrite
            an input file.
    """
    problems = output_folder_problems(output_dir)
    if problems:
        raise SegflowError("cannot write the predictions", problems)
    ending = dataset.file_ending
    outputs = [output_dir / f"{case.case_id}{ending}" for case in cases]
    inputs = {p.resolve() for case in cases for p in case.files}
    clashes = [
        Problem(readable_path(path), "would overwrite an input image; choose another output "
                "folder")
        for out in outputs
        for path in ([out, probabilities_path(out)] if save_probabilities else [out])
        if path.resolve() in inputs
    ]  # fmt: skip
    if clashes:
        raise SegflowError("refusing to overwrite inputs", clashes)
    output_dir.mkdir(parents=True, exist_ok=True)
    return outputs


def predict_images(
    model: Predictor | TrainedModel,
    cases: Sequence[InputCase],
    output_dir: str | Path,
    options: PredictionOptions | None = None,
    *,
    mirroring: bool = True,
    save_probabilities: bool = False,
    progress: bool | None = None,
) -> list[Path]:
    """Predict every case with the model (a configuration's folds, their logits averaged, or
    a :class:`~segflow.inference.ensemble.Predictor`: configurations ensembled, postprocessing
    applied) and write ``<output_dir>/<case><ending>``; returns the written files.
    ``options``: device, backend, precision... (default: PyTorch on the CPU in float32); every
    network is converted for the backend before the first case.

    Raises:
        SegflowError: an output would overwrite an input file (checked before any work).
    """
    predictor = model if isinstance(model, Predictor) else Predictor((model,))
    outputs = _outputs_for(predictor.dataset, cases, Path(output_dir), save_probabilities)
    options = options or PredictionOptions(mirror_axes=None, device="cpu")
    predictor.prepare(options)
    show = sys.stderr.isatty() if progress is None else progress
    for case, out in ProgressBar(
        list(zip(cases, outputs, strict=True)), disable=not show, desc="predicting", unit="case"
    ):
        predictor.predict_files(
            case.files, out, options, mirroring=mirroring, save_probabilities=save_probabilities
        )
        logger.info("%s -> %s", case.case_id, out)
    return outputs


# The predictor of a worker process of predict_images_in_processes.
_worker_predictor: Predictor | None = None


def _start_worker(load: Callable[[], Predictor], threads: int) -> None:
    global _worker_predictor
    # The parent process has already warned where bfloat16 is not native and which networks
    # fall back to PyTorch; its workers would each say it again.
    logging.getLogger("segflow.compute").setLevel(logging.ERROR)
    logging.getLogger("segflow.inference.backends").setLevel(logging.ERROR)
    set_up_compute("cpu", threads)
    _worker_predictor = load()


def _predict_in_worker(
    files: tuple[Path, ...],
    output: Path,
    mirroring: bool,
    save_probabilities: bool,
    options: PredictionOptions,
) -> None:
    assert _worker_predictor is not None, "worker not started"
    try:
        _worker_predictor.predict_files(
            files, output, options, mirroring=mirroring, save_probabilities=save_probabilities
        )
    except SegflowError as err:
        # It goes back to the parent pickled: a subclass whose __init__ takes other
        # arguments (ImageReadError) would not unpickle and would break the pool.
        raise SegflowError(err.summary, err.problems) from None


def predict_images_in_processes(
    load: Callable[[], Predictor],
    dataset: DatasetJson,
    cases: Sequence[InputCase],
    output_dir: str | Path,
    *,
    jobs: int,
    threads: int,
    options: PredictionOptions | None = None,
    mirroring: bool = True,
    save_probabilities: bool = False,
    progress: bool | None = None,
) -> list[Path]:
    """:func:`predict_images` on the CPU with ``jobs`` processes, each predicting whole cases
    with ``threads // jobs`` torch threads (at least one).

    For nnU-Net's patch sizes PyTorch's CPU kernels use many threads poorly, so several cases
    at a time, each with fewer threads, predict more cases per second than one case at a time
    with every thread (on 2 CPUs, 2 processes of one thread do about an eighth more). Each
    process holds its own copy of the model, and of a case's arrays while it predicts it.

    Args:
        load: returns the predictor on the CPU; called once in each process (so it must be
            picklable: a module-level function or a ``functools.partial`` of one, such as
            ``partial(load_predictor, model_dir, folds=[0])``).
        dataset: the model's dataset.json (output file names and input checks).
        cases, output_dir, options, mirroring, save_probabilities, progress: as for
            :func:`predict_images` (the options' device is the CPU; each process converts
            the networks for the backend once, from the ONNX cache after the first).
        jobs: processes, at least 1 (never more than there are cases).
        threads: torch threads to share among them.

    Raises:
        SegflowError: an output would overwrite an input file (checked before any work); the
            first case that fails stops the rest.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    outputs = _outputs_for(dataset, cases, Path(output_dir), save_probabilities)
    jobs = min(jobs, len(cases))
    if jobs == 0:
        return outputs
    per_job = max(1, threads // jobs)
    options = (options or PredictionOptions(mirror_axes=None)).replace(
        device="cpu", threads=per_job
    )
    effective_precision(options.precision, "cpu")  # warns here, once, where bf16 is not native
    show = sys.stderr.isatty() if progress is None else progress
    # spawn, not fork: a forked child of a process that has run OpenMP threads may hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                             initargs=(load, per_job)) as pool:  # fmt: skip
        futures = {
            pool.submit(
                _predict_in_worker, case.files, out, mirroring, save_probabilities, options
            ): (case, out)
            for case, out in zip(cases, outputs, strict=True)
        }
        try:
            for future in ProgressBar(
                as_completed(futures),
                total=len(futures),
                disable=not show,
                desc="predicting",
                unit="case",
            ):
                future.result()
                case, out = futures[future]
                logger.info("%s -> %s", case.case_id, out)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return outputs
