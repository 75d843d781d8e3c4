"""Experiment planning: from the dataset fingerprint to ``plans.json``.

The decisions (target spacing, configurations, patch and batch sizes, network topology,
normalization) follow nnU-Net v2 2.8.1 exactly; see :func:`plan_experiment`.
"""

from __future__ import annotations

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
