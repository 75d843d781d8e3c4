"""Exporting the model: the selected configurations' folds, ready to predict anywhere.

The last step of the workflow gathers what prediction needs into one folder (laid out as
:mod:`segflow.export.bundle` describes) and, on request, a zip of it. Only the selected
configurations and folds go in, and each checkpoint is an inference-only copy of the fold's
final checkpoint: the weights and the metadata that :mod:`segflow.inference.model` reads,
without the optimizer, grad scaler, random states and training history a resumed run needs
(about half the size).

A selected cascade stage predicts after its previous stage (``3d_lowres``), so that stage's
folds go in too, listed in the manifest's ``previous_stages`` (same folds; no
cross-validation summary of their own unless they are selected too).

The folder is built beside its final place and renamed onto it only once complete, so a
killed job never leaves a half-written model under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import segflow
from segflow.errors import Problem, SegflowError
from segflow.export.bundle import (
    BUNDLE_FORMAT,
    CHECKPOINT_NAME,
    CROSSVAL_SUMMARY_NAME,
    MANIFEST_NAME,
    MODEL_PLANS_NAME,
    README_NAME,
    bundle_files,
    file_sha256,
    make_folder_beside,
    selected_models,
)
from segflow.export.readme import render_readme
from segflow.io.atomic import atomic_path, write_json, write_text
from segflow.io.dataset import parse_dataset_json
from segflow.io.paths import output_folder_problems, readable_path
from segflow.layout import model_name, parse_model_name
from segflow.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["artifact_sizes", "export_model", "inference_checkpoint"]

logger = logging.getLogger(__name__)

#: Checkpoint entries :mod:`segflow.inference.model` reads; an inference copy needs them all.
INFERENCE_KEYS = (
    "network",
    "configuration",
    "fold",
    "num_input_channels",
    "num_outputs",
    "mirror_axes",
    "epoch",
    "plans",
    "dataset_json",
)
#: Small entries kept because they say how the fold was trained (``pretrained``: the weights
#: a fine-tuned fold started from).
DESCRIPTIVE_KEYS = (
    "segflow_version",
    "signature",
    "class_names",
    "regions",
    "settings",
    "pretrained",
)

JsonSource = str | os.PathLike[str] | Mapping[str, Any]


def _read_source(source: JsonSource, what: str, problems: list[Problem]) -> Any:
    """A JSON input given as a mapping or a file; None (with a problem) when unreadable."""
    where = what if isinstance(source, Mapping) else str(source)
    try:
        if isinstance(source, Mapping):
            data = json.loads(json.dumps(source))  # a plain copy, and proof it is JSON
        else:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(Problem(where, f"{what} does not exist"))
        return None
    except (OSError, TypeError, ValueError, RecursionError) as err:  # JSON errors: ValueError
        problems.append(Problem(where, f"{what} is not readable JSON: {err}"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(where, f"{what} is not a JSON object"))
        return None
    return data


def inference_checkpoint(state: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a training checkpoint that prediction needs.

    Keeps the network weights, the entries :mod:`segflow.inference.model` reads and a few
    that describe the training run; drops optimizer, grad-scaler, random-number and history
    state. The result is marked ``inference_only`` and is saved with
    :func:`~segflow.training.checkpoint.save_checkpoint` like any checkpoint.

    Raises:
        KeyError: ``state`` lacks an entry inference needs (named in the message).
    """
    missing = [key for key in INFERENCE_KEYS if key not in state]
    if missing:
        raise KeyError(f"checkpoint lacks {', '.join(missing)}")
    kept = {key: state[key] for key in (*INFERENCE_KEYS, *DESCRIPTIVE_KEYS) if key in state}
    return {**kept, "inference_only": True}


def _check_inputs(
    selection: Any,
    checkpoints: Mapping[str, Mapping[int, str | os.PathLike[str]]],
    crossval_summaries: Mapping[str, str | os.PathLike[str]],
    problems: list[Problem],
) -> dict[str, dict[int, Path]]:
    """The checkpoint file of every selected configuration and fold; problems for the rest."""
    names, folds = selected_models(selection, "selection.json", problems)
    chosen: dict[str, dict[int, Path]] = {}
    for name in names:
        given = {int(k): Path(v) for k, v in checkpoints.get(name, {}).items()}
        if name not in checkpoints:
            problems.append(
                Problem(f"configuration {name}", "is selected but no checkpoints were given")
            )
        for k in folds:
            if name in checkpoints and k not in given:
                problems.append(Problem(f"configuration {name}", f"no checkpoint of fold {k}"))
            elif k in given and not given[k].is_file():
                problems.append(
                    Problem(str(given[k]), f"checkpoint of {name} fold {k} does not exist")
                )
        if name not in crossval_summaries:
            problems.append(Problem(f"configuration {name}", "no cross-validation summary"))
        elif not Path(crossval_summaries[name]).is_file():
            problems.append(
                Problem(str(crossval_summaries[name]), "cross-validation summary does not exist")
            )
        chosen[name] = {k: given[k] for k in folds if k in given}
    return chosen


def _previous_stages(
    plans_of: Mapping[str, Any],
    chosen: Mapping[str, Mapping[int, Path]],
    checkpoints: Mapping[str, Mapping[int, str | os.PathLike[str]]],
    problems: list[Problem],
) -> tuple[dict[str, dict[int, Path]], dict[str, Any]]:
    """The checkpoints of the previous stages the selected cascade stages need (those not
    selected themselves), with a problem for each one missing, and each stage's plans (those
    of the cascade stage that predicts after it: one experiment plans both)."""
    needed: dict[str, dict[int, Path]] = {}
    stage_plans: dict[str, Any] = {}
    for name, folds in chosen.items():
        configuration, experiment = parse_model_name(name)
        configurations = (plans_of.get(name) or {}).get("configurations") or {}
        previous = (configurations.get(configuration) or {}).get("previous_stage")
        if previous is None:
            continue
        stage = model_name(previous, experiment)
        if stage in chosen:
            continue
        given = {int(k): Path(v) for k, v in checkpoints.get(stage, {}).items()}
        for k in folds:
            if k not in given or not given[k].is_file():
                problems.append(
                    Problem(f"configuration {stage}", f"no checkpoint of fold {k}: the selected "
                            f"{name} predicts after it")
                )  # fmt: skip
        needed.setdefault(stage, {}).update({k: given[k] for k in folds if k in given})
        stage_plans[stage] = plans_of[name]
    return needed, stage_plans


def _copy_checkpoint(
    source: Path,
    target: Path,
    configuration: str,
    fold: int,
    dataset_raw: dict[str, Any],
    plans_raw: dict[str, Any],
    problems: list[Problem],
) -> None:
    """Write the inference copy of ``source``, or add why it cannot be exported."""
    try:
        state = load_checkpoint(source)
    except SegflowError as err:
        problems += err.problems or [Problem(str(source), err.summary)]
        return
    try:
        stripped = inference_checkpoint(state)
    except KeyError as err:
        problems.append(Problem(str(source), f"{err.args[0]}: written by an older segflow?"))
        return
    # The model's name is its configuration, and with experiments the experiment's name too.
    if state["configuration"] != parse_model_name(configuration)[0] or int(state["fold"]) != fold:
        problems.append(
            Problem(
                str(source),
                f"holds {state['configuration']} fold "
                f"{state['fold']}, not {configuration} fold {fold}",
            )
        )
        return
    trained = state["dataset_json"] or {}
    for key in ("labels", "channel_names"):
        if trained.get(key) != dataset_raw.get(key):
            problems.append(Problem(str(source), f"was trained with other {key} than dataset.json"))
            return
    # Prediction builds the network from the checkpoint's plans: the bundle's plans must be
    # those, or its plans.json would describe another model.
    if state["plans"] != plans_raw:
        problems.append(
            Problem(
                str(source),
                f"was trained with other plans (preset {(state['plans'] or {}).get('preset')!r}) "
                f"than the plans given for {configuration} (preset {plans_raw.get('preset')!r})",
            )
        )
        return
    save_checkpoint(target, stripped)


def _export_fold_onnx(checkpoint: Path) -> Path:
    """Export a trained fold's network to ``network.onnx`` beside its ``checkpoint``; returns
    the file. (Here, not in segflow.inference.backends: the fold is loaded through
    segflow.inference.model, which imports the backends.)"""
    from segflow.inference.backends import write_onnx_beside
    from segflow.inference.model import load_trained_fold

    fold = load_trained_fold(checkpoint)  # checks the plans the checkpoint carries
    plans = load_checkpoint(checkpoint)["plans"]
    patch = tuple(plans["configurations"][fold.configuration]["patch_size"])
    return write_onnx_beside(fold.network, checkpoint, fold.input_channels, patch)


def _write_onnx(checkpoint: Path) -> Path | None:
    """The fold's network in ONNX beside its (exported) checkpoint; None, with a warning,
    for a network that cannot be exported (it then predicts with PyTorch only)."""
    try:
        return _export_fold_onnx(checkpoint)
    except Exception as err:  # an operation the ONNX exporter does not know
        logger.warning(
            "%s: no ONNX network exported (%s: %s); the model predicts with PyTorch only",
            checkpoint, type(err).__name__, str(err).splitlines()[0] if str(err) else "",
        )  # fmt: skip
        return None


def _replace_folder(new: Path, target: Path) -> None:
    """Rename the complete folder ``new`` onto ``target``, replacing an old one."""
    if not target.exists():
        os.replace(new, target)
        return
    # A folder cannot be renamed over a non-empty one: move the old aside first.
    old = make_folder_beside(target, ".old-")
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _zip_path_problems(zip_path: Path, output: Path) -> list[Problem]:
    """Why the zip cannot be written at ``zip_path``."""
    where = readable_path(zip_path)
    if zip_path.absolute().is_relative_to(output.absolute()):
        return [Problem(where, "the zip cannot go inside the model folder")]
    if zip_path.is_dir():
        return [Problem(where, "is a folder; name the zip file to write")]
    return [
        Problem(where, f"cannot be written: {p.where} {p.message}")
        for p in output_folder_problems(zip_path.parent, "the zip's folder", for_images=False)
    ]


def _write_zip(folder: Path, files: list[str], zip_path: Path) -> None:
    """Zip ``files`` of ``folder`` (names relative to it), reproducibly and atomically."""
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix: the mode below is what external_attr means
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = (folder / name).stat().st_size  # lets zipfile choose ZIP64
            with open(folder / name, "rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def export_model(
    *,
    dataset_json: JsonSource,
    plans: JsonSource,
    fingerprint: JsonSource,
    selection: JsonSource,
    postprocessing: JsonSource,
    checkpoints: Mapping[str, Mapping[int, str | os.PathLike[str]]],
    crossval_summaries: Mapping[str, str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    zip_path: str | os.PathLike[str] | None = None,
    model_plans: Mapping[str, JsonSource] | None = None,
) -> Path:
    """Write the self-contained model folder of the selected configurations.

    Args:
        dataset_json, plans, fingerprint, selection, postprocessing: the experiment's JSON
            files, as paths or already parsed.
        checkpoints: configuration -> fold -> its final checkpoint. Every selected
            configuration needs every selected fold; others are ignored.
        crossval_summaries: configuration -> its cross-validation ``summary.json``; needed
            for every selected configuration, others are ignored.
        output_dir: the model folder; an old one is replaced once the new one is complete.
        zip_path: also write a zip of the folder's files (no top-level folder) here.
        model_plans: model -> its plans, for the models trained with other plans than
            ``plans`` (experiments with their own planning). The bundle's ``plans.json`` is
            the first selected model's plans; a selected model with other plans also gets
            them as ``<model>/plans.json``. Every checkpoint must hold its model's plans.

    Returns:
        ``output_dir``.

    Raises:
        SegflowError: every problem at once: unreadable inputs, a selected configuration or
            fold without a checkpoint or summary, checkpoints of another configuration, fold
            or dataset, or an ``output_dir`` that is not a folder.
    """
    output = Path(output_dir)
    problems: list[Problem] = output_folder_problems(output, "the model", for_images=False)
    if zip_path is not None:
        problems += _zip_path_problems(Path(zip_path), output)
    what = ("dataset.json", "plans", "fingerprint", "selection.json", "postprocessing.json")
    sources = (dataset_json, plans, fingerprint, selection, postprocessing)
    raw_dataset, raw_plans, raw_fingerprint, raw_selection, raw_postprocessing = (
        _read_source(source, name, problems) for source, name in zip(sources, what, strict=True)
    )
    dataset = None
    if raw_dataset is not None:
        dataset, dataset_problems = parse_dataset_json(raw_dataset, "dataset.json")
        problems += dataset_problems
    chosen = _check_inputs(raw_selection, checkpoints, crossval_summaries, problems)
    given_plans = model_plans or {}
    plans_of = {
        name: _read_source(given_plans[name], f"plans of {name}", problems)
        if name in given_plans
        else raw_plans
        for name in chosen
    }
    previous_stages, stage_plans = _previous_stages(plans_of, chosen, checkpoints, problems)
    if problems or dataset is None:
        raise SegflowError("cannot export the model", problems)
    if plans_of:
        raw_plans = next(iter(plans_of.values()))
    plans_of.update(stage_plans)
    # Beside the bundle's plans.json, the plans of a selected model (or of the previous stage
    # a selected cascade stage predicts after) that differ from it.
    own_plans = {name: p for name, p in plans_of.items() if p != raw_plans}

    summaries = {
        name: _read_source(crossval_summaries[name], "cross-validation summary", problems)
        for name in chosen
    }
    folder = make_folder_beside(output, ".tmp-")
    sources: dict[str, Path] = {}  # a bundle checkpoint's name -> the checkpoint it came from
    try:
        for name, folds in {**chosen, **previous_stages}.items():
            for k, source in folds.items():
                target = folder / name / f"fold_{k}" / CHECKPOINT_NAME
                sources[target.relative_to(folder).as_posix()] = Path(source)
                _copy_checkpoint(source, target, name, k, raw_dataset, plans_of[name], problems)
        if problems:
            raise SegflowError("cannot export the model", problems)
        onnx_files = [
            onnx.relative_to(folder).as_posix()
            for name, folds in {**chosen, **previous_stages}.items()
            for k in folds
            if (onnx := _write_onnx(folder / name / f"fold_{k}" / CHECKPOINT_NAME)) is not None
        ]
        for name, summary in summaries.items():
            write_json(folder / name / CROSSVAL_SUMMARY_NAME, summary)
        copies = {
            "dataset.json": raw_dataset,
            "plans.json": raw_plans,
            "fingerprint.json": raw_fingerprint,
            "selection.json": raw_selection,
            "postprocessing.json": raw_postprocessing,
        }
        copies.update({f"{name}/{MODEL_PLANS_NAME}": p for name, p in own_plans.items()})
        for name, content in copies.items():
            write_json(folder / name, content)
        configurations = {name: tuple(folds) for name, folds in chosen.items()}
        dataset_name = dataset.name or str(raw_fingerprint.get("dataset_name", ""))
        readme = render_readme(
            dataset, dataset_name, raw_selection, raw_postprocessing, configurations, output.name
        )
        write_text(folder / README_NAME, readme)
        stages = {name: tuple(folds) for name, folds in previous_stages.items()}
        files = (
            bundle_files(configurations, stages)
            + [f"{n}/{MODEL_PLANS_NAME}" for n in own_plans]
            + onnx_files
        )
        manifest = {
            "format": BUNDLE_FORMAT,
            "segflow_version": segflow.__version__,
            "dataset": dataset_name,
            "configurations": {name: list(folds) for name, folds in configurations.items()},
            **({"previous_stages": {n: list(f) for n, f in stages.items()}} if stages else {}),
            "files": {name: file_sha256(folder / name) for name in sorted(files)},
        }
        write_json(folder / MANIFEST_NAME, manifest)
        if zip_path is not None:
            _write_zip(folder, [MANIFEST_NAME, *sorted(files)], Path(zip_path))
        _replace_folder(folder, output)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info(
        "exported %s: %s to %s%s",
        dataset_name or "the model",
        ", ".join(f"{n} folds {list(f)}" for n, f in configurations.items()),
        output,
        f" and {zip_path}" if zip_path is not None else "",
    )
    for line in artifact_sizes(output, [MANIFEST_NAME, *sorted(files)], sources, zip_path):
        logger.info("%s", line)
    return output


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def artifact_sizes(
    folder: Path,
    files: list[str],
    sources: Mapping[str, Path],
    zip_path: str | os.PathLike[str] | None = None,
) -> list[str]:
    """One line per file of the model folder with its size (a checkpoint's beside that of the
    training checkpoint it was stripped from), then the folder's and the zip's totals."""
    lines, total = [], 0
    for name in files:
        size = (folder / name).stat().st_size
        total += size
        source = sources.get(name)
        origin = (
            f" (training checkpoint {_megabytes(source.stat().st_size)}: weights kept, "
            "optimizer, grad scaler, random states and history left out)"
            if source is not None and source.exists()
            else ""
        )
        lines.append(f"  {name}: {_megabytes(size)}{origin}")
    lines.append(f"model folder {folder}: {_megabytes(total)} in {len(files)} files")
    if zip_path is not None and Path(zip_path).exists():
        size = Path(zip_path).stat().st_size
        lines.append(f"model zip {zip_path}: {_megabytes(size)} (the same files, compressed)")
    return lines
