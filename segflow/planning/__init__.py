"""Experiment planning: from the dataset fingerprint to ``plans.json``.

The decisions (target spacing, configurations, patch and batch sizes, network topology,
normalization) follow nnU-Net v2 2.8.1 exactly; see :func:`plan_experiment`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.planning.planner import plan_experiment
    from segflow.planning.plans import ConfigurationPlan, NetworkPlan, Plans, load_plans
    from segflow.planning.presets import PRESETS, PlannerPreset, get_preset

__all__ = [
    "PRESETS",
    "ConfigurationPlan",
    "NetworkPlan",
    "PlannerPreset",
    "Plans",
    "get_preset",
    "load_plans",
    "plan_experiment",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "planner": ("plan_experiment",),
        "plans": (
            "ConfigurationPlan",
            "NetworkPlan",
            "Plans",
            "load_plans",
        ),
        "presets": (
            "PRESETS",
            "PlannerPreset",
            "get_preset",
        ),
    },
)
