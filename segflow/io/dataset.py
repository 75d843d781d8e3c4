"""The nnU-Net v2 raw dataset description: ``dataset.json``.

A dataset folder holds ``dataset.json``, ``imagesTr/<case>_<XXXX><ending>`` (one file per
channel), ``labelsTr/<case><ending>`` and optionally ``imagesTs/`` and ``labelsTs/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segflow.errors import DatasetError, Problem
from segflow.io.image import SUPPORTED_ENDINGS

__all__ = ["DatasetJson", "load_dataset_json", "parse_dataset_json", "IGNORE_LABEL_NAME"]

IGNORE_LABEL_NAME = "ignore"
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


@dataclass(frozen=True)
class DatasetJson:
    """Typed view of ``dataset.json``.

    Attributes:
        channel_names: channel index -> name (the name picks the normalization: "CT", ...).
        labels: label name -> value (int), or -> list of values for region-based labels.
        num_training: ``numTraining``.
        file_ending: e.g. ``.nii.gz``.
        regions_class_order: for region-based training, the value each region writes.
        raw: the whole parsed file.
    """

    channel_names: dict[int, str]
    labels: dict[str, int | tuple[int, ...]]
    num_training: int
    file_ending: str
    regions_class_order: tuple[int, ...] | None = None
    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, tuple) for v in self.labels.values())

    @property
    def ignore_label(self) -> int | None:
        value = self.labels.get(IGNORE_LABEL_NAME)
        return value if isinstance(value, int) else None

    @property
    def label_values(self) -> list[int]:
        """Every value a label file may contain (regions expanded), ignore label included."""
        values: set[int] = set()
        for v in self.labels.values():
            values.update(v if isinstance(v, tuple) else (v,))
        return sorted(values)

    @property
    def foreground_labels(self) -> list[int]:
        """Label values other than background (0) and the ignore label."""
        ignore = self.ignore_label
        return [v for v in self.label_values if v != 0 and v != ignore]

    @property
    def num_segmentation_heads(self) -> int:
        """Network outputs: one per region, or one per class including background."""
        if self.has_regions:
            return sum(1 for k in self.labels if k not in ("background", IGNORE_LABEL_NAME))
        return sum(1 for k in self.labels if k != IGNORE_LABEL_NAME)


def parse_dataset_json(raw: Any, where: str = "dataset.json") -> tuple[DatasetJson | None, list[Problem]]:
    """Check the structure of a parsed dataset.json; return it typed, and every problem.

    Returns ``(None, problems)`` when the file is too broken to describe a dataset.
    """
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        return None, [Problem(where, "expected a JSON object at the top level")]
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.append(Problem(where, f"missing required key '{key}'"))

    channel_names: dict[int, str] = {}
    cn = raw.get("channel_names")
    if cn is not None:
        if not isinstance(cn, dict) or not cn:
            problems.append(Problem(where, "'channel_names' must be a non-empty object like {\"0\": \"CT\"}"))
        else:
            for k, v in cn.items():
                if not (isinstance(k, str) and k.isdigit()) or not isinstance(v, str):
                    problems.append(Problem(where, f"'channel_names' entry {k!r}: {v!r} must map \"0\", \"1\", ... to a name"))
                else:
                    channel_names[int(k)] = v
            if channel_names and sorted(channel_names) != list(range(len(channel_names))):
                problems.append(Problem(where, f"'channel_names' keys must be 0..{len(channel_names) - 1}, found {sorted(channel_names)}"))

    labels: dict[str, int | tuple[int, ...]] = {}
    lb = raw.get("labels")
    if lb is not None:
        if not isinstance(lb, dict) or not lb:
            problems.append(Problem(where, "'labels' must be a non-empty object like {\"background\": 0, \"tumor\": 1}"))
        else:
            for name, value in lb.items():
                if isinstance(value, bool) or not (
                    isinstance(value, int)
                    or (isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value))
                ):
                    problems.append(Problem(where, f"label '{name}' must be an integer (or a list of integers for a region), found {value!r}"))
                    continue
                labels[name] = tuple(value) if isinstance(value, list) else value
            if labels and labels.get("background") not in (0, (0,)):
                problems.append(Problem(where, "'labels' must contain \"background\": 0"))

    num_training = raw.get("numTraining")
    if "numTraining" in raw and (isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 0):
        problems.append(Problem(where, f"'numTraining' must be a non-negative integer, found {num_training!r}"))
        num_training = None

    file_ending = raw.get("file_ending")
    if "file_ending" in raw and (not isinstance(file_ending, str) or file_ending.lower() not in SUPPORTED_ENDINGS):
        problems.append(Problem(where, f"'file_ending' {file_ending!r} is not supported; expected one of {', '.join(SUPPORTED_ENDINGS)}"))
        file_ending = None

    rco = raw.get("regions_class_order")
    regions_class_order = None
    if rco is not None:
        if not isinstance(rco, list) or not all(isinstance(i, int) for i in rco):
            problems.append(Problem(where, "'regions_class_order' must be a list of integers"))
        else:
            regions_class_order = tuple(rco)

    if problems or not channel_names or not labels or num_training is None or file_ending is None:
        return None, problems
    return (
        DatasetJson(
            channel_names=channel_names,
            labels=labels,
            num_training=num_training,
            file_ending=file_ending,
            regions_class_order=regions_class_order,
            name=str(raw.get("name", "")),
            raw=raw,
        ),
        problems,
    )


def load_dataset_json(path: str | Path) -> DatasetJson:
    """Read and check ``dataset.json``.

    Raises:
        DatasetError: the file is missing, not JSON, or lacks what segflow needs; every
            problem found is listed.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("dataset.json not found", [Problem(str(path), "file does not exist")])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError("dataset.json is not valid JSON", [Problem(str(path), str(err))]) from None
    dataset, problems = parse_dataset_json(raw, str(path))
    if dataset is None or problems:
        raise DatasetError(f"{path} is not a valid nnU-Net v2 dataset.json", problems)
    return dataset
