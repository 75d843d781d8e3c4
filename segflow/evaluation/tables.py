"""Metric tables on disk: one row per case and class, as CSV.

Written by ``validate`` (each fold), ``crossval`` (the folds merged) and ``evaluate`` (the test
set); read by model selection and the report.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from segflow.io.atomic import atomic_path

__all__ = ["read_metrics", "write_metrics"]


def write_metrics(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> Path:
    """The metric rows as CSV (one row per case and class), atomically."""
    path = Path(path)
    buffer = io.StringIO()
    pd.DataFrame(list(rows)).to_csv(buffer, index=False, float_format="%.6g")
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a metrics table, case ids and class names as strings."""
    # Only empty cells are missing: a case or class named "NA" stays a name.
    table = pd.read_csv(
        path, dtype={"case_id": str, "class": str}, keep_default_na=False, na_values=[""]
    )
    return table.to_dict("records")
