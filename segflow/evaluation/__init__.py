"""Evaluation: per-case segmentation metrics (overlap, surface distances, volumes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.evaluation.metrics import (
        METRICS,
        case_metrics,
        class_metrics,
        region_mask,
        surface_distances,
    )

__all__ = ["METRICS", "case_metrics", "class_metrics", "region_mask", "surface_distances"]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "metrics": (
            "METRICS",
            "case_metrics",
            "class_metrics",
            "region_mask",
            "surface_distances",
        ),
    },
)
