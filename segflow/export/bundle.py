"""The exported model folder: its layout, and reading and checking one.

An exported model (written by :func:`segflow.export.exporting.export_model`) is one folder::

    manifest.json                   format, segflow version, dataset, configurations and
                                    folds, and the sha256 of every other file
    README.md                       what the model is, how well it did, how to run it
    dataset.json  plans.json  fingerprint.json  selection.json  postprocessing.json
    <configuration>/crossval_summary.json
    <configuration>/fold_<k>/checkpoint_final.pt
    <configuration>/fold_<k>/network.onnx   the fold's network in ONNX (opset 17), for the
                                    OpenVINO and ONNX Runtime backends; it records the sha256
                                    of the checkpoint beside it (an older export has none)
    <configuration>/plans.json      only for a model trained with other plans than plans.json
                                    (an experiment with its own planning preset)
    <previous stage>/fold_<k>/checkpoint_final.pt   a selected cascade stage's previous stage
                                    (manifest ``previous_stages``), unless itself selected
    <previous stage>/plans.json     as for a configuration

It is also a model folder for :func:`segflow.inference.model.load_model` (one configuration's
folds per subfolder). :func:`load_bundle` checks that nothing is missing or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.layout import CHECKPOINT_FINAL

__all__ = [
    "BUNDLE_FORMAT",
    "CHECKPOINT_NAME",
    "MANIFEST_NAME",
    "MODEL_PLANS_NAME",
    "ModelBundle",
    "file_sha256",
    "is_bundle",
    "load_bundle",
    "manifest_problems",
    "optional_bundle_files",
    "unsafe_name_reason",
]

#: Bumped when the bundle layout changes incompatibly.
BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
README_NAME = "README.md"
CHECKPOINT_NAME = CHECKPOINT_FINAL
CROSSVAL_SUMMARY_NAME = "crossval_summary.json"
#: A selected model's own plans, when they are not the bundle's plans.json.
MODEL_PLANS_NAME = "plans.json"
#: The files of every bundle besides the manifest and the configurations' folders.
TOP_LEVEL_FILES = (
    README_NAME,
    "dataset.json",
    "plans.json",
    "fingerprint.json",
    "selection.json",
    "postprocessing.json",
)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")


# ---------------------------------------------------------------------------- helpers


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks (checkpoints may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` cannot be a file's path inside a bundle, or None when it can.

    A bundle path is relative, uses ``/`` only, and never leaves the folder: no absolute
    path, drive letter, backslash, ``..``, ``.`` or empty component.
    """
    if not name:
        return "has an empty name"
    if "\\" in name:
        return "has a backslash in its name"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    parts = name.removesuffix("/").split("/")
    if ".." in parts:
        return "climbs out of the folder ('..')"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' path component"
    if any(ord(c) < 32 for c in name):
        return "has a control character in its name"
    return None


def bundle_files(
    configurations: Mapping[str, tuple[int, ...]],
    previous_stages: Mapping[str, tuple[int, ...]] | None = None,
) -> list[str]:
    """Every file a bundle of ``configurations`` (and the ``previous_stages`` its cascade
    stages predict after) must hold, manifest excluded."""
    files = list(TOP_LEVEL_FILES)
    for name, folds in configurations.items():
        files.append(f"{name}/{CROSSVAL_SUMMARY_NAME}")
        files += [f"{name}/fold_{k}/{CHECKPOINT_NAME}" for k in folds]
    for name, folds in (previous_stages or {}).items():
        files += [f"{name}/fold_{k}/{CHECKPOINT_NAME}" for k in folds]
    return files


#: A fold's network in ONNX, beside its checkpoint (segflow.inference.backends.ONNX_NAME).
ONNX_NAME = "network.onnx"


def optional_bundle_files(configurations: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Files a bundle of ``configurations`` may hold besides :func:`bundle_files`: a model's
    own plans, when they are not the bundle's ``plans.json``, and each fold's ONNX network
    (absent from an export older than the ONNX backends)."""
    plans = [f"{name}/{MODEL_PLANS_NAME}" for name in configurations]
    onnx = [f"{name}/fold_{k}/{ONNX_NAME}" for name, folds in configurations.items() for k in folds]
    return plans + onnx


def selected_models(
    selection: Any, where: str, problems: list[Problem]
) -> tuple[list[str], list[int]]:
    """The selected configurations and folds of selection.json, with every problem."""
    selected = selection.get("selected") if isinstance(selection, dict) else None
    if not isinstance(selected, dict):
        problems.append(Problem(where, "has no 'selected' object"))
        return [], []
    names, folds = selected.get("configurations"), selected.get("folds")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        problems.append(
            Problem(
                where,
                f"'selected.configurations' must be a non-empty list of names, found {names!r}",
            )
        )
        names = []
    if not (isinstance(folds, list) and folds and all(_is_fold(k) for k in folds)):
        problems.append(
            Problem(
                where, f"'selected.folds' must be a non-empty list of fold numbers, found {folds!r}"
            )
        )
        folds = []
    for name in names:
        reason = unsafe_name_reason(name)
        if reason is not None or "/" in name:
            problems.append(Problem(where, f"configuration {name!r} cannot be a folder name"))
    return list(dict.fromkeys(names)), sorted(set(folds))


def _is_fold(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def make_folder_beside(target: Path, prefix: str) -> Path:
    """A new empty folder ``<prefix><target name>-*`` beside ``target`` (on its file
    system, so that renaming it onto ``target`` is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp makes 0700 folders
    return folder


# ---------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ModelBundle:
    """An exported model folder, checked.

    Attributes:
        path: the folder.
        manifest: the parsed ``manifest.json``.
        dataset: the typed ``dataset.json``.
        selection: the parsed ``selection.json``.
        postprocessing: the parsed ``postprocessing.json``.
        configurations: configuration -> its folds, in the selection's order.
    """

    path: Path
    manifest: dict[str, Any]
    dataset: DatasetJson
    selection: dict[str, Any]
    postprocessing: dict[str, Any]
    configurations: dict[str, tuple[int, ...]]

    def checkpoint(self, configuration: str, fold: int) -> Path:
        """The path of a fold's checkpoint in the bundle."""
        return self.path / configuration / f"fold_{fold}" / CHECKPOINT_NAME


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an exported model folder (it holds ``manifest.json``)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def manifest_problems(manifest: Any, where: str) -> list[Problem]:
    """Every problem with the structure of a parsed ``manifest.json``."""
    if not isinstance(manifest, dict):
        return [Problem(where, "expected a JSON object")]
    problems = []
    if manifest.get("format") != BUNDLE_FORMAT:
        problems.append(
            Problem(where, f"format {manifest.get('format')!r}, this segflow reads {BUNDLE_FORMAT}")
        )
    configurations = manifest.get("configurations")
    previous_stages = manifest.get("previous_stages", {})
    if not isinstance(previous_stages, dict):
        problems.append(Problem(where, "'previous_stages' must map configurations to folds"))
        previous_stages = {}
    if not isinstance(configurations, dict) or not configurations:
        problems.append(Problem(where, "'configurations' must map configurations to folds"))
    else:
        for name, folds in {**configurations, **previous_stages}.items():
            if unsafe_name_reason(name) is not None or "/" in name:
                problems.append(Problem(where, f"configuration {name!r} is not a folder name"))
            if not (isinstance(folds, list) and folds and all(_is_fold(k) for k in folds)):
                problems.append(
                    Problem(
                        where,
                        f"configuration {name!r}: folds must be a "
                        f"non-empty list of fold numbers, found {folds!r}",
                    )
                )
    files = manifest.get("files")
    if not isinstance(files, dict):
        problems.append(Problem(where, "'files' must map file names to sha256 digests"))
    else:
        for name, digest in files.items():
            reason = unsafe_name_reason(name)
            if reason is not None or name == MANIFEST_NAME:
                problems.append(Problem(where, f"file {name!r} {reason or 'lists itself'}"))
            if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
                problems.append(Problem(where, f"file {name!r}: {digest!r} is not a sha256"))
    return problems


def _configurations(manifest: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(folds) for name, folds in manifest["configurations"].items()}


def _previous_stages(manifest: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(folds) for name, folds in manifest.get("previous_stages", {}).items()}


def _read_json_file(path: Path, problems: list[Problem]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        problems.append(Problem(str(path), f"is not readable JSON: {err}"))
        return None


def load_bundle(model_dir: str | os.PathLike[str], *, verify: bool = True) -> ModelBundle:
    """Read an exported model folder and check that it is complete.

    Args:
        model_dir: the folder :func:`export_model` wrote.
        verify: also compare every file's sha256 with the manifest (reads every
            checkpoint; turn off where the files were just checked).

    Raises:
        SegflowError: every problem at once: no or a broken manifest, a required file
            unlisted, a listed file missing or (with ``verify``) changed, unreadable
            dataset.json / selection.json / postprocessing.json, or a selection that does
            not match the manifest's configurations.
    """
    root = Path(model_dir)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise SegflowError(
            "not an exported segflow model",
            [Problem(str(root), f"has no {MANIFEST_NAME}")],
        )
    problems: list[Problem] = []
    manifest = _read_json_file(manifest_path, problems)
    if manifest is not None:
        problems += manifest_problems(manifest, str(manifest_path))
    if problems:
        raise SegflowError(f"{root} is not a valid segflow model", problems)

    files: dict[str, str] = manifest["files"]
    configurations = _configurations(manifest)
    for name in bundle_files(configurations, _previous_stages(manifest)):
        if name not in files:
            problems.append(Problem(str(manifest_path), f"does not list the required {name}"))
    for name, digest in files.items():
        path = root / name
        if not path.is_file():
            problems.append(Problem(str(path), "is listed in the manifest but missing"))
        elif verify and file_sha256(path) != digest:
            problems.append(
                Problem(
                    str(path),
                    "its sha256 differs from the manifest's: the file was changed or damaged",
                )
            )
    parsed = {
        name: _read_json_file(root / name, problems) if (root / name).is_file() else None
        for name in ("dataset.json", "selection.json", "postprocessing.json")
    }
    dataset = None
    if parsed["dataset.json"] is not None:
        dataset, dataset_problems = parse_dataset_json(
            parsed["dataset.json"], str(root / "dataset.json")
        )
        problems += dataset_problems
    selection = parsed["selection.json"]
    if selection is not None:
        names, folds = selected_models(selection, str(root / "selection.json"), problems)
        expected = {name: tuple(folds) for name in names}
        if names and folds and expected != configurations:
            problems.append(
                Problem(
                    str(root / "selection.json"),
                    "selects "
                    f"{_describe(expected)} but the model holds "
                    f"{_describe(configurations)}",
                )
            )
    postprocessing = parsed["postprocessing.json"]
    if postprocessing is not None and not isinstance(postprocessing, dict):
        problems.append(Problem(str(root / "postprocessing.json"), "expected a JSON object"))
    if problems or dataset is None:
        raise SegflowError(f"{root} is not a complete segflow model", problems)
    return ModelBundle(root, manifest, dataset, selection, postprocessing, configurations)


def _describe(configurations: Mapping[str, tuple[int, ...]]) -> str:
    return "; ".join(f"{name} folds {list(folds)}" for name, folds in configurations.items())
