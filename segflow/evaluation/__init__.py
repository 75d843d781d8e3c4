"""Evaluation: per-case segmentation metrics (overlap, surface distances, volumes)."""

from __future__ import annotations

from segflow.evaluation.metrics import (
    METRICS,
    case_metrics,
    class_metrics,
    region_mask,
    surface_distances,
)

__all__ = ["METRICS", "case_metrics", "class_metrics", "region_mask", "surface_distances"]
