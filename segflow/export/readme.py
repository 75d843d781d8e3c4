"""The README of an exported model: what it segments, how well, and how to run it.

Written from dataset.json, selection.json and postprocessing.json only, so that it says
exactly what the bundle holds. Missing or malformed optional entries (a candidate without a
class's Dice, no postprocessing result) show as ``n/a`` instead of failing the export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from segflow.io.dataset import DatasetJson
from segflow.io.image import NATURAL_2D_ENDINGS

__all__ = ["render_readme"]


def _metric(name: str) -> str:
    """``mean_foreground_dice`` -> ``mean foreground Dice``."""
    return name.replace("_", " ").replace("dice", "Dice")


def _number(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}"
    return "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _case_files(dataset: DatasetJson) -> str:
    """How a case's channels come in files: one volume per channel, or for a natural 2D
    image (PNG, ...) with several channels one colour file holding them all (either form
    reads the same)."""
    ending, count = dataset.file_ending, dataset.num_channels
    if count > 1 and ending in NATURAL_2D_ENDINGS:
        return (
            f"Each case is one image file `<case>_0000{ending}` holding its {count} channels "
            f"(an RGB image), or {count} single-channel files "
            f"`<case>_<XXXX>{ending}`, one per channel; the channels are:"
        )
    if count == 1:
        return f"Each case is one image file `<case>_0000{ending}`, the channel:"
    return (
        f"Each case is {count} image files `<case>_<XXXX>{ending}`, one per channel, numbered "
        "as follows:"
    )


def _inputs(dataset: DatasetJson) -> list[str]:
    lines = ["## Inputs", "", _case_files(dataset), ""]
    lines += _table(
        ["channel", "name"], [[f"`{k:04d}`", name] for k, name in dataset.channel_names.items()]
    )
    lines += ["", "## Labels", ""]
    rows = [
        [name, ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)]
        for name, value in dataset.labels.items()
    ]
    return [*lines, *_table(["label", "value"], rows), ""]


def _selected(
    selection: Mapping[str, Any], configurations: Mapping[str, tuple[int, ...]]
) -> list[str]:
    selected = selection.get("selected", {})
    metric = selection.get("metric", "mean_foreground_dice")
    names = " + ".join(f"`{name}`" for name in configurations)
    folds = sorted({k for fs in configurations.values() for k in fs})
    kind = "an ensemble of" if len(configurations) > 1 else "the configuration"
    return [
        "## Selected model",
        "",
        f"**{selected.get('name', ' + '.join(configurations))}**: {kind} {names}, folds "
        f"{', '.join(map(str, folds))} (their predictions averaged).",
        "",
        f"Cross-validation {_metric(metric)}: **{_number(selected.get(metric))}**.",
        "",
    ]


def _candidates(selection: Mapping[str, Any]) -> list[str]:
    candidates = [c for c in selection.get("candidates", []) if isinstance(c, dict)]
    if not candidates:
        return []
    metric = selection.get("metric", "mean_foreground_dice")
    classes = list(selection.get("classes", []))
    chosen = selection.get("selected", {}).get("name")
    imported = [str(m) for m in selection.get("nnunet_models") or []]
    with_cases = any("num_cases" in c for c in candidates)
    rows = []
    for candidate in candidates:
        dice = candidate.get("dice", {}) if isinstance(candidate.get("dice"), dict) else {}
        selected = candidate.get("name") == chosen or _is_nnunet_choice(
            str(candidate.get("name")), imported
        )
        name = f"`{candidate.get('name', '?')}`" + (" (selected)" if selected else "")
        rows.append(
            [
                name,
                _number(candidate.get(metric)),
                *(_number(dice.get(c)) for c in classes),
                *([str(candidate.get("num_cases", "n/a"))] if with_cases else []),
            ]
        )
    header = ["candidate", _metric(metric), *(f"Dice {c}" for c in classes)]
    header += ["cases"] if with_cases else []
    return [
        "## Cross-validation of every candidate",
        "",
        "Each candidate's predictions of the held-out cases of every fold, scored per class:",
        "",
        *_table(header, rows),
        "",
    ]


def _is_nnunet_choice(name: str, models: list[str]) -> bool:
    """Whether nnU-Net's candidate ``name`` (a model folder, or ``ensemble___A___B___<folds>``)
    is the imported selection ``models``."""
    if len(models) == 1:
        return name == models[0]
    return bool(models) and name.startswith("ensemble___" + "___".join(models) + "___")


def _rule(rule: Any, names: Mapping[int, str]) -> str:
    labels = rule.get("labels") if isinstance(rule, dict) else None
    if not (isinstance(labels, list) and labels):
        return f"`{json.dumps(rule)}`"
    described = " + ".join(f"{v} ({names[v]})" if v in names else str(v) for v in labels)
    together = " taken together" if len(labels) > 1 else ""
    return f"keep only the largest connected component of label(s) {described}{together}"


def _postprocessing(postprocessing: Mapping[str, Any], dataset: DatasetJson) -> list[str]:
    names = {v: k for k, v in dataset.labels.items() if isinstance(v, int)}
    rules = postprocessing.get("rules") or []
    lines = ["## Postprocessing", ""]
    if not rules:
        lines.append("None: the segmentations are used as the networks produce them.")
    else:
        lines.append("Applied to every prediction, in this order:")
        lines.append("")
        lines += [f"{i}. {_rule(rule, names)}" for i, rule in enumerate(rules, 1)]
    criterion = postprocessing.get("criterion", "mean_foreground_dice")
    final = postprocessing.get("final")
    baseline = postprocessing.get("baseline")
    if isinstance(final, dict):
        before = baseline.get(criterion) if isinstance(baseline, dict) else None
        lines += [
            "",
            f"Cross-validation {_metric(criterion)} with postprocessing: "
            f"**{_number(final.get(criterion))}** (without: {_number(before)}).",
        ]
    return [*lines, ""]


def _usage(folder_name: str) -> list[str]:
    return [
        "## Use",
        "",
        "Segment a folder of images (or single image files) with the selected model:",
        "",
        "```",
        f"segflow predict -i IN -o OUT -m path/to/{folder_name}",
        "```",
        "",
        "Add `-c <configuration>` to predict with one configuration's folds only. A zip of "
        "this folder is unpacked and checked (every file's sha256) with:",
        "",
        "```",
        f"segflow import-model {folder_name}.zip -o path/to/{folder_name}",
        "```",
        "",
        "`manifest.json` lists every file with its sha256; do not edit the files.",
        "",
    ]


def render_readme(
    dataset: DatasetJson,
    dataset_name: str,
    selection: Mapping[str, Any],
    postprocessing: Mapping[str, Any],
    configurations: Mapping[str, tuple[int, ...]],
    folder_name: str,
) -> str:
    """The README.md of an exported model, as Markdown text.

    Args:
        dataset: the typed dataset.json.
        dataset_name: the dataset's name for the title.
        selection: the parsed selection.json (candidates, classes, selected).
        postprocessing: the parsed postprocessing.json (``rules``, ``final`` and
            ``baseline`` are read).
        configurations: configuration -> folds in the bundle.
        folder_name: the model folder's name, for the commands shown.
    """
    title = f"# {dataset_name or 'segflow'} segmentation model"
    imported = [str(m) for m in selection.get("nnunet_models") or []]
    if imported:
        intro = (
            "A self-contained model trained by nnU-Net v2 ("
            + ", ".join(f"`{m}`" for m in imported)
            + ") and imported by `segflow import-nnunet`: the trained folds' weights, "
            "converted to segflow's networks, with the plans, dataset description and "
            "preprocessing they need. The selection, cross-validation scores and "
            f"postprocessing below are nnU-Net's own ({selection.get('source', 'nnU-Net')})."
        )
    else:
        intro = (
            "A self-contained nnU-Net-style model trained and exported by segflow: the "
            "trained folds' weights with the plans, dataset description and preprocessing "
            "they need."
        )
    lines = [
        title,
        "",
        intro,
        "",
        *_inputs(dataset),
        *_selected(selection, configurations),
        *_candidates(selection),
        *_postprocessing(postprocessing, dataset),
        *_usage(folder_name),
    ]
    return "\n".join(lines)
