"""Reading the report's inputs (JSON artifacts and metric tables) and describing metrics.

Problems with an input reach the user as one :class:`~segflow.errors.SegflowError` naming the
file, never as a ``KeyError`` from deep inside a page.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segflow.errors import Problem, SegflowError

__all__ = [
    "JsonSource",
    "MetricStats",
    "classes_of",
    "describe",
    "load_json",
    "mean_foreground_dice",
    "read_metrics_table",
    "read_metrics_tables",
    "require",
]

#: A JSON artifact given as its path, or already parsed.
JsonSource = str | os.PathLike[str] | Mapping[str, Any]

#: Columns every metric table must have; the others are optional.
REQUIRED_COLUMNS = ("case_id", "class", "dice")

_ERROR = "cannot write the report"


def load_json(source: JsonSource, what: str) -> tuple[dict[str, Any], str]:
    """The parsed object and where it came from (for messages).

    Raises:
        SegflowError: the file is missing, is not JSON, or holds no JSON object.
    """
    if isinstance(source, Mapping):
        return dict(source), what
    path = Path(source)
    if not path.is_file():
        raise SegflowError(_ERROR, [Problem(str(path), f"{what} does not exist")])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = Problem(str(path), f"{what} is not valid JSON: {err}")
        raise SegflowError(_ERROR, [problem]) from None
    if not isinstance(data, dict):
        raise SegflowError(_ERROR, [Problem(str(path), f"{what} must hold a JSON object")])
    return data, str(path)


def require(data: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    """Raise one error listing every key of ``keys`` that ``data`` lacks."""
    missing = [Problem(where, f"missing key '{key}'") for key in keys if key not in data]
    if missing:
        raise SegflowError(_ERROR, missing)


def read_metrics_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A ``metrics.csv`` (one row per case and class); empty cells become NaN.

    Raises:
        SegflowError: the file is missing, unreadable, or lacks ``case_id``, ``class`` or
            ``dice``.
    """
    path = Path(path)
    if not path.is_file():
        raise SegflowError(_ERROR, [Problem(str(path), "metrics table does not exist")])
    try:
        # Only empty cells are missing values: a class called "NA" or "None" stays a name.
        table = pd.read_csv(
            path, dtype={"case_id": str, "class": str}, keep_default_na=False, na_values=[""]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SegflowError(_ERROR, [Problem(str(path), f"unreadable CSV: {err}")]) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise SegflowError(_ERROR, [Problem(str(path), f"missing column(s) {', '.join(missing)}")])
    for column in table.columns.difference(["case_id", "class"]):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def read_metrics_tables(
    metrics_csvs: Mapping[str, str | os.PathLike[str]],
) -> dict[str, pd.DataFrame]:
    """The metric table of every configuration (name -> path), in the given order.

    Raises:
        SegflowError: none was given, or one is missing or malformed.
    """
    if not metrics_csvs:
        raise SegflowError(
            _ERROR, [Problem("cross-validation", "no configuration's metrics were given")]
        )
    return {name: read_metrics_table(path) for name, path in metrics_csvs.items()}


@dataclass(frozen=True)
class MetricStats:
    """One metric of one class over the cases.

    Attributes:
        mean: mean over the cases where the metric is defined; None if it is nowhere.
        sd: sample standard deviation over the same cases; None with fewer than two.
        defined: cases with a defined (non-NaN) value.
        total: all cases.
    """

    mean: float | None
    sd: float | None
    defined: int
    total: int


def describe(values: Sequence[float] | np.ndarray | pd.Series) -> MetricStats:
    """Mean, sample standard deviation and counts of ``values``, NaN left out."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[~np.isnan(array)]
    mean = float(finite.mean()) if finite.size else None
    sd = float(finite.std(ddof=1)) if finite.size >= 2 else None
    return MetricStats(mean=mean, sd=sd, defined=int(finite.size), total=int(array.size))


def classes_of(table: pd.DataFrame) -> list[str]:
    """The classes of a metric table, in the order they first appear."""
    return list(dict.fromkeys(table["class"]))


def mean_foreground_dice(table: pd.DataFrame) -> float | None:
    """The mean over the classes of their mean Dice (as ``summarize`` computes it)."""
    means = [describe(table.loc[table["class"] == name, "dice"]).mean for name in classes_of(table)]
    defined = [m for m in means if m is not None and not math.isnan(m)]
    return float(np.mean(defined)) if defined else None
