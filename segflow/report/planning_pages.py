"""Report pages about the input side of the run: the dataset and the plans made for it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import SegflowError
from segflow.io.atomic import write_text
from segflow.io.dataset import IGNORE_LABEL_NAME, parse_dataset_json
from segflow.planning.normalization import normalization_scheme
from segflow.report.inputs import JsonSource, load_json, require
from segflow.report.markup import (
    MISSING,
    format_number,
    format_vector,
    heading,
    page,
    paragraph,
    table,
)

__all__ = ["dataset_page", "plans_page"]

logger = logging.getLogger(__name__)

#: The foreground intensity statistics the fingerprint keeps per channel, with their titles.
INTENSITY_STATISTICS = {
    "mean": "mean",
    "std": "sd",
    "median": "median",
    "min": "min",
    "max": "max",
    "percentile_00_5": "0.5th percentile",
    "percentile_99_5": "99.5th percentile",
}


def _label_rows(labels: Mapping[str, int | tuple[int, ...]]) -> list[list[Any]]:
    rows = []
    for name, value in labels.items():
        if name == IGNORE_LABEL_NAME:
            role = "ignored in training and evaluation"
        elif isinstance(value, tuple):
            role = "region (union of labels)"
        elif value == 0:
            role = "background"
        else:
            role = "foreground class"
        shown = ", ".join(str(v) for v in value) if isinstance(value, tuple) else value
        rows.append([name, shown, role])
    return rows


def _geometry_rows(fingerprint: Mapping[str, Any]) -> list[list[Any]]:
    """Median, smallest and largest spacing and shape (after cropping), per axis."""
    rows: list[list[Any]] = []
    for key, title, digits in (
        ("spacings", "spacing (mm)", 3),
        ("shapes_after_crop", "shape after cropping (voxels)", 1),
        ("shapes_before_crop", "shape before cropping (voxels)", 1),
    ):
        values = fingerprint.get(key)
        if not values:
            continue
        array = np.asarray(values, dtype=np.float64)
        rows.append(
            [
                title,
                format_vector(np.median(array, axis=0).tolist(), digits),
                format_vector(array.min(axis=0).tolist(), digits),
                format_vector(array.max(axis=0).tolist(), digits),
            ]
        )
    return rows


def _intensity_rows(
    fingerprint: Mapping[str, Any], channel_names: Mapping[int, str]
) -> list[list[Any]]:
    properties = fingerprint.get("foreground_intensity_properties_per_channel") or {}
    rows = []
    for channel, stats in sorted(properties.items(), key=lambda item: int(item[0])):
        name = channel_names.get(int(channel), MISSING)
        rows.append([f"{channel} ({name})"] + [stats.get(key) for key in INTENSITY_STATISTICS])
    return rows


def dataset_page(
    dataset_json: JsonSource,
    dataset_report: JsonSource,
    fingerprint: JsonSource,
    out_html: str | os.PathLike[str],
) -> Path:
    """Write the dataset summary: name, channels and their normalization, labels, numbers of
    cases, spacing and shape statistics, and the foreground intensities per channel.

    Args:
        dataset_json: ``dataset.json`` of the raw dataset.
        dataset_report: ``dataset_report.json`` written by dataset validation.
        fingerprint: ``fingerprint.json``.
        out_html: the page to write.

    Returns:
        ``out_html``.

    Raises:
        SegflowError: an input is missing or malformed.
    """
    raw, where = load_json(dataset_json, "dataset.json")
    dataset, problems = parse_dataset_json(raw, where)
    if dataset is None:
        raise SegflowError("cannot write the report", problems)
    report, _ = load_json(dataset_report, "dataset report")
    prints, _ = load_json(fingerprint, "fingerprint")

    training = report.get("training_cases", [])
    test = report.get("test_cases", [])
    labelled_test = sum(1 for case in test if case.get("label"))
    name = dataset.name or str(report.get("name", "")) or MISSING
    overview = [
        ["name", name],
        ["description", raw.get("description", MISSING)],
        ["dimensionality", "2D" if report.get("is_2d", prints.get("is_2d")) else "3D"],
        ["file ending", dataset.file_ending],
        ["training cases", len(training) if training else dataset.num_training],
        ["test cases", f"{len(test)} ({labelled_test} with reference labels)"],
    ]
    relative = prints.get("median_relative_size_after_cropping")
    if relative is not None:
        overview.append(["median size after cropping to the nonzero region", f"{relative:.1%}"])
    channels = [
        [index, channel, normalization_scheme(channel)]
        for index, channel in sorted(dataset.channel_names.items())
    ]
    parts = [
        table(["property", "value"], overview),
        heading("Channels"),
        table(["channel", "name in dataset.json", "normalization"], channels),
        heading("Labels"),
        table(["label", "value", "role"], _label_rows(dataset.labels)),
        heading("Spacing and shape of the training cases"),
        table(["", "median", "smallest", "largest"], _geometry_rows(prints)),
        paragraph("Per axis, in the order of the image array.", note=True),
    ]
    intensity = _intensity_rows(prints, dataset.channel_names)
    if intensity:
        parts += [
            heading("Foreground intensities"),
            table(["channel", *INTENSITY_STATISTICS.values()], intensity),
            paragraph(
                "Intensities of the foreground voxels of the training cases; CT normalization "
                "clips to the percentiles and z-scores with this mean and sd.",
                note=True,
            ),
        ]
    warnings = report.get("warnings") or []
    if warnings:
        parts += [heading("Validation warnings"), table(["warning"], [[w] for w in warnings])]
    written = write_text(out_html, page(f"Dataset {name}", parts))
    logger.info("wrote %s", written)
    return written


def _normalization(configuration: Mapping[str, Any]) -> str:
    schemes: Sequence[str] = configuration.get("normalization_schemes", [])
    masks: Sequence[bool] = configuration.get("use_mask_for_norm", [False] * len(schemes))
    parts = [
        f"{scheme} (inside the nonzero mask)" if mask else scheme
        for scheme, mask in zip(schemes, masks, strict=False)
    ]
    return "; ".join(parts) or MISSING


def _cascade(configuration: Mapping[str, Any]) -> str:
    if configuration.get("previous_stage"):
        return f"takes the predictions of {configuration['previous_stage']}"
    if configuration.get("next_stage"):
        return f"feeds {configuration['next_stage']}"
    return "–"


def _configuration_row(name: str, configuration: Mapping[str, Any]) -> list[Any]:
    network = configuration.get("network", {})
    return [
        name,
        format_vector(configuration.get("spacing")),
        format_vector(configuration.get("patch_size")),
        configuration.get("batch_size"),
        format_vector(configuration.get("median_image_size_in_voxels"), 1),
        network.get("architecture", MISSING),
        network.get("n_stages"),
        ", ".join(str(f) for f in network.get("features_per_stage", [])) or MISSING,
        _normalization(configuration),
        format_number(configuration.get("batch_dice")),
        _cascade(configuration),
    ]


def _stage_rows(network: Mapping[str, Any]) -> list[list[Any]]:
    features = network.get("features_per_stage", [])
    kernels = network.get("kernel_sizes", [])
    strides = network.get("strides", [])
    blocks = network.get("n_conv_per_stage", network.get("n_blocks_per_stage", []))

    def at(values: Sequence[Any], index: int) -> Any:
        return values[index] if index < len(values) else None

    return [
        [
            index,
            at(features, index),
            format_vector(at(kernels, index), 0),
            format_vector(at(strides, index), 0),
            at(blocks, index),
        ]
        for index in range(len(features))
    ]


def plans_page(plans_json: JsonSource, out_html: str | os.PathLike[str]) -> Path:
    """Write the plans: one row per configuration (spacing, patch size, batch size, median
    shape after resampling, network stages and features, normalization, cascade stage), then
    each configuration's stages.

    Args:
        plans_json: ``plans.json``.
        out_html: the page to write.

    Returns:
        ``out_html``.

    Raises:
        SegflowError: the plans are missing or have no ``configurations``.
    """
    plans, where = load_json(plans_json, "plans")
    require(plans, ["configurations"], where)
    configurations: Mapping[str, Mapping[str, Any]] = plans["configurations"]
    gpu = plans.get("gpu_memory_target_gb")
    overview = [
        ["dataset", plans.get("dataset_name", MISSING)],
        ["preset", plans.get("preset", MISSING)],
        ["GPU memory target (GB)", f"{gpu:g}" if isinstance(gpu, (int, float)) else MISSING],
        ["median spacing (mm)", format_vector(plans.get("original_median_spacing_after_transp"))],
        ["median shape (voxels)", format_vector(plans.get("original_median_shape_after_transp"))],
        ["axis order (transpose)", ", ".join(str(a) for a in plans.get("transpose_forward", []))],
    ]
    header = [
        "configuration",
        "spacing (mm)",
        "patch size",
        "batch size",
        "median shape after resampling",
        "network",
        "stages",
        "features per stage",
        "normalization",
        "batch Dice",
        "cascade",
    ]
    parts = [
        table(["property", "value"], overview),
        paragraph(
            "Median spacing and shape of the training cases after cropping, in the axis "
            "order the configurations use.",
            note=True,
        ),
        heading("Configurations"),
        table(header, [_configuration_row(n, c) for n, c in configurations.items()]),
    ]
    for name, configuration in configurations.items():
        parts += [
            heading(f"{name}: network stages"),
            table(
                ["stage", "features", "kernel size", "stride", "convolutions or blocks"],
                _stage_rows(configuration.get("network", {})),
            ),
        ]
    title = f"Plans for {plans.get('dataset_name') or 'the dataset'}"
    written = write_text(out_html, page(title, parts))
    logger.info("wrote %s", written)
    return written
