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

__all__ = ["IGNORE_LABEL_NAME", "DatasetJson", "load_dataset_json", "parse_dataset_json"]

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
    def foreground_classes(self) -> dict[str, int | tuple[int, ...]]:
        """Name -> value (or a region's values) of every label but the ignore label and
        those whose values are all background (0), in ``dataset.json`` order."""
        classes: dict[str, int | tuple[int, ...]] = {}
        for name, value in self.labels.items():
            values = value if isinstance(value, tuple) else (value,)
            if name != IGNORE_LABEL_NAME and set(values) != {0}:
                classes[name] = value
        return classes

    @property
    def num_segmentation_heads(self) -> int:
        """Network outputs: one per region, or one per class including background."""
        if self.has_regions:
            return sum(1 for k in self.labels if k not in ("background", IGNORE_LABEL_NAME))
        return sum(1 for k in self.labels if k != IGNORE_LABEL_NAME)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_channel_names(cn: Any, where: str, problems: list[Problem]) -> dict[int, str]:
    if not isinstance(cn, dict) or not cn:
        problems.append(
            Problem(where, '\'channel_names\' must be a non-empty object like {"0": "CT"}')
        )
        return {}
    channel_names: dict[int, str] = {}
    for key, name in cn.items():
        if isinstance(key, str) and key.isdigit() and isinstance(name, str):
            channel_names[int(key)] = name
        else:
            problems.append(
                Problem(
                    where,
                    f'\'channel_names\' entry {key!r}: {name!r} must map "0", "1", ... to a name',
                )
            )
    expected = list(range(len(channel_names)))
    if channel_names and sorted(channel_names) != expected:
        problems.append(
            Problem(
                where,
                f"'channel_names' keys must be 0..{expected[-1]}, found {sorted(channel_names)}",
            )
        )
    return channel_names


def _parse_labels(lb: Any, where: str, problems: list[Problem]) -> dict[str, int | tuple[int, ...]]:
    if not isinstance(lb, dict) or not lb:
        problems.append(
            Problem(
                where, '\'labels\' must be a non-empty object like {"background": 0, "tumor": 1}'
            )
        )
        return {}
    labels: dict[str, int | tuple[int, ...]] = {}
    for name, value in lb.items():
        if _is_int(value):
            labels[name] = value
        elif isinstance(value, list) and value and all(_is_int(i) for i in value):
            # A one-value list is a plain label; a region needs at least two (as in nnU-Net).
            labels[name] = value[0] if len(value) == 1 else tuple(value)
        else:
            problems.append(
                Problem(
                    where,
                    f"label '{name}' must be an integer (or a list of integers for a region), "
                    f"found {value!r}",
                )
            )
    if labels and labels.get("background") != 0:
        problems.append(Problem(where, "'labels' must contain \"background\": 0"))
    return labels


def parse_dataset_json(
    raw: Any, where: str = "dataset.json"
) -> tuple[DatasetJson | None, list[Problem]]:
    """Check the structure of a parsed dataset.json; return it typed, and every problem.

    Returns ``(None, problems)`` when the file is too broken to describe a dataset.
    """
    if not isinstance(raw, dict):
        return None, [Problem(where, "expected a JSON object at the top level")]
    problems = [
        Problem(where, f"missing required key '{key}'") for key in REQUIRED_KEYS if key not in raw
    ]
    channel_names = (
        _parse_channel_names(raw["channel_names"], where, problems)
        if "channel_names" in raw
        else {}
    )
    labels = _parse_labels(raw["labels"], where, problems) if "labels" in raw else {}

    num_training = raw.get("numTraining")
    if "numTraining" in raw and not (_is_int(num_training) and num_training >= 0):
        problems.append(
            Problem(where, f"'numTraining' must be a non-negative integer, found {num_training!r}")
        )

    file_ending = raw.get("file_ending")
    if "file_ending" in raw and not (
        isinstance(file_ending, str) and file_ending.lower() in SUPPORTED_ENDINGS
    ):
        problems.append(
            Problem(
                where,
                f"'file_ending' {file_ending!r} is not supported; "
                f"expected one of {', '.join(SUPPORTED_ENDINGS)}",
            )
        )

    rco = raw.get("regions_class_order")
    if rco is not None and not (isinstance(rco, list) and all(_is_int(i) for i in rco)):
        problems.append(Problem(where, "'regions_class_order' must be a list of integers"))

    if problems or not channel_names or not labels:
        return None, problems
    return (
        DatasetJson(
            channel_names=channel_names,
            labels=labels,
            num_training=num_training,
            file_ending=file_ending,
            regions_class_order=tuple(rco) if rco is not None else None,
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
        raise DatasetError(
            "dataset.json is not valid JSON", [Problem(str(path), str(err))]
        ) from None
    dataset, problems = parse_dataset_json(raw, str(path))
    if dataset is None or problems:
        raise DatasetError(f"{path} is not a valid nnU-Net v2 dataset.json", problems)
    return dataset
