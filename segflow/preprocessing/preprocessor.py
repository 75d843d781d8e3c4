"""Preprocess one case for one configuration: what training reads.

The steps follow nnU-Net v2's published order, which inference later undoes in reverse:

1. read the channels (and the label) and put the axes in the plans' order
   (``transpose_forward``);
2. crop to the bounding box of the nonzero region of all channels; background voxels of the
   label outside that region become -1 (training treats them as background; z-scoring with
   ``use_mask_for_norm`` uses ``seg >= 0`` as the region to normalize);
3. normalize every channel by its scheme, *before* resampling, so that the mask still fits
   the image exactly;
4. resample image and label to the configuration's spacing (the ``2d`` configuration keeps
   the out-of-plane spacing of each case);
5. sample voxel locations of every foreground class, so that training can centre patches on
   rare classes without scanning the label.

:func:`preprocess_case` returns the arrays and the properties; :func:`preprocess_and_save`
also stores them (:mod:`segflow.preprocessing.storage`); :func:`preprocess_cases` runs many
cases in a pool of worker processes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow import __version__
from segflow.errors import Problem, SegflowError
from segflow.fingerprint.cropping import crop_to_nonzero, label_outside_nonzero
from segflow.io.case import read_case
from segflow.io.dataset import DatasetJson
from segflow.io.resampled_size import resampled_size_problem
from segflow.planning.plans import ConfigurationPlan, Plans
from segflow.preprocessing.normalization import normalize_channel
from segflow.preprocessing.resampling import (
    compute_new_shape,
    resample_data,
    resample_seg,
    separate_z_axis,
)
from segflow.preprocessing.storage import remove_leftovers, save_case
from segflow.workers import map_in_workers

__all__ = [
    "ANNOTATED_KEY",
    "MAX_LOCATIONS_PER_CLASS",
    "MIN_LOCATION_COVERAGE",
    "CaseSpec",
    "class_keys",
    "preprocess_and_save",
    "preprocess_case",
    "preprocess_cases",
    "sample_class_locations",
    "target_spacing",
]

logger = logging.getLogger(__name__)

#: At most this many locations are kept per class ...
MAX_LOCATIONS_PER_CLASS = 10_000
#: ... unless that is less than this fraction of the class's voxels: large classes keep a
#: sample dense enough to reach every part of them.
MIN_LOCATION_COVERAGE = 0.01
#: With an ignore label: the key of the locations of annotated voxels (any class, background
#: included), from which training draws patches that hold some annotation.
ANNOTATED_KEY = "annotated"


def target_spacing(configuration: ConfigurationPlan, spacing: Sequence[float]) -> list[float]:
    """The spacing a case at ``spacing`` (transposed) is resampled to.

    A 2D configuration names only the in-plane spacing; the slices keep theirs.
    """
    target = [float(s) for s in configuration.spacing]
    if len(target) < len(spacing):
        target = [float(spacing[0]), *target]
    return target


def class_keys(dataset: DatasetJson) -> dict[str, tuple[int, ...]]:
    """The classes (or regions) to sample locations of, by key, with their label values.

    Plain labels are keyed by their value (``"1"``); regions by their values joined with
    commas (``"1,2,3"``), each region being the union of its labels. With an ignore label,
    :data:`ANNOTATED_KEY` holds every value except the ignore label (and -1, outside the
    nonzero region, which is annotated background).
    """
    keys: dict[str, tuple[int, ...]] = {}
    ignore = dataset.ignore_label
    for name, value in dataset.labels.items():
        if name == "ignore" or value in (0, (0,)):
            continue
        values = value if isinstance(value, tuple) else (value,)
        values = tuple(v for v in values if v != 0)
        if values:
            keys[",".join(str(v) for v in values)] = values
    if ignore is not None:
        keys[ANNOTATED_KEY] = (-1, *(v for v in dataset.label_values if v != ignore))
    return keys


def sample_class_locations(
    seg: np.ndarray,
    classes: dict[str, tuple[int, ...]],
    rng: np.random.Generator,
    max_per_class: int = MAX_LOCATIONS_PER_CLASS,
    min_coverage: float = MIN_LOCATION_COVERAGE,
) -> dict[str, list[int]]:
    """Sample voxel locations of every class.

    Each class keeps ``max(min(max_per_class, n), ceil(min_coverage * n))`` of its ``n``
    voxels, drawn without replacement; a class absent from ``seg`` gets an empty list.

    Args:
        seg: the label map, spatial axes only (e.g. ``(z, y, x)``).
        classes: key -> label values, as from :func:`class_keys`.
        rng: the generator; the same seed gives the same samples.
        max_per_class: the usual number of samples.
        min_coverage: the fraction of a class's voxels kept at least.

    Returns:
        key -> sorted flat (C-order) indices into ``seg``; ``np.unravel_index(i, seg.shape)``
        turns them into coordinates.
    """
    flat = seg.reshape(-1)
    wanted = sorted({v for values in classes.values() for v in values})
    # One pass over the volume for the voxels of any wanted class; per-class selection then
    # runs on that (usually far smaller) subset.
    if wanted and min(wanted) > 0:
        candidates = np.flatnonzero(flat > 0)
    else:
        candidates = np.flatnonzero(np.isin(flat, wanted))
    values = flat[candidates]
    locations: dict[str, list[int]] = {}
    for key, labels in classes.items():
        where = values == labels[0] if len(labels) == 1 else np.isin(values, labels)
        voxels = candidates[where]
        n = voxels.size
        keep = max(min(max_per_class, n), math.ceil(n * min_coverage))
        if keep < n:
            voxels = np.sort(voxels[rng.choice(n, size=keep, replace=False)])
        locations[key] = voxels.tolist()
    return locations


def preprocess_case(
    images: Sequence[Path],
    label: Path | None,
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    seed: int,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Preprocess one case for one configuration.

    Args:
        images: the case's channel files, channel 0 first.
        label: the label file, or None (a case to predict).
        plans: the plans.
        configuration: the configuration's name (``2d``, ``3d_fullres``, ...).
        dataset: the dataset description (channels, labels, ignore label, regions).
        seed: seeds the class-location samples.

    Returns:
        ``(data, seg, properties)``: data float32 ``(c, z, y, x)``; seg ``(1, z, y, x)``
        int8/int16 (None without a label), -1 outside the nonzero region; properties a
        JSON-serializable dict: the files read; ``original_shape``, ``original_spacing``,
        ``origin``, ``direction`` as read (SimpleITK order for the last two);
        ``transpose_forward`` and the transposed ``spacing``; ``shape_before_cropping``,
        ``bbox_used_for_cropping`` (``[[start, stop], ...]``), ``shape_after_cropping``,
        ``target_spacing``, ``separate_z_axis``, ``shape_after_resampling`` (all in transposed
        axis order); ``seed`` and ``class_locations`` (see :func:`sample_class_locations`;
        None without a label).

    Raises:
        SegflowError: a file cannot be read, the files do not fit together or with the
            dataset, or the plans name something unknown.
    """
    conf = plans.configuration(configuration)
    case = read_case(images, label, dataset)
    data, first = case.data, case.reference
    seg = None if case.seg is None else case.seg[None]
    axes = plans.transpose_forward
    original_shape = list(first.shape)
    data = data.transpose(0, *(a + 1 for a in axes))
    spacing = [float(first.spacing[a]) for a in axes]
    if seg is not None:
        seg = seg.transpose(0, *(a + 1 for a in axes))
    shape_before_crop = list(data.shape[1:])

    crop = crop_to_nonzero(data, seg)
    data = crop.data.astype(np.float32)  # a copy: normalization works in place
    if seg is not None:
        seg = label_outside_nonzero(crop.seg, crop.mask)
        norm_mask = seg[0] >= 0
    else:
        norm_mask = crop.mask
    shape_after_crop = list(data.shape[1:])

    new_spacing = target_spacing(conf, spacing)
    # Before the arrays are made: a spacing far off the plans' (1e-6 or 1e6 mm) would give an
    # empty or an impossibly large array (moved plans are checked only here).
    reason = resampled_size_problem(
        shape_after_crop, spacing, new_spacing, len(data), f"the plans' {configuration} spacing"
    )
    if reason is not None:
        raise SegflowError("cannot preprocess this case", [Problem(str(images[0]), reason)])
    new_shape = compute_new_shape(shape_after_crop, spacing, new_spacing)

    intensity = plans.foreground_intensity_properties_per_channel
    for c, (scheme, use_mask) in enumerate(
        zip(conf.normalization_schemes, conf.use_mask_for_norm, strict=True)
    ):
        data[c] = normalize_channel(data[c], scheme, norm_mask, use_mask, intensity.get(str(c)))

    resampling = conf.resampling
    data_axis = separate_z_axis(spacing, new_spacing, resampling["data"]["force_separate_z"])
    data = resample_data(
        data, new_shape, data_axis, resampling["data"]["order"], resampling["data"]["order_z"]
    )
    locations = None
    if seg is not None:
        seg_axis = separate_z_axis(spacing, new_spacing, resampling["seg"]["force_separate_z"])
        seg = resample_seg(
            seg, new_shape, seg_axis, resampling["seg"]["order"], resampling["seg"]["order_z"]
        )
        seg = seg.astype(np.int8 if seg.max() <= 127 else np.int16, copy=False)
        locations = sample_class_locations(seg[0], class_keys(dataset), np.random.default_rng(seed))

    properties = {
        "segflow_version": __version__,
        "configuration": configuration,
        "image_files": [Path(p).name for p in images],
        "label_file": None if label is None else Path(label).name,
        "is_2d": bool(first.is_2d),
        "original_shape": original_shape,
        "original_spacing": [float(s) for s in first.spacing],
        "origin": list(first.origin),
        "direction": list(first.direction),
        "transpose_forward": list(axes),
        "spacing": spacing,
        "shape_before_cropping": shape_before_crop,
        "bbox_used_for_cropping": crop.bbox,
        "shape_after_cropping": shape_after_crop,
        "target_spacing": new_spacing,
        "separate_z_axis": data_axis,
        "shape_after_resampling": list(data.shape[1:]),
        "seed": seed,
        "class_locations": locations,
    }
    return data, seg, properties


@dataclass(frozen=True)
class CaseSpec:
    """One case to preprocess: its identifier, channel files and (optional) label file."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None

    @classmethod
    def from_dict(cls, entry: dict[str, Any], root: Path | None = None) -> CaseSpec:
        """From ``{"case_id", "images": [...], "label"}``; relative paths are under ``root``."""
        root = root or Path()
        return cls(
            case_id=str(entry["case_id"]),
            images=tuple(root / p for p in entry["images"]),
            label=None if entry.get("label") is None else root / entry["label"],
        )


def cases_from_dataset_report(report: dict[str, Any], case_ids: Sequence[str]) -> list[CaseSpec]:
    """The training cases ``case_ids`` as ``validate_dataset`` found them.

    Raises:
        SegflowError: naming every id the report does not list.
    """
    known = {c["case_id"]: c for c in report["training_cases"]}
    unknown = [i for i in case_ids if i not in known]
    if unknown:
        raise SegflowError(
            "cases not in the dataset report",
            [Problem(i, "no such training case in dataset_report.json") for i in unknown],
        )
    root = Path(report["dataset"])
    return [CaseSpec.from_dict(known[i], root) for i in case_ids]


def preprocess_and_save(
    case: CaseSpec,
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    seed: int,
    out_dir: str | os.PathLike[str],
    clean_leftovers: bool = True,
) -> dict[str, Path]:
    """Preprocess one case and store it in ``out_dir`` (see :func:`~.storage.save_case`).

    Returns:
        the paths written.
    """
    started = time.perf_counter()
    data, seg, props = preprocess_case(case.images, case.label, plans, configuration, dataset, seed)
    props = {"case_id": case.case_id, **props}
    patch_size = plans.configuration(configuration).patch_size
    files = save_case(out_dir, case.case_id, data, seg, props, patch_size, clean_leftovers)
    logger.debug(
        "%s: %s -> %s in %.3f s",
        case.case_id,
        props["shape_before_cropping"],
        props["shape_after_resampling"],
        time.perf_counter() - started,
    )
    return files


def _save_naming_the_case(case: CaseSpec, *job: Any) -> None:
    try:
        preprocess_and_save(case, *job, clean_leftovers=False)
    except SegflowError as err:
        # A plain SegflowError also survives the trip back from a worker process (pickling
        # rebuilds an exception from its message, which subclasses' constructors reject).
        raise SegflowError(f"case '{case.case_id}': {err.render()}") from None


def preprocess_cases(
    cases: Iterable[CaseSpec],
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    seed: int,
    out_dir: str | os.PathLike[str],
    workers: int = 1,
) -> list[str]:
    """Preprocess and store many cases, ``workers`` at a time.

    Args:
        cases: the cases.
        plans: the plans.
        configuration: the configuration's name.
        dataset: the dataset description.
        seed: seeds the class-location samples (the same for every case, as each case's
            samples depend on its own label anyway).
        out_dir: the configuration's output folder.
        workers: worker processes; 1 runs in this process.

    Returns:
        the case identifiers, in the order given.

    Raises:
        SegflowError: from the first case that fails (the others still finish).
    """
    cases = list(cases)
    plans.configuration(configuration)  # fail before starting workers on a wrong name
    remove_leftovers(out_dir, [c.case_id for c in cases])
    job = (plans, configuration, dataset, seed, str(out_dir))
    for _ in map_in_workers(_save_naming_the_case, cases, workers, job, chunks_per_worker=8):
        pass
    return [c.case_id for c in cases]
