"""Medical Segmentation Decathlon and nnU-Net v1 datasets in nnU-Net v2's raw layout.

``segflow convert-msd TASK -o DATASET`` reads a Decathlon task (``TaskXX_Name/`` with a
``dataset.json`` listing ``modality``, ``labels``, ``training`` and ``test``, and 4D NIfTI
images whose last axis is the channel) and writes the v2 layout: one
``<case>_<XXXX>.nii.gz`` per channel, each with the 4D image's header (affine, qform and sform
codes, units, data type, description), the labels copied byte for byte, and a v2
``dataset.json`` (``channel_names``, ``labels`` by name, ``numTraining``, ``file_ending``).
Single-channel (3D) images are copied byte for byte.

``segflow convert-nnunet-v1 TASK -o DATASET`` does the same for an nnU-Net v1 raw dataset,
whose images are already one file per channel: the files are copied, the dataset.json
rewritten.

Both read the source only, write into a folder beside the output that is renamed into place
once complete, and end by validating what they wrote (:func:`segflow.validation.validate_dataset`,
every problem at once); a dataset that does not validate is not left behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.io.atomic import write_json
from segflow.io.paths import output_folder_problems

__all__ = ["convert_msd", "convert_nnunet_v1"]

logger = logging.getLogger(__name__)

ENDING = ".nii.gz"


def _case_id(entry: str) -> str:
    """``./imagesTr/hippocampus_367.nii.gz`` -> ``hippocampus_367``."""
    name = Path(entry).name
    return name[: -len(ENDING)] if name.endswith(ENDING) else Path(name).stem


def _read_task(task: Path) -> tuple[dict[str, Any], list[Problem]]:
    where = task / "dataset.json"
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, [Problem(str(where), "does not exist: not a Decathlon or nnU-Net v1 task")]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return {}, [Problem(str(where), f"is not readable JSON: {err}")]
    if not isinstance(raw, dict):
        return {}, [Problem(str(where), "expected a JSON object")]
    problems = [
        Problem(str(where), f"lacks '{key}'")
        for key in ("modality", "labels", "training")
        if key not in raw
    ]
    return raw, problems


def _entries(raw: Mapping[str, Any], task: Path, problems: list[Problem]):
    """``(case id, image path, label path or None, split)`` of every listed case."""
    where = str(task / "dataset.json")
    cases = []
    for entry in raw.get("training") or []:
        if not (isinstance(entry, Mapping) and {"image", "label"} <= set(entry)):
            problems.append(Problem(where, f"training entry {entry!r} lacks image or label"))
            continue
        cases.append((_case_id(entry["image"]), task / entry["image"], task / entry["label"], "Tr"))
    for entry in raw.get("test") or []:
        image = entry["image"] if isinstance(entry, Mapping) else entry
        cases.append((_case_id(image), task / image, None, "Ts"))
    return cases


def _v2_dataset_json(raw: Mapping[str, Any], num_training: int, where: str,
                     problems: list[Problem]) -> dict[str, Any]:  # fmt: skip
    modality = raw.get("modality") or {}
    labels: dict[str, int] = {}
    for value, name in (raw.get("labels") or {}).items():
        try:
            labels[str(name)] = int(value)
        except (TypeError, ValueError):
            problems.append(Problem(where, f"label value {value!r} is not an integer"))
    if len(labels) != len(raw.get("labels") or {}):
        problems.append(Problem(where, "two labels share a name"))
    out = {
        "channel_names": {str(k): str(v) for k, v in modality.items()},
        "labels": dict(sorted(labels.items(), key=lambda item: item[1])),
        "numTraining": num_training,
        "file_ending": ENDING,
    }
    for key in ("name", "description", "reference", "licence", "release"):
        if key in raw:
            out[key] = raw[key]
    return out


def _split_channels(source: Path, targets: list[Path], problems: list[Problem]) -> None:
    """One file per channel of a 4D NIfTI (channel last), each with the source's header."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(source))
    shape = image.shape
    if len(targets) == 1 and len(shape) == 3:
        shutil.copyfile(source, targets[0])
        return
    if len(shape) != 4 or shape[3] != len(targets):
        problems.append(Problem(str(source), f"has shape {shape}, expected 3 spatial axes and "
                                f"{len(targets)} channels (dataset.json's modality)"))  # fmt: skip
        return
    for channel, target in enumerate(targets):
        data = np.asanyarray(image.dataobj[..., channel])
        header = image.header.copy()
        header.set_data_shape(data.shape)
        zooms = image.header.get_zooms()[:3]
        header.set_zooms(zooms)
        part = nib.Nifti1Image(data, image.affine, header)
        part.set_qform(*image.get_qform(coded=True))
        part.set_sform(*image.get_sform(coded=True))
        nib.save(part, str(target))


def _source_problems(task: Path, output: Path) -> list[Problem]:
    problems = output_folder_problems(output, "the converted dataset", for_images=False)
    if output.is_dir() and any(output.iterdir()):
        problems.append(Problem(str(output), "is not empty; name a new or empty folder"))
    if output.absolute().is_relative_to(task.absolute()):
        problems.append(Problem(str(output), "is inside the source task; the source is read only"))
    return problems


def _convert(task: str | os.PathLike[str], output_dir: str | os.PathLike[str], *,
             split_channels: bool, workers: int) -> Path:  # fmt: skip
    from segflow.validation import validate_dataset

    task, output = Path(task), Path(output_dir)
    raw, problems = _read_task(task)
    problems += _source_problems(task, output)
    cases = _entries(raw, task, problems) if raw else []
    num_channels = len(raw.get("modality") or {})
    for case_id, image, label, _ in cases:
        sources = [image] if split_channels else [
            image.with_name(f"{case_id}_{c:04d}{ENDING}") for c in range(num_channels)
        ]  # fmt: skip
        for path in [*sources, *([label] if label else [])]:
            if not path.is_file():
                problems.append(Problem(str(path), "is listed in dataset.json but missing"))
    num_training = sum(1 for case in cases if case[3] == "Tr")
    dataset = _v2_dataset_json(raw, num_training, str(task / "dataset.json"), problems)
    if problems:
        raise SegflowError(f"cannot convert {task}", problems)
    output.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".tmp-{output.name}-", dir=output.parent))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (folder / sub).mkdir()
        for case_id, image, label, split in cases:
            targets = [
                folder / f"images{split}" / f"{case_id}_{c:04d}{ENDING}"
                for c in range(num_channels)
            ]
            if split_channels:
                _split_channels(image, targets, problems)
            else:
                for c, target in enumerate(targets):
                    shutil.copyfile(image.with_name(f"{case_id}_{c:04d}{ENDING}"), target)
            if label is not None:
                shutil.copyfile(label, folder / "labelsTr" / f"{case_id}{ENDING}")
        if problems:
            raise SegflowError(f"cannot convert {task}", problems)
        if not any((folder / "imagesTs").iterdir()):
            (folder / "imagesTs").rmdir()
        write_json(folder / "dataset.json", dataset)
        report = validate_dataset(folder, workers=workers)
        if output.exists():
            output.rmdir()  # empty (checked above)
        os.replace(folder, output)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("converted %s into %s: %d training and %d test cases, %d channel(s)", task,
                output, len(report["training_cases"]), len(report["test_cases"]),
                num_channels)  # fmt: skip
    return output


def convert_msd(task: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                workers: int = 1) -> Path:  # fmt: skip
    """Write a Decathlon task as an nnU-Net v2 raw dataset and validate it.

    Raises:
        SegflowError: every problem of the task (unreadable dataset.json, missing files,
            images without as many channels as ``modality``), of the output folder (not
            empty, inside the task), or of the converted dataset's validation.
    """
    return _convert(task, output_dir, split_channels=True, workers=workers)


def convert_nnunet_v1(task: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                      workers: int = 1) -> Path:  # fmt: skip
    """Write an nnU-Net v1 raw dataset (``TaskXXX_Name``) in v2's layout and validate it.

    Raises:
        SegflowError: as :func:`convert_msd`; a case misses one of its channel files.
    """
    return _convert(task, output_dir, split_channels=False, workers=workers)
