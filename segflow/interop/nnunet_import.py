"""``segflow import-nnunet``: nnU-Net v2's trained models as an ordinary exported segflow model.

SOURCE is one of what nnU-Net v2 leaves behind:

* a trained configuration's folder ``<Trainer>__<Plans>__<configuration>/`` (``plans.json``,
  ``dataset.json``, ``fold_<k>/checkpoint_final.pth``);
* a dataset's results folder ``DatasetXXX_Name/`` holding several of them, and, once
  ``nnUNetv2_find_best_configuration`` ran, ``inference_information.json`` naming the best
  configuration or pair of configurations (an ensemble) and the folder of its postprocessing;
* a zip written by ``nnUNetv2_export_model_to_zip`` (the same, one folder deeper); only its
  JSON files and checkpoints are read, every entry checked as ``segflow import-model`` checks a
  segflow zip, ``.pkl`` files never.

Each selected configuration's plans are converted (:mod:`segflow.planning.nnunet_plans`), its
trainer checked (:func:`trainer_problems`), each fold's checkpoint read without running code
(:mod:`segflow.nnunet.checkpoint`) and its weights mapped onto the network segflow builds from
the converted plans (:mod:`segflow.nnunet.weights`). nnU-Net's postprocessing decision
(``postprocessing.json``; ``postprocessing.pkl`` is never read) becomes segflow's rules. The
result is written by :func:`segflow.export.export_model`, as any segflow model: manifest,
sha256 of every file, README.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.export import export_model
from segflow.export.importing import _entry_problems, _extract, _size_problems
from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.nnunet.checkpoint import NnUNetCheckpoint, load_nnunet_checkpoint
from segflow.nnunet.weights import nnunet_to_segflow
from segflow.planning.nnunet_plans import from_nnunet_plans, resolved_configuration
from segflow.planning.plans import Plans
from segflow.training.checkpoint import save_checkpoint

__all__ = [
    "STANDARD_TRAINERS",
    "NnUNetModel",
    "find_models",
    "import_nnunet",
    "trainer_problems",
]

logger = logging.getLogger(__name__)

#: Trainers that change neither the network nor inference (only the training budget, so the
#: checkpoint's network is the plans' and its mirroring axes nnU-Net's default): nnU-Net's own
#: trainer, its ``nnUNetTrainer_<N>epochs`` variants, and segflow's benchmark trainer.
STANDARD_TRAINERS = (
    re.compile(r"nnUNetTrainer"),
    re.compile(r"nnUNetTrainer_\d+epochs"),
    re.compile(r"nnUNetTrainer_segflowShort"),
)
_MODEL_FOLDER = re.compile(r"(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<configuration>[^_].*)")
_FOLD_FOLDER = re.compile(r"fold_(\d+)")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
INFERENCE_INFORMATION = "inference_information.json"
_ZIP_SUFFIXES = (".json", ".pth")


@dataclass(frozen=True)
class NnUNetModel:
    """One trained configuration's folder of nnU-Net v2 results."""

    folder: Path
    trainer: str
    plans_identifier: str
    configuration: str

    @property
    def folds(self) -> tuple[int, ...]:
        found = (_FOLD_FOLDER.fullmatch(p.name) for p in self.folder.iterdir() if p.is_dir())
        return tuple(sorted(int(m[1]) for m in found if m))


def trainer_problems(trainer: str, checkpoint: NnUNetCheckpoint, ndim: int) -> list[Problem]:
    """Why a checkpoint's trainer may have changed the network or inference, if it may."""
    where = str(checkpoint.path)
    problems = []
    if checkpoint.trainer_name != trainer:
        problems.append(
            Problem(
                where,
                f"written by trainer '{checkpoint.trainer_name}', but its folder names '{trainer}'",
            )
        )
    if not any(p.fullmatch(checkpoint.trainer_name) for p in STANDARD_TRAINERS):
        problems.append(
            Problem(
                where,
                f"trainer '{checkpoint.trainer_name}' is not one segflow knows to "
                "leave the network and inference as the plans say (nnUNetTrainer, "
                "nnUNetTrainer_<N>epochs); a custom trainer may build another network or "
                "mirror other axes, so it is refused",
            )
        )
    expected = tuple(range(ndim))
    if checkpoint.mirror_axes != expected:
        problems.append(
            Problem(
                where,
                f"trainer '{checkpoint.trainer_name}' mirrors axes "
                f"{list(checkpoint.mirror_axes)} at inference, not nnU-Net's default "
                f"{list(expected)}; refused",
            )
        )
    return problems


def _model(folder: Path) -> NnUNetModel | None:
    match = _MODEL_FOLDER.fullmatch(folder.name)
    if match is None or not (folder / "plans.json").is_file():
        return None
    return NnUNetModel(folder, match["trainer"], match["plans"], match["configuration"])


def find_models(folder: Path) -> dict[str, NnUNetModel]:
    """The trained configurations' folders in a dataset's results folder, by folder name."""
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        model = _model(sub)
        if model is not None:
            found[sub.name] = model
    return found


# ------------------------------------------------------------------------------- reading


def _read_json(path: Path, problems: list[Problem]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(Problem(str(path), "does not exist"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        problems.append(Problem(str(path), f"is not readable JSON: {err}"))
    return None


def _unpack_zip(source: Path, target: Path) -> Path:
    """Extract the JSON files and checkpoints of an nnU-Net export zip into ``target``, every
    entry checked first; the dataset's results folder inside it."""
    problems: list[Problem] = []
    try:
        archive = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as err:
        raise SegflowError("cannot read the zip", [Problem(str(source), str(err))]) from None
    with archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        wanted = [i for i in entries if i.filename.endswith(_ZIP_SUFFIXES)]
        for info in wanted:
            problems += [Problem(f"{source}: {info.filename}", r) for r in _entry_problems(info)]
        problems += _size_problems(wanted, str(source))
        tops = {i.filename.split("/", 1)[0] for i in entries}
        if len(tops) != 1:
            problems.append(
                Problem(
                    str(source),
                    f"holds {len(tops)} top-level folders "
                    f"({', '.join(sorted(tops))}); nnU-Net's export zip holds "
                    "one dataset's folder",
                )
            )
        if problems:
            raise SegflowError(f"cannot import {source}", problems)
        for info in wanted:
            reason = _extract(archive, info, target, None)
            if reason is not None:
                problems.append(Problem(f"{source}: {info.filename}", reason))
    if problems:
        raise SegflowError(f"cannot import {source}", problems)
    return target / tops.pop()


def _selected_from_information(
    folder: Path, models: Mapping[str, NnUNetModel], problems: list[Problem]
) -> tuple[list[NnUNetModel], list[int] | None, Path | None, dict[str, Any]]:
    """The models, folds and postprocessing.json that find_best_configuration chose."""
    path = folder / INFERENCE_INFORMATION
    info = _read_json(path, problems)
    if not isinstance(info, dict):
        return [], None, None, {}
    best = info.get("best_model_or_ensemble") or {}
    chosen = []
    for entry in best.get("selected_model_or_models") or []:
        name = (
            f"{entry.get('trainer')}__{entry.get('plans_identifier')}__{entry.get('configuration')}"
        )
        if name in models:
            chosen.append(models[name])
        else:
            problems.append(Problem(str(path), f"selects {name}, which is not in {folder}"))
    if not chosen and not problems:
        problems.append(Problem(str(path), "selects no model"))
    # find_best_configuration records where the decision lies on its machine; the same
    # folder relative to the dataset's results folder holds postprocessing.json.
    pkl = Path(str(best.get("postprocessing_file", "")))
    parent = pkl.parent
    relative = (
        Path("ensembles", parent.name)
        if parent.name.startswith("ensemble___")
        else Path(parent.parent.name, parent.name)
    )
    folds = info.get("folds")
    return chosen, folds if isinstance(folds, list) else None, folder / relative, info


def _postprocessing_rules(
    path: Path | None, dataset: DatasetJson, problems: list[Problem]
) -> list[dict[str, list[int]]]:
    """segflow's rules from nnU-Net's ``postprocessing.json`` (none without one)."""
    if path is None:
        return []
    source = path / "postprocessing.json"
    if not source.is_file():
        logger.warning("no %s: the imported model has no postprocessing", source)
        return []
    raw = _read_json(source, problems)
    if not isinstance(raw, dict):
        return []
    functions = raw.get("postprocessing_fns") or []
    arguments = raw.get("postprocessing_kwargs") or []
    rules = []
    for function, kwargs in zip(functions, arguments, strict=False):
        if function != "remove_all_but_largest_component_from_segmentation" or set(kwargs) != {
            "labels_or_regions"
        }:
            problems.append(
                Problem(
                    str(source),
                    f"postprocessing '{function}' with {kwargs} is not one segflow applies",
                )
            )
            continue
        labels = _flat(kwargs["labels_or_regions"])
        rules.append({"labels": sorted(set(labels))})
    if len(functions) != len(arguments):
        problems.append(
            Problem(str(source), "postprocessing_fns and postprocessing_kwargs differ in length")
        )
    return rules


def _flat(value: Any) -> list[int]:
    if isinstance(value, list | tuple):
        return [v for item in value for v in _flat(item)]
    return [int(value)]


# ------------------------------------------------------------------------------- converting


def _convert_fold(
    checkpoint: NnUNetCheckpoint,
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    dataset_raw: dict[str, Any],
    target: Path,
) -> None:
    from segflow.networks import build_network

    network = build_network(
        plans.configuration(configuration),
        dataset.num_channels,
        dataset.num_segmentation_heads,
        deep_supervision=True,
    )
    weights = nnunet_to_segflow(
        checkpoint.network_weights, network.state_dict(), str(checkpoint.path)
    )
    network.load_state_dict(weights)  # every tensor checked above: strict load succeeds
    save_checkpoint(
        target,
        {
            "network": {k: v.detach().clone() for k, v in network.state_dict().items()},
            "configuration": configuration,
            "fold": int(checkpoint.fold),
            "num_input_channels": dataset.num_channels,
            "num_outputs": dataset.num_segmentation_heads,
            "mirror_axes": list(checkpoint.mirror_axes),
            "epoch": checkpoint.epoch,
            "plans": plans.to_dict(),
            "dataset_json": dataset_raw,
        },
    )


def _model_folds(
    model: NnUNetModel, folds: Sequence[int] | None, checkpoint_name: str, problems: list[Problem]
) -> dict[int, Path]:
    available = model.folds
    chosen = list(folds) if folds is not None else list(available)
    if not chosen:
        problems.append(Problem(str(model.folder), "has no fold_<k> folder"))
    out = {}
    for k in chosen:
        path = model.folder / f"fold_{k}" / checkpoint_name
        if not path.is_file():
            problems.append(Problem(str(path), f"missing: fold {k} has no {checkpoint_name}"))
        else:
            out[int(k)] = path
    return out


def _summary(model: NnUNetModel, folds: Sequence[int]) -> dict[str, Any]:
    """The cross-validation summary of an imported configuration: nnU-Net's own."""
    summaries = {}
    for k in folds:
        path = model.folder / f"fold_{k}" / "validation" / "summary.json"
        if path.is_file():
            try:
                summaries[f"fold_{k}"] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.warning("%s is not readable JSON; left out", path)
    return {
        "source": "nnU-Net v2",
        "model": model.folder.name,
        "trainer": model.trainer,
        "plans_identifier": model.plans_identifier,
        "folds": list(folds),
        "validation_summaries": summaries,
    }


def _selection(
    names: list[str], folds: list[int], info: dict[str, Any], models: list[NnUNetModel]
) -> dict[str, Any]:
    best = info.get("best_model_or_ensemble") or {}
    score = best.get("result_on_crossval_pre_pp")
    return {
        "metric": "mean_foreground_dice",
        "source": "nnU-Net v2 find_best_configuration" if info else "segflow import-nnunet",
        "nnunet_models": [m.folder.name for m in models],
        "candidates": [
            {"name": name, "mean_foreground_dice": value}
            for name, value in (info.get("all_results") or {}).items()
        ],
        "selected": {
            "name": " + ".join(names),
            "configurations": names,
            "folds": folds,
            **({"mean_foreground_dice": score} if score is not None else {}),
        },
    }


def _source_folder(source: Path, work: Path) -> Path:
    if source.is_file() and zipfile.is_zipfile(source):
        return _unpack_zip(source, work / "unpacked")
    if not source.is_dir():
        raise SegflowError(
            "cannot import from nnU-Net",
            [Problem(str(source), "is neither an nnU-Net results folder nor an export zip")],
        )
    return source


def _choose(
    folder: Path, configurations: Sequence[str] | None, problems: list[Problem]
) -> tuple[list[NnUNetModel], list[int] | None, Path | None, dict[str, Any]]:
    """The models to import, the folds (None: each model's own), the folder of the
    postprocessing decision, and find_best_configuration's information."""
    single = _model(folder)
    if single is not None:
        return (
            [single],
            None,
            folder / f"crossval_results_folds_{'_'.join(map(str, single.folds))}",
            {},
        )
    models = find_models(folder)
    if not models:
        problems.append(
            Problem(
                str(folder), "holds no <Trainer>__<Plans>__<configuration> folder with plans.json"
            )
        )
        return [], None, None, {}
    if configurations:
        chosen = []
        for name in configurations:
            matches = [m for m in models.values() if name in (m.configuration, m.folder.name)]
            if len(matches) != 1:
                problems.append(
                    Problem(
                        str(folder),
                        f"'{name}' matches {len(matches)} of {', '.join(models)}; name one folder",
                    )
                )
            else:
                chosen.append(matches[0])
        return chosen, None, None, {}
    if (folder / INFERENCE_INFORMATION).is_file():
        return _selected_from_information(folder, models, problems)
    if len(models) == 1:
        only = next(iter(models.values()))
        return [only], None, None, {}
    problems.append(
        Problem(
            str(folder),
            f"holds {', '.join(models)} and no "
            f"{INFERENCE_INFORMATION} (run nnUNetv2_find_best_configuration, or "
            "choose with --configurations)",
        )
    )
    return [], None, None, {}


def import_nnunet(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    configurations: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
    zip_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Import nnU-Net v2's trained model(s) as an exported segflow model.

    Args:
        source: a trained configuration's folder, a dataset's results folder, or an
            ``nnUNetv2_export_model_to_zip`` zip.
        output_dir: the segflow model folder to write.
        configurations: import these (configuration names or model folder names) instead of
            what ``inference_information.json`` selects; an ensemble when several.
        folds: these folds instead of the selection's (or every fold found).
        checkpoint_name: ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
        zip_path: also write a zip of the model (as ``segflow export --zip``).

    Returns:
        ``output_dir``.

    Raises:
        SegflowError: every problem at once: an unknown plans field, network class or trainer;
            an unsafe checkpoint; weights that do not fit; missing folds or files.
    """
    if checkpoint_name not in CHECKPOINTS:
        raise SegflowError(
            f"--checkpoint must be one of {', '.join(CHECKPOINTS)}",
            [Problem("checkpoint", checkpoint_name)],
        )
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="segflow-import-nnunet-") as tmp:
        work = Path(tmp)
        folder = _source_folder(source, work)
        problems: list[Problem] = []
        models, chosen_folds, pp_folder, info = _choose(folder, configurations, problems)
        if folds is not None:
            chosen_folds = list(folds)
        names = [m.configuration for m in models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        for name in repeated:
            problems.append(
                Problem(
                    str(folder),
                    f"two selected models are configuration "
                    f"'{name}'; segflow names a model by its configuration",
                )
            )
        for model in models:
            previous = _previous_stage(model)
            if previous is not None:
                problems.append(
                    Problem(
                        str(model.folder),
                        f"'{model.configuration}' is a cascade stage (it takes the "
                        f"segmentations of '{previous}' as input): importing nnU-Net's cascade "
                        "is not supported yet; import its stages' other configurations "
                        "(e.g. -c 3d_fullres)",
                    )
                )
        if problems:
            raise SegflowError(f"cannot import {source}", problems)
        return _import_models(
            models,
            chosen_folds,
            pp_folder,
            info,
            checkpoint_name,
            Path(output_dir),
            zip_path,
            work,
            source,
        )


def _import_models(
    models: list[NnUNetModel],
    folds: list[int] | None,
    pp_folder: Path | None,
    info: dict[str, Any],
    checkpoint_name: str,
    output: Path,
    zip_path: str | os.PathLike[str] | None,
    work: Path,
    source: Path,
) -> Path:
    problems: list[Problem] = []
    first = models[0].folder
    dataset_raw = _read_json(first / "dataset.json", problems)
    fingerprint = _read_json(first / "dataset_fingerprint.json", problems)
    dataset = None
    if isinstance(dataset_raw, dict):
        dataset, dataset_problems = parse_dataset_json(dataset_raw, str(first / "dataset.json"))
        problems += dataset_problems
    plans_of: dict[str, dict[str, Any]] = {}
    fold_files: dict[str, dict[int, Path]] = {}
    for model in models:
        raw = _read_json(model.folder / "plans.json", problems)
        if isinstance(raw, dict):
            try:
                plans_of[model.configuration] = from_nnunet_plans(
                    raw, [model.configuration], str(model.folder / "plans.json")
                )
            except SegflowError as err:
                problems += err.problems or [Problem(str(model.folder), err.summary)]
        fold_files[model.configuration] = _model_folds(model, folds, checkpoint_name, problems)
        other = _read_json(model.folder / "dataset.json", problems)
        if isinstance(other, dict) and isinstance(dataset_raw, dict):
            for key in ("labels", "channel_names"):
                if other.get(key) != dataset_raw.get(key):
                    problems.append(
                        Problem(
                            str(model.folder / "dataset.json"),
                            f"other {key} than {first / 'dataset.json'}",
                        )
                    )
    fold_sets = {tuple(f) for f in fold_files.values()}
    if len(fold_sets) > 1:
        problems.append(
            Problem(
                str(source),
                "the selected configurations have other folds: "
                + "; ".join(f"{c} {list(f)}" for c, f in fold_files.items()),
            )
        )
    if problems or dataset is None:
        raise SegflowError(f"cannot import {source}", problems)

    names = [m.configuration for m in models]
    merged = _merged_plans(plans_of, names)
    # Each checkpoint holds the plans its model is exported with (export_model checks it).
    plans_for = {n: merged if n in merged["configurations"] else plans_of[n] for n in names}
    converted = work / "converted"
    checkpoints: dict[str, dict[int, Path]] = {}
    summaries: dict[str, Path] = {}
    for model in models:
        name = model.configuration
        plans = Plans(plans_for[name])
        ndim = plans.configuration(name).ndim
        checkpoints[name] = {}
        for k, path in fold_files[name].items():
            try:
                state = load_nnunet_checkpoint(path)
                found = trainer_problems(model.trainer, state, ndim)
                if state.configuration != name:
                    found.append(
                        Problem(
                            str(path), f"holds configuration '{state.configuration}', not '{name}'"
                        )
                    )
                if found:
                    problems += found
                    continue
                target = converted / name / f"fold_{k}" / "checkpoint_final.pt"
                _convert_fold(state, plans, name, dataset, dataset_raw, target)
                checkpoints[name][k] = target
            except SegflowError as err:
                problems += err.problems or [Problem(str(path), err.summary)]
        summary = converted / name / "crossval_summary.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps(_summary(model, sorted(fold_files[name])), indent=1))
        summaries[name] = summary
    rules = _postprocessing_rules(pp_folder, dataset, problems)
    if problems:
        raise SegflowError(f"cannot import {source}", problems)
    chosen_folds = sorted(next(iter(fold_files.values())))
    best = info.get("best_model_or_ensemble") or {}
    postprocessing = {
        "format": 1,
        "criterion": "mean_foreground_dice",
        # nnU-Net joins voxels touching at a face, an edge or a corner.
        "connectivity": "full",
        "source": "nnU-Net v2 postprocessing.json" if pp_folder else "none",
        "rules": rules,
        **(
            {"baseline": {"mean_foreground_dice": best["result_on_crossval_pre_pp"]}}
            if "result_on_crossval_pre_pp" in best
            else {}
        ),
        **(
            {"final": {"mean_foreground_dice": best["result_on_crossval_post_pp"]}}
            if "result_on_crossval_post_pp" in best
            else {}
        ),
    }
    model_plans = {n: p for n, p in plans_for.items() if p != merged}
    export_model(
        dataset_json=dataset_raw,
        plans=merged,
        fingerprint=fingerprint if isinstance(fingerprint, dict) else {"source": "nnU-Net v2"},
        selection=_selection(names, chosen_folds, info, models),
        postprocessing=postprocessing,
        checkpoints=checkpoints,
        crossval_summaries=summaries,
        output_dir=output,
        zip_path=zip_path,
        model_plans=model_plans,
    )
    logger.info("imported %s from nnU-Net into %s", " + ".join(names), output)
    shutil.rmtree(converted, ignore_errors=True)
    return output


def _previous_stage(model: NnUNetModel) -> str | None:
    """The previous stage a model's configuration predicts from (a cascade stage), if any;
    unreadable plans are reported later, where they are converted."""
    try:
        plans = json.loads((model.folder / "plans.json").read_text(encoding="utf-8"))
        conf = resolved_configuration(plans["configurations"], model.configuration, "")
    except (OSError, ValueError, KeyError, TypeError, SegflowError):
        return "3d_lowres" if model.configuration == "3d_cascade_fullres" else None
    previous = conf.get("previous_stage")
    if previous is None and model.configuration == "3d_cascade_fullres":
        return "3d_lowres"
    return None if previous is None else str(previous)


def _merged_plans(plans_of: Mapping[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One plans holding every imported configuration, when they agree elsewhere; else the
    first model's plans (the others then travel as the models' own plans)."""
    first = json.loads(json.dumps(plans_of[names[0]]))
    for name in names[1:]:
        other = plans_of[name]
        rest_a = {k: v for k, v in first.items() if k != "configurations"}
        rest_b = {k: v for k, v in other.items() if k != "configurations"}
        if rest_a != rest_b:
            return plans_of[names[0]]
        first["configurations"].update(other["configurations"])
    return first
