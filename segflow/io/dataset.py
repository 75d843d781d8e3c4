"""The nnU-Net v2 raw dataset description: ``dataset.json``.

A dataset folder holds ``dataset.json``, ``imagesTr/<case>_<XXXX><ending>`` (one file per
channel), ``labelsTr/<case><ending>`` and optionally ``imagesTs/`` and ``labelsTs/``.
"""

from __future__ import annotations

import codecs
import errno
import json
import re
import reprlib
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from segflow.errors import DatasetError, Problem
from segflow.io.image import SUPPORTED_ENDINGS

__all__ = [
    "IGNORE_LABEL_NAME",
    "MAX_DATASET_JSON_BYTES",
    "MAX_LABEL_VALUE",
    "MAX_NESTING",
    "DatasetJson",
    "listing",
    "load_dataset_json",
    "parse_dataset_json",
    "pools_intensities",
    "read_dataset_json_file",
]

IGNORE_LABEL_NAME = "ignore"
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
#: Largest label value: segmentations are stored and trained on as int16.
MAX_LABEL_VALUE = 32767
#: dataset.json files larger than this are refused before they are read.
MAX_DATASET_JSON_BYTES = 64 * 1024 * 1024
#: Deepest nesting of objects and arrays accepted in dataset.json.
MAX_NESTING = 32
_MAX_PROBLEMS = 20
_MAX_ENTRY_PROBLEMS = 8


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
        unusable: keys whose values were unusable and are left empty; only a partial
            parse (``parse_dataset_json(..., partial=True)``) returns such a dataset.
    """

    channel_names: dict[int, str]
    labels: dict[str, int | tuple[int, ...]]
    num_training: int
    file_ending: str
    regions_class_order: tuple[int, ...] | None = None
    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    unusable: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

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


def _show(value: Any) -> str:
    """A short repr of a user's value for a message (long lists and strings are cut)."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 6
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlong = 24


def pools_intensities(channel_name: str) -> bool:
    """Whether a channel so named is normalized with the dataset's pooled foreground
    intensity statistics (CT normalization, chosen by the name "CT" in any letter case; see
    :mod:`segflow.planning.normalization`, which a test keeps in step): one case's intensities
    then change every other case's normalized values."""
    return channel_name.casefold() == "ct"


def listing(values: Sequence[Any], limit: int = 8) -> str:
    """``a, b, c`` for a few values; the first ``limit`` and the count for many (strings
    unquoted, long ones cut)."""
    shown = ", ".join(_plain(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} in all)"
    return shown


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value if len(value) <= _SHORT.maxstring else value[: _SHORT.maxstring] + "..."
    return str(value) if isinstance(value, int) else _show(value)


# A channel key is a channel index written plainly: "0", "1", ..., no sign, no leading zero.
_CHANNEL_KEY = re.compile(r"0|[1-9][0-9]{0,3}")
#: Channel files are numbered _0000 to _9999.
MAX_CHANNELS = 10_000


def _parse_channel_names(cn: Any, where: str, problems: list[Problem]) -> dict[int, str]:
    if not isinstance(cn, dict) or not cn:
        problems.append(
            Problem(where, '\'channel_names\' must be a non-empty object like {"0": "CT"}')
        )
        return {}
    channel_names: dict[int, str] = {}
    bad = 0
    for key, name in cn.items():
        if _CHANNEL_KEY.fullmatch(key) and isinstance(name, str):
            channel_names[int(key)] = name
        else:
            bad += 1
            if bad <= _MAX_ENTRY_PROBLEMS:  # the rest are counted, not described
                problems.append(
                    Problem(
                        where,
                        f"'channel_names' entry {_show(key)}: {_show(name)} must map a channel "
                        f'index "0", "1", ... "{MAX_CHANNELS - 1}" (plain digits) to a name',
                    )
                )
    if bad > _MAX_ENTRY_PROBLEMS:
        more = bad - _MAX_ENTRY_PROBLEMS
        problems.append(Problem(where, f"... and {more} more such 'channel_names' entries"))
    expected = list(range(len(channel_names)))
    if channel_names and sorted(channel_names) != expected:
        problems.append(
            Problem(
                where,
                f"'channel_names' keys must be 0..{expected[-1]}, "
                f"found [{listing(sorted(channel_names))}]",
            )
        )
        return {}
    return {} if bad else channel_names


def _parse_label_value(name: str, value: int, where: str, problems: list[Problem]) -> bool:
    if 0 <= value <= MAX_LABEL_VALUE:
        return True
    problems.append(
        Problem(
            where,
            f"label {_show(name)} has the value {_show(value)}; label values must be 0 to "
            f"{MAX_LABEL_VALUE} (segmentations are stored as 16-bit integers)",
        )
    )
    return False


def _parse_labels(lb: Any, where: str, problems: list[Problem]) -> dict[str, int | tuple[int, ...]]:
    if not isinstance(lb, dict) or not lb:
        problems.append(
            Problem(
                where, '\'labels\' must be a non-empty object like {"background": 0, "tumor": 1}'
            )
        )
        return {}
    labels: dict[str, int | tuple[int, ...]] = {}
    entries: list[Problem] = []  # one per bad label; only the first few are described
    usable = True
    for name, value in lb.items():
        if _is_int(value):
            usable &= _parse_label_value(name, value, where, entries)
            labels[name] = value
        elif isinstance(value, list) and value and all(_is_int(i) for i in value):
            usable &= all(_parse_label_value(name, i, where, entries) for i in value)
            # A one-value list is a plain label; a region needs at least two (as in nnU-Net).
            labels[name] = value[0] if len(value) == 1 else tuple(value)
        else:
            usable = False
            entries.append(
                Problem(
                    where,
                    f"label {_show(name)} must be an integer (or a list of integers for a "
                    f"region), found {_show(value)}",
                )
            )
    problems += entries[:_MAX_ENTRY_PROBLEMS]
    if len(entries) > _MAX_ENTRY_PROBLEMS:
        more = len(entries) - _MAX_ENTRY_PROBLEMS
        problems.append(Problem(where, f"... and {more} more such 'labels' entries"))
    if labels and labels.get("background") != 0:
        usable = False
        problems.append(Problem(where, "'labels' must contain \"background\": 0"))
    return labels if usable else {}


def _parse_file_ending(raw: dict[str, Any], where: str, problems: list[Problem]) -> str | None:
    """The file ending; one that only differs in letter case is a problem but still usable."""
    if "file_ending" not in raw:
        return None
    file_ending = raw["file_ending"]
    if isinstance(file_ending, str) and file_ending in SUPPORTED_ENDINGS:
        return file_ending
    if isinstance(file_ending, str) and file_ending.lower() in SUPPORTED_ENDINGS:
        problems.append(
            Problem(
                where,
                f"'file_ending' {file_ending!r} must be lower case: {file_ending.lower()!r} "
                "(and the files named with it)",
            )
        )
        return file_ending.lower()  # a partial parse looks for the files as they should be
    problems.append(
        Problem(
            where,
            f"'file_ending' {_show(file_ending)} is not supported; "
            f"expected one of {', '.join(SUPPORTED_ENDINGS)}",
        )
    )
    return None


def parse_dataset_json(
    raw: Any, where: str = "dataset.json", *, partial: bool = False
) -> tuple[DatasetJson | None, list[Problem]]:
    """Check the structure of a parsed dataset.json; return it typed, and every problem.

    Args:
        raw: the parsed JSON.
        where: how problems name the file.
        partial: return what is usable despite problems, so that a validation can go on
            checking the files: a dataset is returned whenever ``channel_names`` and
            ``file_ending`` are usable; unusable keys get empty values and are named in
            :attr:`DatasetJson.unusable`.

    Returns:
        ``(dataset, problems)``; without ``partial`` the dataset is None whenever there is a
        problem.
    """
    if not isinstance(raw, dict):
        return None, [Problem(where, "expected a JSON object at the top level")]
    ambiguous = {k for k, v in raw.items() if isinstance(v, _Ambiguous)}
    if ambiguous:  # each was reported by the reader; what is left may still be usable
        dataset, problems = parse_dataset_json(
            {k: v for k, v in raw.items() if k not in ambiguous}, where, partial=partial
        )
        given_twice = {f"missing required key '{k}'" for k in ambiguous}
        problems = [p for p in problems if p.message not in given_twice]
        if dataset is not None:
            unusable = dataset.unusable | (ambiguous & {"labels", "numTraining"})
            dataset = replace(dataset, raw=raw, unusable=frozenset(unusable))
            if "channel_names" in ambiguous or "file_ending" in ambiguous:
                dataset = None
        return (dataset if partial else None), problems
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
    num_training_ok = _is_int(num_training) and num_training >= 0
    if "numTraining" in raw and not num_training_ok:
        problems.append(
            Problem(
                where,
                f"'numTraining' must be a non-negative integer, found {_show(num_training)}",
            )
        )

    file_ending = _parse_file_ending(raw, where, problems)

    rco = raw.get("regions_class_order")
    rco_ok = rco is None or (isinstance(rco, list) and all(_is_int(i) for i in rco))
    if not rco_ok:
        problems.append(Problem(where, "'regions_class_order' must be a list of integers"))

    name = raw.get("name", "")
    if not isinstance(name, str):
        problems.append(Problem(where, f"'name' must be a string, found {_show(name)}"))
        name = ""

    problems = _capped(problems, where)
    if not channel_names or file_ending is None or (problems and not partial):
        return None, problems
    unusable = {
        key
        for key, ok in (
            ("labels", bool(labels)),
            ("numTraining", num_training_ok),
            ("regions_class_order", rco_ok),
        )
        if not ok
    }
    return (
        DatasetJson(
            channel_names=channel_names,
            labels=labels,
            num_training=num_training if num_training_ok else 0,
            file_ending=file_ending,
            regions_class_order=tuple(rco) if rco is not None and rco_ok else None,
            name=name,
            raw=raw,
            unusable=frozenset(unusable),
        ),
        problems,
    )


def _capped(problems: list[Problem], where: str) -> list[Problem]:
    """At most :data:`_MAX_PROBLEMS` problems, and a count of the rest: a file of a million
    bad entries gets a report of a few lines."""
    if len(problems) <= _MAX_PROBLEMS:
        return problems
    rest = len(problems) - _MAX_PROBLEMS
    return [*problems[:_MAX_PROBLEMS], Problem(where, f"... and {rest} more problems like these")]


def read_dataset_json_file(path: str | Path, where: str | None = None) -> tuple[Any, list[Problem]]:
    """Read the JSON of a dataset.json file; return it (None if unusable) and its problems.

    Every reader of dataset.json goes through here, so that each reads the same files the
    same way: strict UTF-8 without byte-order mark, standard JSON (no ``NaN``, no key twice
    in one object), at most :data:`MAX_DATASET_JSON_BYTES` and :data:`MAX_NESTING` levels.

    Args:
        path: the file.
        where: how problems name it (default: the path).
    """
    path = Path(path)
    where = str(path) if where is None else where
    data, problems = _read_bytes(path, where)
    return (None, problems) if data is None else _decode_json(data, where)


def _read_bytes(path: Path, where: str) -> tuple[bytes | None, list[Problem]]:
    """The file's bytes, or None and why not (missing, a folder, a link loop, too large)."""
    try:
        info = path.stat()
    except OSError as err:
        if err.errno == errno.ENOENT and not path.is_symlink():
            return None, [Problem(where, "file does not exist")]
        what = "a symbolic link loop" if err.errno == errno.ELOOP else "a broken symbolic link"
        if err.errno not in (errno.ELOOP, errno.ENOENT):
            what = f"unreadable ({err.strerror or err})"
        return None, [Problem(where, f"is {what}; expected the dataset's JSON file")]
    if stat.S_ISDIR(info.st_mode):
        return None, [Problem(where, "is a folder; expected the dataset's JSON file")]
    if not stat.S_ISREG(info.st_mode):
        return None, [Problem(where, "is not a regular file (a pipe, socket or device)")]
    if info.st_size > MAX_DATASET_JSON_BYTES:
        return None, [
            Problem(
                where,
                f"{info.st_size:,} bytes; a dataset.json is a few kB (at most "
                f"{MAX_DATASET_JSON_BYTES:,} bytes are read)",
            )
        ]
    try:
        return path.read_bytes(), []
    except OSError as err:
        return None, [Problem(where, f"cannot be read ({err.strerror or err})")]


def _decode_json(data: bytes, where: str) -> tuple[Any, list[Problem]]:
    if data.startswith(codecs.BOM_UTF8):
        return None, [Problem(where, "starts with a byte-order mark; save it as UTF-8 without BOM")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return None, [
            Problem(
                where,
                f"not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} cannot be "
                "decoded; save the file as UTF-8",
            )
        ]
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                duplicates.append(key)
                # Which value was meant is unknown: neither is used.
                obj[key] = _Ambiguous()
            else:
                obj[key] = value
        return obj

    def constant(name: str) -> Any:
        raise _NonStandardNumber(name)

    try:
        raw = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as err:
        return None, [Problem(where, f"not valid JSON ({err})")]
    except _NonStandardNumber as err:
        return None, [
            Problem(where, f"not valid JSON: {err.args[0]} is not a JSON number (use a number)")
        ]
    except RecursionError:
        return None, [Problem(where, "not usable JSON: nested too deeply")]
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        return None, [Problem(where, f"not usable JSON ({err})")]
    problems = [
        Problem(
            where, f"key {_show(key)} appears more than once in one object; keys must be unique"
        )
        for key in dict.fromkeys(duplicates)
    ]
    if _nesting(raw) > MAX_NESTING:
        return None, [
            *problems,
            Problem(
                where,
                f"nested more than {MAX_NESTING} levels deep; a dataset.json needs a few",
            ),
        ]
    return raw, problems


class _Ambiguous:
    """The value of a key given twice in one object: neither of its values is used."""

    def __repr__(self) -> str:
        return "<given twice>"


class _NonStandardNumber(ValueError):
    """JSON text held NaN, Infinity or -Infinity, which Python accepts but JSON does not."""


def _nesting(value: Any) -> int:
    """How many levels of objects and arrays ``value`` holds (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_NESTING:
            stack.extend((child, depth + 1) for child in children)
    return deepest


def load_dataset_json(path: str | Path) -> DatasetJson:
    """Read and check ``dataset.json``.

    Raises:
        DatasetError: the file is missing, not JSON, or lacks what segflow needs; every
            problem found is listed.
    """
    path = Path(path)
    data, problems = _read_bytes(path, str(path))
    if data is None:
        missing = problems[0].message == "file does not exist"
        raise DatasetError("dataset.json not found" if missing else f"cannot read {path}", problems)
    raw, problems = _decode_json(data, str(path))
    if raw is None:
        raise DatasetError(f"{path} is not valid JSON", problems)
    dataset, more = parse_dataset_json(raw, str(path))
    problems += more
    if dataset is None or problems:
        raise DatasetError(f"{path} is not a valid nnU-Net v2 dataset.json", problems)
    return dataset
