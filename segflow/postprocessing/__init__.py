"""Postprocessing: keep only the largest connected component where cross-validation shows
that it helps (decided once into ``postprocessing.json``, applied to every prediction)."""

from __future__ import annotations

from segflow.postprocessing.apply import run_apply
from segflow.postprocessing.components import (
    CONNECTIVITY,
    apply_postprocessing,
    largest_component_only,
)
from segflow.postprocessing.decide import (
    CRITERION,
    FORMAT,
    decide_postprocessing,
    load_postprocessing,
    run_decide,
)

__all__ = [
    "CONNECTIVITY",
    "CRITERION",
    "FORMAT",
    "apply_postprocessing",
    "decide_postprocessing",
    "largest_component_only",
    "load_postprocessing",
    "run_apply",
    "run_decide",
]
