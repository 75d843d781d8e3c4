"""Checks of what a dataset's files hold: readable, one voxel grid per case, sane values.

Each case's images and label are read once with :func:`~segflow.io.image.read_image` and
every check runs on those arrays (NIfTI files also get one raw pass for what SimpleITK hides,
see :mod:`segflow.io.nifti`). Geometry is compared with tolerances that accept the
rounding of file headers (float32 in NIfTI, decimal text in NRRD/MetaImage) but catch any
misalignment that matters:

- spacing: per axis, relative difference at most :data:`SPACING_RTOL` (1e-3);
- origin: per axis, at most :data:`ORIGIN_TOL_VOXELS` (1 %) of the smallest voxel spacing,
  so the tolerance follows the scale of the data (0.01 mm for 1 mm voxels);
- direction: each direction cosine within :data:`DIRECTION_ATOL` (1e-3, about 0.06 degrees);
- shape: exactly equal.

Across cases, two things one case can wreck for all are checked: the size of each case once
resampled to the median spacing (:func:`check_resampled_sizes`, the bounds of
:mod:`segflow.io.resampled_size`), and intensities that cannot be real
(:func:`check_intensities`): beyond :data:`MAX_ABS_INTENSITY` in any channel, or, in a CT
channel (whose normalization pools every case's intensities), :data:`OUTLIER_MAGNITUDE_RATIO`
times the other cases' median magnitude.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segflow.errors import Problem
from segflow.io.dataset import (
    IGNORE_LABEL_NAME,
    MAX_LABEL_VALUE,
    DatasetJson,
    listing,
    pools_intensities,
)
from segflow.io.image import NATURAL_2D_ENDINGS, ImageData, ImageReadError, read_image
from segflow.io.names import SNAKEMAKE_PERIODIC_REPEATS, periodic_suffix
from segflow.io.nifti import scan_nifti
from segflow.io.resampled_size import resampled_size_problem
from segflow.validation.layout import CaseFiles

__all__ = [
    "DIRECTION_ATOL",
    "MAX_ABS_INTENSITY",
    "ORIGIN_TOL_VOXELS",
    "OUTLIER_MAGNITUDE_RATIO",
    "SPACING_RTOL",
    "CaseCheck",
    "check_case",
    "check_dimensionality",
    "check_intensities",
    "check_label_declarations",
    "check_resampled_sizes",
    "check_test_case_ids",
    "geometry_differences",
    "label_warnings",
]

logger = logging.getLogger(__name__)

#: Largest relative difference per axis for two spacings to count as equal.
SPACING_RTOL = 1e-3
#: Largest origin difference per axis, as a fraction of the smallest voxel spacing.
ORIGIN_TOL_VOXELS = 1e-2
#: Largest difference of any direction cosine.
DIRECTION_ATOL = 1e-3
#: Largest absolute intensity an image may hold: no scanner gives more (CT reaches about 3e4
#: HU, MRI and microscopy at most about 1e9 in float files), and 1e8 foreground samples of it
#: squared still sum within float32's range (3.4e38), as the intensity statistics need.
MAX_ABS_INTENSITY = 1e15
#: A case whose largest absolute intensity in a channel is this many times the median of the
#: other cases' dwarfs them: CT normalization, which pools the cases' intensities, would
#: flatten every other case (any other channel is only warned about: it is normalized per
#: image).
OUTLIER_MAGNITUDE_RATIO = 1e3

_MAX_LISTED = 8
# Integer labels whose value range is at most this wide are counted with bincount (fast,
# no sort); wider ranges fall back to np.unique.
_BINCOUNT_MAX_RANGE = 1 << 16
_CHUNK_VOXELS = 1 << 24
# Floats hold every integer exactly up to 2**53.
_LARGEST_EXACT_FLOAT_INT = 2.0**53


@dataclass
class CaseCheck:
    """What the content checks found for one case.

    Attributes:
        case: the case's files.
        problems: everything wrong with its files.
        is_2d: whether its images are 2D (None when no image could be read).
        label_values: the distinct integer values in its label (None without a readable
            label).
        shape: voxels along ``(z, y, x)`` of its images (None when none could be read).
        spacing: their spacing in mm, same order.
        magnitudes: per channel (files in order, an RGB file three), the largest absolute
            intensity; None when a channel file is unreadable or holds non-finite values.
    """

    case: CaseFiles
    problems: list[Problem] = field(default_factory=list)
    is_2d: bool | None = None
    label_values: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    magnitudes: tuple[float, ...] | None = None


def check_case(dataset_dir: Path, case: CaseFiles, dataset: DatasetJson) -> CaseCheck:
    """Read one case's images and label once and check them.

    Checks: every file readable and complete (2D or 3D; NIfTI files are also scanned raw, see
    :mod:`segflow.io.nifti`); no NaN or infinite intensities;
    all channel files on one voxel grid; the total channel count matches ``channel_names``;
    the label has one channel, whole-number values declared in ``dataset.json``, and the
    voxel grid of the images.

    Args:
        dataset_dir: the raw dataset folder (the case's paths are relative to it).
        case: the files to check.
        dataset: the parsed ``dataset.json``.

    Returns:
        The problems found (each naming its file) and what later cross-case checks need.
    """
    result = CaseCheck(case)
    images = _check_images(dataset_dir, case, dataset, result)
    if case.label is not None:
        _check_label_file(dataset_dir, case.label, images, dataset, result)
    return result


def _check_images(
    dataset_dir: Path, case: CaseFiles, dataset: DatasetJson, result: CaseCheck
) -> list[tuple[str, ImageData]]:
    """Read and check the channel files; return the readable ones with their paths."""
    images: list[tuple[str, ImageData]] = []
    per_file: list[tuple[float, ...] | None] = []
    for rel in case.images:
        read = _read(dataset_dir, rel, result.problems)
        if read is None:
            continue
        image, (nan, inf) = read
        if nan or inf:
            result.problems.append(
                Problem(
                    rel,
                    f"image contains {nan} NaN and {inf} infinite voxel value(s); "
                    "replace them with finite values",
                )
            )
        images.append((rel, image))
        magnitudes = None if nan or inf else _magnitudes(image.array)
        if magnitudes is not None and max(magnitudes) > MAX_ABS_INTENSITY:
            result.problems.append(
                Problem(
                    rel,
                    f"image holds intensities up to {max(magnitudes):.3g} in absolute value, "
                    f"beyond {MAX_ABS_INTENSITY:g}: no scanner gives such values and the "
                    "intensity statistics cannot be computed in float32; check the file (its "
                    "data type, scale slope or a corrupt region)",
                )
            )
        per_file.append(magnitudes)
    if len(per_file) == len(case.images) and None not in per_file:
        result.magnitudes = tuple(m for file in per_file for m in file)
    if images:
        result.is_2d = images[0][1].is_2d
        result.shape, result.spacing = images[0][1].shape, tuple(images[0][1].spacing)
        _check_channels_agree(images, result.problems)
        if len(images) == len(case.images) and case.channel_files_complete:
            _check_channel_count(case, images, dataset, result.problems)
    return images


def _check_label_file(
    dataset_dir: Path,
    rel: str,
    images: list[tuple[str, ImageData]],
    dataset: DatasetJson,
    result: CaseCheck,
) -> None:
    read = _read(dataset_dir, rel, result.problems)
    if read is None:
        return
    label, (nan, inf) = read
    if nan or inf:
        result.problems.append(
            Problem(rel, f"label contains {nan} NaN and {inf} infinite voxel value(s)")
        )
    result.label_values = _check_label_values(rel, label, dataset, result.problems)
    if images:
        ref_rel, ref = images[0]
        result.problems.extend(
            Problem(rel, diff) for diff in geometry_differences(label, ref, f"its image {ref_rel}")
        )


def _read(
    dataset_dir: Path, rel: str, problems: list[Problem]
) -> tuple[ImageData, tuple[int, int]] | None:
    """Read a file; return it with its NaN and infinite voxel counts, or None if unusable."""
    path = dataset_dir / rel
    try:
        image = read_image(path)
    except ImageReadError as err:
        problems.extend(Problem(rel, p.message) for p in err.problems)
        return None
    # SimpleITK reads a cut-off NIfTI file and NaN voxels as zeros; the raw scan tells.
    scan = scan_nifti(path)
    if scan is None:
        return image, _count_nonfinite(image.array)
    if scan.truncated:
        problems.append(
            Problem(
                rel,
                f"truncated file: holds {scan.found_bytes} of the "
                f"{scan.expected_bytes} bytes its header announces (was it cut off while "
                "copying?)",
            )
        )
        return None
    return image, (scan.nan, scan.inf)


def _magnitudes(array: np.ndarray) -> tuple[float, ...]:
    """The largest absolute value of each channel of a ``(c, ...)`` array of finite values."""
    if array.size == 0:
        return tuple(0.0 for _ in range(array.shape[0]))
    return tuple(max(abs(float(channel.min())), abs(float(channel.max()))) for channel in array)


def _count_nonfinite(array: np.ndarray) -> tuple[int, int]:
    if array.dtype.kind not in "fc" or np.isfinite(array).all():
        return 0, 0
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


def _check_channels_agree(images: list[tuple[str, ImageData]], problems: list[Problem]) -> None:
    ref_rel, ref = images[0]
    for rel, image in images[1:]:
        problems.extend(
            Problem(rel, f"{diff}; the channels of a case must share one voxel grid")
            for diff in geometry_differences(image, ref, f"channel file {ref_rel}")
        )


def _check_channel_count(
    case: CaseFiles,
    images: list[tuple[str, ImageData]],
    dataset: DatasetJson,
    problems: list[Problem],
) -> None:
    total = sum(image.num_channels for _, image in images)
    if total == dataset.num_channels:
        return
    per_file = ", ".join(f"{rel}: {image.num_channels}" for rel, image in images)
    declared = ", ".join(f"{i}: {n}" for i, n in sorted(dataset.channel_names.items()))
    message = (
        f"case '{case.case_id}' has {total} channel(s) ({per_file}) but dataset.json "
        f"declares {dataset.num_channels} ({declared})"
    )
    if dataset.file_ending in NATURAL_2D_ENDINGS:
        message += "; an RGB image counts as three channels, a grayscale one as one"
    problems.append(Problem(images[0][0], message))


def geometry_differences(image: ImageData, ref: ImageData, ref_name: str) -> list[str]:
    """Describe how the voxel grid of ``image`` differs from that of ``ref``.

    Args:
        image: the image checked.
        ref: the image it must match.
        ref_name: how messages name ``ref``, e.g. ``"its image imagesTr/a_0000.nii.gz"``.

    Returns:
        One sentence per difference, e.g. ``"shape (z, y, x) (35, 51, 35) differs from
        (35, 51, 36) of its image imagesTr/a_0000.nii.gz"``; empty when the two agree within
        the module's tolerances.
    """
    if image.is_2d != ref.is_2d:
        kind, other = ("2D", "3D") if image.is_2d else ("3D", "2D")
        return [f"the file is {kind} but {ref_name} is {other}"]
    diffs = []
    if image.shape != ref.shape:
        diffs.append(
            f"shape (z, y, x) {_fmt(image.shape)} differs from {_fmt(ref.shape)} of {ref_name}"
        )
    spacing, ref_spacing = np.asarray(image.spacing), np.asarray(ref.spacing)
    if np.any(np.abs(spacing - ref_spacing) > SPACING_RTOL * np.maximum(spacing, ref_spacing)):
        diffs.append(
            f"spacing (z, y, x) {_fmt(image.spacing)} mm differs from {_fmt(ref.spacing)} mm "
            f"of {ref_name} (tolerance: relative {SPACING_RTOL:g})"
        )
    origin_tol = ORIGIN_TOL_VOXELS * float(min(spacing.min(), ref_spacing.min()))
    if len(image.origin) != len(ref.origin) or np.any(
        np.abs(np.asarray(image.origin) - np.asarray(ref.origin)) > origin_tol
    ):
        diffs.append(
            f"origin {_fmt(image.origin)} mm differs from {_fmt(ref.origin)} mm of {ref_name} "
            f"(tolerance: {origin_tol:g} mm, 1% of the smallest voxel spacing)"
        )
    if len(image.direction) != len(ref.direction) or np.any(
        np.abs(np.asarray(image.direction) - np.asarray(ref.direction)) > DIRECTION_ATOL
    ):
        diffs.append(
            f"direction {_fmt(image.direction)} differs from {_fmt(ref.direction)} of "
            f"{ref_name} (tolerance: {DIRECTION_ATOL:g} per cosine)"
        )
    return diffs


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _list_values(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:_MAX_LISTED])
    more = f", ... ({len(values)} values)" if len(values) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def _check_label_values(
    rel: str, label: ImageData, dataset: DatasetJson, problems: list[Problem]
) -> tuple[int, ...] | None:
    """Check a label's channels and values; return its distinct integer values."""
    if label.num_channels != 1:
        problems.append(
            Problem(
                rel,
                f"a label must have one channel, found {label.num_channels} "
                "(save labels as single-component, grayscale images)",
            )
        )
    array = label.array
    if array.dtype.kind in "iub":
        values = _unique_integers(array)
    elif array.dtype.kind == "f":
        distinct = np.unique(array[np.isfinite(array)])  # non-finite ones are reported apart
        whole = distinct == np.round(distinct)
        if not whole.all():
            problems.append(
                Problem(
                    rel,
                    f"label values must be whole numbers, found "
                    f"{_list_values(distinct[~whole].tolist())}",
                )
            )
        # Whole floats beyond any integer type (1e30) would wrap around when converted.
        huge = whole & (np.abs(distinct) > _LARGEST_EXACT_FLOAT_INT)
        if huge.any():
            problems.append(
                Problem(
                    rel,
                    f"label values {_list_values(distinct[huge].tolist())} are far beyond any "
                    f"label value (0 to {MAX_LABEL_VALUE})",
                )
            )
        values = distinct[whole & ~huge].astype(np.int64).tolist()
    else:
        problems.append(Problem(rel, f"label data type {array.dtype} is not a number type"))
        return None
    if "labels" in dataset.unusable:
        return tuple(values)  # dataset.json's labels are reported broken; nothing to compare
    declared = dataset.label_values
    undeclared = sorted(set(values) - set(declared))
    if undeclared:
        problems.append(
            Problem(
                rel,
                f"label values {_list_values(undeclared)} are not declared in "
                f"dataset.json labels (declared: {listing(declared)})",
            )
        )
    return tuple(values)


def _unique_integers(array: np.ndarray) -> list[int]:
    """Distinct values of an integer array; bincount in chunks when the range is small."""
    if array.size == 0:
        return []
    low, high = int(array.min()), int(array.max())
    if high - low >= _BINCOUNT_MAX_RANGE:
        return [int(v) for v in np.unique(array)]
    counts = np.zeros(high - low + 1, dtype=np.int64)
    flat = array.reshape(-1)
    for start in range(0, flat.size, _CHUNK_VOXELS):
        chunk = flat[start : start + _CHUNK_VOXELS].astype(np.int64) - low
        counts += np.bincount(chunk, minlength=counts.size)
    return [int(v) + low for v in np.flatnonzero(counts)]


def check_label_declarations(dataset: DatasetJson) -> tuple[list[Problem], list[str]]:
    """Check ``labels`` and ``regions_class_order`` of dataset.json as nnU-Net needs them.

    Labels must be consecutive integers from 0; an ``ignore`` label must be a single value,
    one above all others; region-based labels need a ``regions_class_order`` with one entry
    per region.

    Returns:
        ``(problems, warnings)``.
    """
    problems: list[Problem] = []
    warnings: list[str] = []
    where = "dataset.json"
    ignore = dataset.labels.get(IGNORE_LABEL_NAME)
    values: set[int] = set()
    for name, value in dataset.labels.items():
        if name != IGNORE_LABEL_NAME:
            values.update(value if isinstance(value, tuple) else (value,))
    ordered = sorted(values)
    if ordered and ordered != list(range(len(ordered))):
        count, first = _missing_values(ordered)
        detail = f"; missing: {_first_of(first, count)}" if count else ""
        problems.append(
            Problem(
                where,
                f"label values must be consecutive integers 0, 1, 2, ...; "
                f"declared: {listing(ordered)}{detail}",
            )
        )
    if isinstance(ignore, tuple):
        problems.append(
            Problem(
                where,
                f"the '{IGNORE_LABEL_NAME}' label must be a single integer, "
                f"not a region {list(ignore)}",
            )
        )
    elif ignore is not None and ordered and ignore != ordered[-1] + 1:
        problems.append(
            Problem(
                where,
                f"the '{IGNORE_LABEL_NAME}' label must be the highest label value, "
                f"one above the others ({ordered[-1] + 1}); found {ignore}",
            )
        )
    if dataset.has_regions:
        if "regions_class_order" not in dataset.unusable:
            problems += _check_regions(dataset, where)
    else:
        problems += _check_unique_values(dataset, where)
        if dataset.regions_class_order is not None:
            warnings.append(
                "dataset.json: 'regions_class_order' is ignored because no label is a region"
            )
    return problems, warnings


def _missing_values(ordered: Sequence[int]) -> tuple[int, list[int]]:
    """How many of 0..max(ordered) are not in ``ordered`` (sorted, distinct), and the first
    few of them; the work follows the declared values, never the size of the gaps."""
    count, first, expected = 0, [], 0
    for value in ordered:
        if value < 0:
            continue
        if value > expected:
            count += value - expected
            first += range(expected, min(value, expected + _MAX_LISTED - len(first)))
        expected = value + 1
    return count, first


def _first_of(values: Sequence[int], count: int) -> str:
    shown = ", ".join(map(str, values))
    return shown + (f", ... ({count} values)" if count > len(values) else "")


def _check_regions(dataset: DatasetJson, where: str) -> list[Problem]:
    regions = [
        name
        for name, value in dataset.labels.items()
        if name != IGNORE_LABEL_NAME and value not in (0, (0,))
    ]
    order = dataset.regions_class_order
    if order is None:
        return [
            Problem(
                where,
                f"labels define regions ({listing(regions)}) but "
                "'regions_class_order' is missing; give the label value each region "
                "writes into predictions, one per region in the order of 'labels'",
            )
        ]
    problems = []
    if len(order) != len(regions):
        problems.append(
            Problem(
                where,
                f"'regions_class_order' has {len(order)} entries but 'labels' "
                f"defines {len(regions)} region(s) ({listing(regions)})",
            )
        )
    undeclared = sorted(set(order) - set(dataset.label_values))
    if undeclared:
        problems.append(
            Problem(
                where,
                f"'regions_class_order' values [{listing(undeclared)}] are not label values "
                f"(declared: {listing(dataset.label_values)})",
            )
        )
    return problems


def _check_unique_values(dataset: DatasetJson, where: str) -> list[Problem]:
    names_by_value: dict[int, list[str]] = {}
    for name, value in dataset.labels.items():
        if isinstance(value, int):
            names_by_value.setdefault(value, []).append(name)
    return [
        Problem(
            where,
            f"labels {', '.join(repr(n) for n in names)} share the value {value}; "
            "each class needs its own value",
        )
        for value, names in sorted(names_by_value.items())
        if len(names) > 1
    ]


def check_dimensionality(results: Sequence[CaseCheck]) -> list[Problem]:
    """One problem when the cases mix 2D and 3D images (all must be one kind)."""
    kinds: dict[bool, list[CaseCheck]] = {True: [], False: []}
    for result in results:
        if result.is_2d is not None:
            kinds[result.is_2d].append(result)
    if not kinds[True] or not kinds[False]:
        return []
    minority_2d = len(kinds[True]) <= len(kinds[False])
    minority = kinds[minority_2d]
    shown = ", ".join(r.case.images[0] for r in minority[:_MAX_LISTED])
    more = f", ... ({len(minority)} in all)" if len(minority) > _MAX_LISTED else ""
    return [
        Problem(
            minority[0].case.images[0],
            f"cases mix 2D and 3D images ({len(kinds[True])} 2D, {len(kinds[False])} 3D); "
            f"the {'2D' if minority_2d else '3D'} ones are {shown}{more}; a dataset must "
            "be all 2D or all 3D",
        )
    ]


def label_warnings(results: Sequence[CaseCheck], dataset: DatasetJson) -> list[str]:
    """Warnings about training labels: background-only cases, classes that never occur."""
    training = [r for r in results if r.case.split == "training" and r.label_values is not None]
    if not training or "labels" in dataset.unusable:
        return []
    warnings = []
    background_only = [r.case.label for r in training if set(r.label_values or ()) <= {0}]
    if background_only:
        shown = ", ".join(str(p) for p in background_only[:_MAX_LISTED])
        more = ", ..." if len(background_only) > _MAX_LISTED else ""
        warnings.append(
            f"{len(background_only)} training label(s) hold only background: {shown}{more}"
        )
    seen: set[int] = set()
    for r in training:
        seen.update(r.label_values or ())
    absent = [
        f"'{name}' ({value})"
        for name, value in dataset.labels.items()
        if name != IGNORE_LABEL_NAME
        and not seen.intersection(value if isinstance(value, tuple) else (value,))
    ]
    if len(absent) > _MAX_LISTED:  # one line, not one per declared label
        warnings.append(f"{len(absent)} labels occur in no training label: {listing(absent)}")
    else:
        warnings += [f"label {label} occurs in no training label" for label in absent]
    return warnings


def check_resampled_sizes(results: Sequence[CaseCheck], channels: int) -> list[Problem]:
    """One problem per case that, resampled to the median spacing of the training cases,
    would have less than one voxel along an axis or more voxels than preprocessing can hold
    (:func:`~segflow.io.resampled_size.resampled_size_problem`); test cases are resampled to
    the same spacing when predicted. The planner starts from that median (it may choose a
    finer slice spacing for strongly anisotropic data; preprocessing checks the plans' own)."""
    read = [r for r in results if r.spacing is not None and r.shape is not None]
    training = [r.spacing for r in read if r.case.split == "training"]
    if not training:
        return []
    target = tuple(float(v) for v in np.median(np.asarray(training, dtype=np.float64), axis=0))
    source = f"the median of the {len(training)} training cases' spacings"
    problems = []
    for r in read:
        reason = resampled_size_problem(r.shape, r.spacing, target, channels, source)
        if reason is not None:
            problems.append(Problem(r.case.images[0], f"case '{r.case.case_id}': {reason}"))
    return problems


def check_intensities(
    results: Sequence[CaseCheck], dataset: DatasetJson
) -> tuple[list[Problem], list[str]]:
    """Cases whose intensities dwarf the other cases' by :data:`OUTLIER_MAGNITUDE_RATIO` or
    more, per channel: a problem in a CT channel (its normalization pools the cases'
    intensities, so the others would become constant), a warning in any other.

    Returns:
        ``(problems, warnings)``.
    """
    problems: list[Problem] = []
    warnings: list[str] = []
    cases = [r for r in results if r.magnitudes is not None]
    for channel in range(dataset.num_channels):
        with_channel = [r for r in cases if len(r.magnitudes or ()) > channel]
        magnitudes = np.asarray([r.magnitudes[channel] for r in with_channel], dtype=np.float64)
        others = _median_of_others(magnitudes)
        name = dataset.channel_names.get(channel, "")
        pooled = pools_intensities(name)
        for r, value, median in zip(with_channel, magnitudes, others, strict=True):
            if not (median > 0 and value > OUTLIER_MAGNITUDE_RATIO * median):
                continue
            if value > MAX_ABS_INTENSITY:
                continue  # reported with the file already
            message = (
                f"case '{r.case.case_id}' channel {channel} ({name}): intensities reach "
                f"{value:.3g} in absolute value, {value / median:.3g} times the median of the "
                f"other cases ({median:.3g})"
            )
            if pooled:
                problems.append(
                    Problem(
                        r.case.images[0],
                        f"{message}; CT normalization pools every case's intensities, so the "
                        "other cases would become constant: check the file (its data type, "
                        "scale slope or a corrupt region)",
                    )
                )
            else:
                warnings.append(
                    f"{r.case.images[0]}: {message}; the channel is normalized per image, but "
                    "check the file"
                )
    return problems, warnings


def _median_of_others(values: np.ndarray) -> np.ndarray:
    """For each value, the median of all the others (0 where there are none); O(n log n)."""
    n = values.size
    if n < 2:
        return np.zeros(n)
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    m = n - 1  # values left once one is taken out

    def kth(k: int, taken: int) -> float:
        return float(ranked[k if k < taken else k + 1])

    out = np.empty(n)
    for rank, index in enumerate(order):
        if m % 2:
            out[index] = kth(m // 2, rank)
        else:
            out[index] = (kth(m // 2 - 1, rank) + kth(m // 2, rank)) / 2
    return out


def check_test_case_ids(cases: Sequence[CaseFiles]) -> list[Problem]:
    """Test case ids Snakemake refuses as the predict rule's ``{case}`` wildcard: ending in
    one substring repeated :data:`~segflow.io.names.SNAKEMAKE_PERIODIC_REPEATS` times."""
    problems = []
    for case in cases:
        periodic = periodic_suffix(case.case_id)
        if periodic is not None:
            unit, count = periodic
            problems.append(
                Problem(
                    case.images[0] if case.images else case.label or case.case_id,
                    f"case id '{case.case_id}' ends in {unit!r} repeated {count} times, which "
                    "Snakemake refuses as a wildcard (the workflow predicts each test case "
                    "by its id); rename the case without "
                    f"{SNAKEMAKE_PERIODIC_REPEATS} repeats at its end",
                )
            )
    return problems
