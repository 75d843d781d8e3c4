"""Finding the cases of a raw dataset from its file names (nnU-Net v2 layout).

A training case ``<case>`` is ``imagesTr/<case>_<XXXX><ending>`` (one file per channel, ``XXXX``
the 4-digit channel index) plus ``labelsTr/<case><ending>``; test cases live in ``imagesTs/``
and, optionally, ``labelsTs/``. Only names and the kind of each entry (file, folder, link,
pipe) are looked at here; what the files hold is checked by :mod:`segflow.validation.checks`.
Every problem is collected, none stops the scan.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from segflow.errors import Problem
from segflow.io.dataset import DatasetJson, listing
from segflow.io.image import NATURAL_2D_ENDINGS, ending_of

__all__ = [
    "IMAGES_TEST",
    "IMAGES_TRAINING",
    "LABELS_TEST",
    "LABELS_TRAINING",
    "CaseFiles",
    "DatasetLayout",
    "check_folders",
    "discover_cases",
]

logger = logging.getLogger(__name__)

IMAGES_TRAINING = "imagesTr"
LABELS_TRAINING = "labelsTr"
IMAGES_TEST = "imagesTs"
LABELS_TEST = "labelsTs"

# The stem of a channel file: the case id, then "_" and exactly four digits.
_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
# A stem that ends in digits but not four of them: a mistyped channel index.
_BAD_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<digits>\d+)$")
# Characters a case id may hold: every rule's shell command gets the file names unquoted.
_UNSAFE_ID_CHAR = re.compile(r"[^\w.+-]")

_MAX_LISTED = 5


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case, as found on disk.

    Attributes:
        case_id: the case identifier (file name without channel suffix and ending).
        split: ``"training"`` or ``"test"``.
        images: existing channel files, relative to the dataset folder, by channel index.
        channels: the channel index of each entry of ``images``.
        label: the label file relative to the dataset folder, or None when there is none.
        channel_files_complete: the channel files are exactly those expected (no missing
            or undeclared index); only then is the total channel count worth checking.
    """

    case_id: str
    split: str
    images: tuple[str, ...]
    channels: tuple[int, ...]
    label: str | None
    channel_files_complete: bool = True


@dataclass
class DatasetLayout:
    """The cases found in a dataset folder, and what is wrong with its file names."""

    training: list[CaseFiles] = field(default_factory=list)
    test: list[CaseFiles] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Scan:
    """What one folder holds: files by case (and channel), plus problems and warnings."""

    images: dict[str, dict[int, str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: names of entries reported as unusable (a folder, a broken link, another ending...)
    rejected: set[str] = field(default_factory=set)
    #: case ids of the rejected entries, whose partner files are not reported again
    rejected_cases: set[str] = field(default_factory=set)


def check_folders(dataset_dir: Path) -> list[Problem]:
    """Check that the folders of the layout exist (``imagesTr``, ``labelsTr``, ...)."""
    problems = []
    for name, what in ((IMAGES_TRAINING, "training images"), (LABELS_TRAINING, "training labels")):
        path = dataset_dir / name
        if not path.is_dir():
            problems.append(Problem(name, f"{_not_a_folder(path)}; the {what} belong in {name}/"))
    if (dataset_dir / LABELS_TEST).is_dir() and not (dataset_dir / IMAGES_TEST).is_dir():
        problems.append(
            Problem(LABELS_TEST, f"test labels but no {IMAGES_TEST}/ folder with their images")
        )
    return problems


def _not_a_folder(path: Path) -> str:
    """Why ``path``, which is no folder, is not one."""
    if path.exists():
        return "is not a folder"
    if path.is_symlink():
        return f"is a broken symbolic link or a link loop (to {os.readlink(path)})"
    return "folder is missing"


def discover_cases(dataset_dir: Path, dataset: DatasetJson) -> DatasetLayout:
    """Find every training and test case from the file names.

    Args:
        dataset_dir: the raw dataset folder.
        dataset: its parsed ``dataset.json`` (file ending and channels).

    Returns:
        The cases (sorted by id, incomplete ones included so that their files still get
        checked) with every naming problem: stray files, wrong endings, bad channel
        indices, missing channel files or labels, labels without images, unsafe case ids
        and a ``numTraining`` that disagrees with the cases found.
    """
    layout = DatasetLayout()
    images_tr = _scan_images(dataset_dir, IMAGES_TRAINING, dataset)
    labels_tr = _scan_labels(dataset_dir, LABELS_TRAINING, dataset)
    for scan in (images_tr, labels_tr):
        layout.problems += scan.problems
        layout.warnings += scan.warnings
    layout.training = _match("training", images_tr, labels_tr, dataset, layout, label_required=True)
    _check_num_training(dataset_dir, dataset, images_tr, labels_tr, layout)

    if (dataset_dir / IMAGES_TEST).is_dir():
        images_ts = _scan_images(dataset_dir, IMAGES_TEST, dataset)
        labels_ts = (
            _scan_labels(dataset_dir, LABELS_TEST, dataset)
            if (dataset_dir / LABELS_TEST).is_dir()
            else None
        )
        for scan in (images_ts, labels_ts):
            if scan is not None:
                layout.problems += scan.problems
                layout.warnings += scan.warnings
        layout.test = _match(
            "test", images_ts, labels_ts or _Scan(), dataset, layout, label_required=False
        )
        if labels_ts is not None:
            unlabelled = [c.case_id for c in layout.test if c.label is None]
            if unlabelled:
                layout.warnings.append(
                    f"{LABELS_TEST}: no label for {len(unlabelled)} test case(s) "
                    f"({_listing(unlabelled)}); they are predicted but not evaluated"
                )

    _check_case_ids(layout)
    return layout


def _entries(dataset_dir: Path, folder: str, scan: _Scan, dataset: DatasetJson) -> list[str]:
    """Names of the regular files in ``folder`` (directly or through links).

    Hidden files and unrelated folders are warned about; every other entry that cannot be a
    case file (a name that is not UTF-8, a folder named like an image, a broken link, a
    link loop, a pipe or device) is a problem, and its case is remembered as rejected so
    that the files it leaves without partner are not reported a second time.
    """
    path = dataset_dir / folder
    if not path.is_dir():
        return []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as err:
        scan.problems.append(Problem(folder, f"folder cannot be read ({err.strerror or err})"))
        return []
    names = []
    for entry in entries:
        where = f"{folder}/{entry.name}"
        if entry.name.startswith("."):
            scan.warnings.append(f"{where}: hidden file ignored")
            continue
        looks_like_case = _looks_like_case_file(entry.name, dataset)
        problem = _entry_problem(entry, looks_like_case)
        if problem == "":
            names.append(entry.name)
        elif problem is None:
            scan.warnings.append(f"{where}/: folder ignored; cases must lie directly in {folder}/")
        else:
            scan.problems.append(Problem(where, problem))
            scan.rejected.add(entry.name)
    return names


def _looks_like_case_file(name: str, dataset: DatasetJson) -> bool:
    return name.endswith(dataset.file_ending) or ending_of(name) is not None


def _entry_problem(entry: os.DirEntry[str], looks_like_case: bool) -> str | None:
    """Why an entry cannot be a case file: "" for a regular file, None for a folder that
    does not look like a case file (only warned about), else the problem."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return (
            "the file name is not valid UTF-8 (undecodable bytes shown as \\xNN); rename "
            "it: SimpleITK and the workflow need UTF-8 names"
        )
    link = f" (a symbolic link to {os.readlink(entry.path)})" if entry.is_symlink() else ""
    try:
        mode = os.stat(entry.path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"symbolic link loop{link}; expected an image file"
        if err.errno == errno.ENOENT:
            return f"broken symbolic link{link}: its target does not exist"
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        if not looks_like_case:
            return None
        return f"is a folder{link}, not a file; expected an image file by this name"
    return f"is not a regular file{link} (a pipe, socket or device); expected an image file"


def _split_ending(name: str, dataset: DatasetJson) -> tuple[str | None, str | None]:
    """``(stem, None)`` for a name with the dataset's ending, else ``(None, other ending)``."""
    if name.endswith(dataset.file_ending):
        return name[: -len(dataset.file_ending)], None
    other = ending_of(name)
    return None, (name[-len(other) :] if other is not None else None)  # as the name spells it


def _strip_ending(name: str, dataset: DatasetJson) -> str:
    stem, other = _split_ending(name, dataset)
    return stem if stem is not None else name[: -len(other)] if other else name


def _scan_images(dataset_dir: Path, folder: str, dataset: DatasetJson) -> _Scan:
    scan = _Scan()
    ending = dataset.file_ending
    wrong_ending: list[tuple[str, str]] = []
    for name in _entries(dataset_dir, folder, scan, dataset):
        where = f"{folder}/{name}"
        stem, other = _split_ending(name, dataset)
        if stem is None:
            if other is not None:
                wrong_ending.append((name, other))
            else:
                scan.problems.append(
                    Problem(
                        where,
                        f"stray file: {folder}/ must only hold image files named "
                        f"<case>_<XXXX>{ending} (XXXX: the 4-digit channel index)",
                    )
                )
            continue
        match = _CHANNEL_STEM.match(stem)
        if match is None:
            scan.problems.append(Problem(where, _bad_channel_name(stem, ending)))
            continue
        case_id, channel = match["case"], int(match["channel"])
        scan.images.setdefault(case_id, {})[channel] = where

    for name in scan.rejected | {name for name, _ in wrong_ending}:
        match = _CHANNEL_STEM.match(_strip_ending(name, dataset))
        if match is not None:
            scan.rejected_cases.add(match["case"])
    for name, other in wrong_ending:
        message = _wrong_ending(name, other, dataset)
        match = _CHANNEL_STEM.match(name[: -len(other)])
        if match is not None:
            twin = scan.images.get(match["case"], {}).get(int(match["channel"]))
            if twin is not None:
                message = (
                    f"duplicate of {twin} (case '{match['case']}', channel "
                    f"{int(match['channel'])}) with another ending; {message}; remove one"
                )
        scan.problems.append(Problem(f"{folder}/{name}", message))
    return scan


def _scan_labels(dataset_dir: Path, folder: str, dataset: DatasetJson) -> _Scan:
    scan = _Scan()
    wrong_ending: list[tuple[str, str]] = []
    for name in _entries(dataset_dir, folder, scan, dataset):
        stem, other = _split_ending(name, dataset)
        if stem is None:
            if other is not None:
                wrong_ending.append((name, other))
            else:
                scan.problems.append(
                    Problem(
                        f"{folder}/{name}",
                        f"stray file: {folder}/ must only hold label "
                        f"files named <case>{dataset.file_ending}",
                    )
                )
            continue
        scan.labels[stem] = f"{folder}/{name}"

    for name in scan.rejected | {name for name, _ in wrong_ending}:
        scan.rejected_cases.add(_strip_ending(name, dataset))
    for name, other in wrong_ending:
        message = _wrong_ending(name, other, dataset)
        twin = scan.labels.get(name[: -len(other)])
        if twin is not None:
            message = f"duplicate of {twin} with another ending; {message}; remove one"
        scan.problems.append(Problem(f"{folder}/{name}", message))
    return scan


def _wrong_ending(name: str, other: str, dataset: DatasetJson) -> str:
    # dataset.json's own spelling: an upper-case ending there is reported with dataset.json
    # and looked for in lower case; the messages quote what the file says.
    declared = dataset.raw.get("file_ending")
    declared = declared if isinstance(declared, str) else dataset.file_ending
    rename = f"rename it to {name[: -len(other)]}{dataset.file_ending}"
    if other == declared:
        return f"file ending '{other}' (dataset.json's file_ending) must be lower case; {rename}"
    if other.lower() == dataset.file_ending.lower():
        return (
            f"file ending '{other}' differs in letter case from dataset.json file_ending "
            f"'{declared}'; {rename}"
        )
    return (
        f"file ending '{other}' differs from dataset.json file_ending "
        f"'{declared}'; all images and labels must use the same format"
    )


def _bad_channel_name(stem: str, ending: str) -> str:
    message = f"name does not end in _XXXX (the 4-digit channel index) before {ending}; "
    bad = _BAD_CHANNEL_STEM.match(stem)
    if bad is not None:
        return message + (
            f"expected {bad['case']}_{int(bad['digits']):04d}{ending} if '_{bad['digits']}' "
            f"is the channel index, or {stem}_0000{ending} if this is case '{stem}'"
        )
    return message + f"if this is case '{stem}', name its first channel {stem}_0000{ending}"


def _declared_channels(dataset: DatasetJson) -> str:
    names = listing([f"{i}: {n}" for i, n in sorted(dataset.channel_names.items())])
    return f"dataset.json declares {dataset.num_channels} channel(s) ({names})"


def _match(
    split: str,
    images: _Scan,
    labels: _Scan,
    dataset: DatasetJson,
    layout: DatasetLayout,
    *,
    label_required: bool,
) -> list[CaseFiles]:
    """Pair channel files with labels; report missing channels, labels and images."""
    folder = IMAGES_TRAINING if split == "training" else IMAGES_TEST
    label_folder = LABELS_TRAINING if split == "training" else LABELS_TEST
    ending = dataset.file_ending
    cases = []
    for case_id in sorted(images.images.keys() | labels.labels.keys()):
        channel_files = images.images.get(case_id, {})
        label = labels.labels.get(case_id)
        if not channel_files:
            if case_id not in images.rejected_cases:  # else its image is reported already
                layout.problems.append(
                    Problem(label, _label_without_image(case_id, folder, images, ending))
                )
            continue
        complete = _check_channels(case_id, folder, channel_files, dataset, layout)
        if label is None and label_required and case_id not in labels.rejected_cases:
            first = channel_files[min(channel_files)]
            layout.problems.append(
                Problem(
                    f"{label_folder}/{case_id}{ending}",
                    f"label file missing: case '{case_id}' has image {first} but no label",
                )
            )
        order = sorted(channel_files)
        cases.append(
            CaseFiles(
                case_id=case_id,
                split=split,
                images=tuple(channel_files[i] for i in order),
                channels=tuple(order),
                label=label,
                channel_files_complete=complete,
            )
        )
    return cases


def _label_without_image(case_id: str, folder: str, images: _Scan, ending: str) -> str:
    message = f"label has no image: expected {folder}/{case_id}_0000{ending}"
    match = _CHANNEL_STEM.match(case_id)
    if match is not None and match["case"] in images.images:
        message += (
            f"; label files carry no channel suffix: if this is the label of case "
            f"'{match['case']}', name it {match['case']}{ending}"
        )
    return message


def _check_channels(
    case_id: str,
    folder: str,
    channel_files: dict[int, str],
    dataset: DatasetJson,
    layout: DatasetLayout,
) -> bool:
    """Report missing and undeclared channel files of one case; True when there are none."""
    ending = dataset.file_ending
    found = sorted(channel_files)
    expected = set(range(found[-1] + 1))
    # A natural 2D image (RGB png) holds several channels in one file, so only gaps can be
    # told from the names; volumes hold one channel per file.
    if ending not in NATURAL_2D_ENDINGS:
        expected |= set(range(dataset.num_channels))
    missing = sorted(expected - set(found))
    undeclared = [i for i in found if i >= dataset.num_channels]
    present = listing([f"_{i:04d}" for i in found])
    complete = not missing and not undeclared
    # A gap before an undeclared channel is not listed: that one is reported below.
    missing = [i for i in missing if i < dataset.num_channels]
    if len(missing) > _MAX_LISTED:  # one line per case, not one per declared channel
        layout.problems.append(
            Problem(
                f"{folder}/{case_id}_XXXX{ending}",
                f"{len(missing)} channel files missing (_"
                f"{listing([f'{i:04d}' for i in missing]).replace(', ', ', _')}): "
                f"{_declared_channels(dataset)}; case '{case_id}' has {present}",
            )
        )
        missing = []
    for index in missing:
        layout.problems.append(
            Problem(
                f"{folder}/{case_id}_{index:04d}{ending}",
                f"channel file missing: {_declared_channels(dataset)}; case '{case_id}' "
                f"has {present}",
            )
        )
    for index in undeclared:
        layout.problems.append(
            Problem(
                channel_files[index],
                f"channel {index} is not declared in dataset.json channel_names "
                f"(channels 0..{dataset.num_channels - 1})",
            )
        )
    return complete


def _check_num_training(
    dataset_dir: Path, dataset: DatasetJson, images: _Scan, labels: _Scan, layout: DatasetLayout
) -> None:
    if "numTraining" in dataset.unusable:
        return  # reported with dataset.json's other problems
    if not images.images:
        # Images refused for their names are reported one by one already.
        if (dataset_dir / IMAGES_TRAINING).is_dir() and not images.rejected_cases:
            layout.problems.append(
                Problem(
                    IMAGES_TRAINING,
                    f"no training cases: expected image files named "
                    f"<case>_0000{dataset.file_ending}",
                )
            )
        return
    # A case with images or only a label counts: its missing file is reported on its own.
    found = len(
        images.images.keys() | labels.labels.keys() | images.rejected_cases | labels.rejected_cases
    )
    if found != dataset.num_training:
        layout.problems.append(
            Problem(
                "dataset.json",
                f"numTraining is {dataset.num_training} but "
                f"{IMAGES_TRAINING}/ and {LABELS_TRAINING}/ hold {found} training case(s)",
            )
        )


def _check_case_ids(layout: DatasetLayout) -> None:
    for case in [*layout.training, *layout.test]:
        bad = sorted(set(_UNSAFE_ID_CHAR.findall(case.case_id)))
        if bad:
            layout.problems.append(
                Problem(
                    case.images[0],
                    f"case id '{case.case_id}' contains {', '.join(repr(c) for c in bad)}, "
                    "which breaks the workflow's shell commands; use letters, digits, "
                    "'_', '-', '.' and '+'",
                )
            )
    by_lower: dict[str, list[str]] = {}
    for case in layout.training:
        by_lower.setdefault(case.case_id.lower(), []).append(case.case_id)
    for ids in by_lower.values():
        if len(ids) > 1:
            layout.warnings.append(
                f"{IMAGES_TRAINING}: case ids {', '.join(ids)} differ only in letter case; "
                "their files collide on case-insensitive file systems (macOS, Windows)"
            )
    training_ids = {c.case_id for c in layout.training}
    shared = [c.case_id for c in layout.test if c.case_id in training_ids]
    if shared:
        layout.warnings.append(
            f"{IMAGES_TEST}: {len(shared)} test case id(s) also name training cases "
            f"({_listing(shared)})"
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")
