"""Postprocessing: keep only the largest connected component where cross-validation shows
that it helps (decided once into ``postprocessing.json``, applied to every prediction)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.postprocessing.apply import run_apply
    from segflow.postprocessing.components import (
        CONNECTIVITIES,
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
    "CONNECTIVITIES",
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

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "apply": ("run_apply",),
        "components": (
            "CONNECTIVITIES",
            "CONNECTIVITY",
            "apply_postprocessing",
            "largest_component_only",
        ),
        "decide": (
            "CRITERION",
            "FORMAT",
            "decide_postprocessing",
            "load_postprocessing",
            "run_decide",
        ),
    },
)
