"""Report pages about the results: cross-validation, model selection and postprocessing, and
the test set.

Means leave out the cases where a metric is undefined (NaN: a surface distance when exactly
one of reference and prediction is empty), so every mean is shown with the number of cases
behind it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from segflow.io.atomic import write_text
from segflow.layout import SUMMARY_FILE, parse_model_name
from segflow.report.inputs import (
    JsonSource,
    MetricStats,
    classes_of,
    describe,
    load_json,
    mean_foreground_dice,
    read_metrics_table,
    read_metrics_tables,
    require,
)
from segflow.report.markup import (
    MISSING,
    Html,
    escape,
    format_number,
    heading,
    page,
    paragraph,
    table,
)

__all__ = ["crossval_page", "describe_rule", "selection_page", "test_page"]

logger = logging.getLogger(__name__)

#: Metrics of the cross-validation tables: column, title, decimals.
CROSSVAL_METRICS = (
    ("dice", "Dice", 3),
    ("iou", "IoU", 3),
    ("hd95", "HD95 (mm)", 2),
    ("assd", "ASSD (mm)", 2),
)
#: Metrics of the test tables (precision and recall as well).
TEST_METRICS = (
    ("dice", "Dice", 3),
    ("iou", "IoU", 3),
    ("precision", "precision", 3),
    ("recall", "recall", 3),
    ("hd95", "HD95 (mm)", 2),
    ("assd", "ASSD (mm)", 2),
)

#: How each connectivity of the postprocessing reads in words.
CONNECTIVITY = {
    "face": "voxels sharing a face (6 neighbours in 3D, 4 in 2D)",
    "full": "voxels sharing a face, an edge or a corner (26 neighbours in 3D, 8 in 2D)",
}


def _metric_title(key: str) -> str:
    """``mean_foreground_dice`` as "mean foreground Dice"."""
    words = ["Dice" if w == "dice" else w for w in key.split("_")]
    return " ".join(words)


def _stat_cell(stats: MetricStats, digits: int) -> Html:
    if stats.mean is None:
        text = MISSING
    elif stats.sd is None:
        text = format_number(stats.mean, digits)
    else:
        text = f"{format_number(stats.mean, digits)} ± {format_number(stats.sd, digits)}"
    count = f"n={stats.defined}/{stats.total}"
    return Html(f'{escape(text)}<span class="n">{escape(count)}</span>')


def _class_table(frame: pd.DataFrame, metrics: Sequence[tuple[str, str, int]]) -> Html:
    """One row per class: mean ± sd (and the defined cases) of each metric present."""
    present = [m for m in metrics if m[0] in frame.columns]
    rows = []
    for name in classes_of(frame):
        of_class = frame[frame["class"] == name]
        rows.append(
            [name] + [_stat_cell(describe(of_class[col]), digits) for col, _, digits in present]
        )
    return table(["class", *(title for _, title, _ in present)], rows)


def _fold_table(tables: Mapping[str, pd.DataFrame]) -> Html | None:
    """Mean foreground Dice of every fold of every configuration, if the tables name folds."""
    with_folds = {
        name: frame
        for name, frame in tables.items()
        if "fold" in frame.columns and frame["fold"].notna().any()
    }
    if not with_folds:
        return None
    folds = sorted({int(f) for t in with_folds.values() for f in t["fold"].dropna()})
    rows = []
    for name, frame in with_folds.items():
        row: list[Any] = [name]
        for fold in folds:
            of_fold = frame[frame["fold"] == fold]
            row.append(mean_foreground_dice(of_fold) if len(of_fold) else None)
        rows.append(row)
    return table(["configuration", *(f"fold {f}" for f in folds)], rows)


def crossval_page(
    metrics_csvs: Mapping[str, str | os.PathLike[str]], out_html: str | os.PathLike[str]
) -> Path:
    """Write the cross-validation results: an overview of every configuration, the mean
    foreground Dice per fold, and per configuration a table of mean ± sd per class for Dice,
    IoU, HD95 and ASSD with the number of cases where each is defined.

    Args:
        metrics_csvs: configuration name -> its merged ``crossval/<configuration>/metrics.csv``.
        out_html: the page to write.

    Returns:
        ``out_html``.

    Raises:
        SegflowError: no table was given, or one is missing or malformed.
    """
    tables = read_metrics_tables(metrics_csvs)
    classes = list(dict.fromkeys(c for frame in tables.values() for c in classes_of(frame)))
    overview = []
    for name, frame in tables.items():
        dice = [describe(frame.loc[frame["class"] == c, "dice"]).mean for c in classes]
        overview.append([name, frame["case_id"].nunique(), mean_foreground_dice(frame), *dice])
    header = ["configuration", "cases", "mean foreground Dice", *(f"Dice {c}" for c in classes)]
    parts = [table(header, overview, caption="Mean Dice over the cross-validation cases")]
    ablation = _ablation_table(metrics_csvs, overview, classes)
    if ablation is not None:
        parts += [heading("Models compared"), ablation]
    folds = _fold_table(tables)
    if folds is not None:
        parts += [heading("Mean foreground Dice per fold"), folds]
    backends = _predicted_with(metrics_csvs)
    if backends is not None:
        parts.append(backends)
    for name, frame in tables.items():
        parts.append(heading(f"{name} ({frame['case_id'].nunique()} cases)"))
        parts.append(_class_table(frame, CROSSVAL_METRICS))
    parts.append(
        paragraph(
            "mean ± sample standard deviation over the cases where the metric is defined; "
            "n = those cases / all cases.",
            note=True,
        )
    )
    written = write_text(out_html, page("Cross-validation", parts))
    logger.info("wrote %s", written)
    return written


def _predicted_with(metrics_csvs: Mapping[str, str | os.PathLike[str]]) -> Html | None:
    """Which backend and precision predicted each model's folds, from the folds'
    ``summary.json`` (``fold_<k>/`` beside the merged ``metrics.csv``); None where none says."""
    used = []
    for name, path in metrics_csvs.items():
        runs = set()
        for summary_path in sorted(Path(path).parent.glob(f"fold_*/{SUMMARY_FILE}")):
            summary = load_json(summary_path, "fold summary")[0] or {}
            if "backend" in summary:
                runs.add(f"{summary['backend']}, {summary.get('precision', 'float32')}")
        if runs:
            used.append(f"{name}: {'; '.join(sorted(runs))}")
    if not used:
        return None
    return paragraph("Cross-validation predicted with " + " · ".join(used) + ".", note=True)


def _ablation_table(
    metrics_csvs: Mapping[str, str | os.PathLike[str]],
    overview: Sequence[Sequence[Any]],
    classes: Sequence[str],
) -> Html | None:
    """One row per trained model (experiment and configuration): its planner preset,
    cross-validation Dice, parameters and seconds per training iteration, from the ``model``
    entry of the ``summary.json`` beside each ``metrics.csv``; None where no summary has
    one."""
    rows: list[list[Any]] = []
    settings: list[Any] = []
    for (name, path), scores in zip(metrics_csvs.items(), overview, strict=True):
        summary_path = Path(path).parent / SUMMARY_FILE
        summary = (
            load_json(summary_path, "cross-validation summary")[0] if summary_path.is_file() else {}
        )
        facts = summary.get("model")
        if not isinstance(facts, dict):
            return None
        configuration, experiment = parse_model_name(name)
        settings.append(facts.get("settings"))
        rows.append(
            [
                experiment or MISSING,
                configuration,
                facts.get("preset") or MISSING,
                *scores[2:],
                facts.get("parameters"),
                facts.get("seconds_per_iteration"),
            ]
        )
    for row, overrides in zip(rows, _overrides(settings), strict=True):
        row.insert(3, overrides)
    header = ["experiment", "configuration", "planner", "differs in", "mean foreground Dice",
              *(f"Dice {c}" for c in classes), "parameters", "s / iteration"]  # fmt: skip
    digits = [3] * (len(header) - 2) + [0, 3]
    return table(
        header,
        rows,
        caption="Cross-validation Dice and cost of every trained model (differs in: the "
        "training settings in which the model differs from what most of the models share, "
        "from each model's checkpoints; parameters of the network; seconds per training "
        "iteration: median over the folds' epochs of an epoch's time, its validation batches "
        "included, over its training iterations)",
        digits=digits,
    )


def _overrides(settings: Sequence[Any]) -> list[str]:
    """Per model, its settings that differ from the value most models share (the first
    model's on a tie): what each experiment overrides, read from the checkpoints. A model
    whose summary records no settings (older runs) gets the missing mark."""
    known = [s for s in settings if isinstance(s, dict)]
    keys = list(dict.fromkeys(k for s in known for k in s))
    shared = {}
    for key in keys:
        values = [json.dumps(s.get(key), sort_keys=True) for s in known]
        shared[key] = max(dict.fromkeys(values), key=values.count)  # first on a tie
    texts = []
    for model in settings:
        if not isinstance(model, dict):
            texts.append(MISSING)
            continue
        differs = [
            f"{key} {_setting_text(model.get(key))}"
            for key in keys
            if json.dumps(model.get(key), sort_keys=True) != shared[key]
        ]
        texts.append(", ".join(differs) or "nothing")
    return texts


def _setting_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_page(test_metrics_csv: str | os.PathLike[str], out_html: str | os.PathLike[str]) -> Path:
    """Write the test-set results: mean foreground Dice, mean ± sd per class of every metric,
    and each case's Dice and HD95 per class.

    Args:
        test_metrics_csv: ``test_metrics.csv`` (one row per case and class).
        out_html: the page to write.

    Returns:
        ``out_html``.

    Raises:
        SegflowError: the table is missing or malformed.
    """
    frame = read_metrics_table(test_metrics_csv)
    classes = classes_of(frame)
    overview = [
        ["cases", frame["case_id"].nunique()],
        ["mean foreground Dice", mean_foreground_dice(frame)],
    ]
    columns = [m for m in TEST_METRICS if m[0] in ("dice", "hd95") and m[0] in frame.columns]
    per_case = []
    for case_id, of_case in frame.groupby("case_id", sort=True):
        by_class = of_case.set_index("class")
        row: list[Any] = [case_id]
        for column, _, _ in columns:
            row += [by_class[column].get(c) if c in by_class.index else None for c in classes]
        per_case.append(row)
    case_header = ["case"] + [f"{title} {c}" for _, title, _ in columns for c in classes]
    case_digits = [0] + [digits for _, _, digits in columns for _ in classes]
    parts = [
        table(["property", "value"], overview),
        heading("Per class"),
        _class_table(frame, TEST_METRICS),
        paragraph(
            "mean ± sample standard deviation over the cases where the metric is defined; "
            "n = those cases / all cases.",
            note=True,
        ),
        heading("Per case"),
        table(case_header, per_case, digits=case_digits),
    ]
    written = write_text(out_html, page("Test set", parts))
    logger.info("wrote %s", written)
    return written


# Its name starts with "test": keep pytest from collecting it where a test module imports it.
test_page.__test__ = False  # type: ignore[attr-defined]


def _key(labels: Sequence[Any]) -> tuple[Any, ...]:
    """Labels as a dictionary key (a region, given as a list of labels, becomes a tuple)."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in labels)


def _labels_text(labels: Sequence[Any]) -> str:
    noun = "label" if len(labels) == 1 else "labels"
    return f"{noun} {', '.join(str(v) for v in labels)}"


def describe_rule(
    rule: Mapping[str, Any], names: Mapping[tuple[Any, ...], str] | None = None
) -> str:
    """A postprocessing rule in words, e.g. "keep only the largest connected component of
    labels 1, 2 (foreground), taken together"; ``names`` maps a rule's labels to what the
    postprocessing steps called them."""
    labels = list(rule.get("labels", []))
    text = f"keep only the largest connected component of {_labels_text(labels)}"
    name = (names or {}).get(_key(labels))
    if name:
        text += f" ({name})"
    if len(labels) > 1:
        text += ", taken together"
    return text


def _candidate_rows(selection: Mapping[str, Any]) -> tuple[list[list[Any]], list[int]]:
    metric = selection["metric"]
    classes = selection.get("classes", [])
    winner = selection["selected"].get("name")
    candidates = sorted(
        selection["candidates"],
        key=lambda c: (c.get(metric) is None, -(c.get(metric) or 0.0)),
    )
    rows, highlight = [], []
    for rank, candidate in enumerate(candidates, start=1):
        dice = candidate.get("dice", {})
        selected = candidate.get("name") == winner
        if selected:
            highlight.append(rank - 1)
        rows.append(
            [
                rank,
                candidate.get("name", MISSING),
                ", ".join(candidate.get("configurations", [])) or MISSING,
                candidate.get(metric),
                *(dice.get(c) for c in classes),
                candidate.get("num_cases"),
                "selected" if selected else "",
            ]
        )
    return rows, highlight


def _change(before: Any, after: Any) -> Html:
    # Four decimals: a rule is kept for any gain, often below 1e-3.
    text = f"{format_number(before, 4)} → {format_number(after, 4)}"
    return Html(escape(text))


def _score_row(
    title: str, scores: Mapping[str, Any], criterion: str, classes: Sequence[str]
) -> list[Any]:
    dice = scores.get("dice", {})
    return [title, scores.get(criterion), *(dice.get(c) for c in classes)]


def _postprocessing_parts(post: Mapping[str, Any], where: str) -> list[str]:
    require(post, ["baseline", "steps", "rules"], where)
    criterion = post.get("criterion", "mean_foreground_dice")
    classes = post.get("classes", [])
    connectivity = post.get("connectivity", MISSING)
    current = post["baseline"]
    rows, kept_rows = [], []
    for index, step in enumerate(post["steps"]):
        rows.append(
            [
                index + 1,
                step.get("target", MISSING),
                ", ".join(str(v) for v in step.get("labels", [])),
                _change(current.get(criterion), step.get(criterion)),
                *(
                    _change(current.get("dice", {}).get(c), step.get("dice", {}).get(c))
                    for c in classes
                ),
                "kept" if step.get("kept") else "rejected",
            ]
        )
        if step.get("kept"):
            kept_rows.append(index)
            current = step
    dice_titles = [f"Dice {c}" for c in classes]
    header = ["step", "target", "labels", _metric_title(criterion), *dice_titles, "decision"]
    names = {_key(s.get("labels", [])): s["target"] for s in post["steps"] if "target" in s}
    rules = [describe_rule(rule, names) for rule in post["rules"]]
    final = post.get("final", current)
    parts = [
        heading("Postprocessing"),
        paragraph(
            f"Each step keeps only the largest connected component of its target (connected: "
            f"{CONNECTIVITY.get(connectivity, connectivity)}) in the "
            f"{post.get('num_cases', MISSING)} cross-validation predictions of the selected "
            f"model, and is kept when it improves the {_metric_title(criterion)}. Each cell "
            f"shows before → after; 'before' is the result of the steps kept so far."
        ),
        table(header, rows, highlight=kept_rows),
        table(
            ["", _metric_title(criterion), *dice_titles],
            [
                _score_row("before postprocessing", post["baseline"], criterion, classes),
                _score_row("after postprocessing", final, criterion, classes),
            ],
        ),
        heading("Postprocessing applied to every prediction", 3),
    ]
    if rules:
        items = "".join(f"<li>{escape(r[0].upper() + r[1:])}.</li>" for r in rules)
        parts.append(Html(f"<ol>{items}</ol>"))
    else:
        parts.append(paragraph("None: the predictions are used as the model outputs them."))
    return parts


def selection_page(
    selection_json: JsonSource,
    postprocessing_json: JsonSource,
    out_html: str | os.PathLike[str],
) -> Path:
    """Write the model selection and postprocessing decisions: the candidates (single
    configurations and ensembles) sorted by their cross-validation score with the selected
    one highlighted, then each postprocessing step with the scores before and after it and
    whether it was kept, and the resulting rules in words.

    Args:
        selection_json: ``selection.json``.
        postprocessing_json: ``postprocessing.json``.
        out_html: the page to write.

    Returns:
        ``out_html``.

    Raises:
        SegflowError: an input is missing or lacks a key the page needs.
    """
    selection, where = load_json(selection_json, "selection")
    require(selection, ["metric", "candidates", "selected"], where)
    post, post_where = load_json(postprocessing_json, "postprocessing")
    metric = selection["metric"]
    classes = selection.get("classes", [])
    rows, highlight = _candidate_rows(selection)
    dice_titles = [f"Dice {c}" for c in classes]
    header = [
        "rank",
        "candidate",
        "configurations",
        _metric_title(metric),
        *dice_titles,
        "cases",
        "",
    ]
    selected = selection["selected"]
    folds = ", ".join(str(f) for f in selected.get("folds", [])) or MISSING
    summary = [
        ["selected", selected.get("name", MISSING)],
        ["configurations", ", ".join(selected.get("configurations", [])) or MISSING],
        ["folds", folds],
        [_metric_title(metric), selected.get(metric)],
    ]
    parts = [
        table(["", "value"], summary),
        heading("Candidates"),
        table(header, rows, highlight=highlight),
        paragraph(
            "Each candidate is scored on the cross-validation predictions: every training "
            "case held out by one of the trained folds, predicted by that fold; ensembles "
            "average the configurations' probabilities.",
            note=True,
        ),
        *_postprocessing_parts(post, post_where),
    ]
    written = write_text(out_html, page("Model selection and postprocessing", parts))
    logger.info("wrote %s", written)
    return written
