"""Which configurations, of one plans or of several, share their preprocessed data.

Preprocessing a configuration reads from the plans only the axis order
(``transpose_forward``), the foreground intensity properties (CT normalization), the seed (the
class-location samples) and the configuration's target spacing, normalization schemes, mask
use and resampling. Two configurations with equal values turn every case into the same arrays,
so they share one folder and no case is preprocessed twice:

- within one plans, the cascade's full-resolution stage and ``3d_fullres`` (nnU-Net's shared
  ``data_identifier``);
- across plans, nnU-Net v2's residual-encoder presets and the default planner for ``2d`` and
  ``3d_fullres``: a preset changes the patch, batch and network, never the target spacing or
  the normalization. ``3d_lowres`` is not shared: its spacing is searched from the patch size,
  which the preset changes.

The patch size is not compared: it only decides how the arrays are chunked on disk
(:mod:`segflow.preprocessing.storage`), which changes how fast a patch is read, not what is
read. The comparison is of the values themselves, never of names: two plans whose
``data_identifier`` agree but whose spacings differ (another GPU memory target, moved plans)
keep separate folders.

Standard library only: the workflow's rules import this module at every Snakemake start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CONFIGURATION_KEYS", "PLANS_KEYS", "preprocessed_owners", "preprocessing_signature"]

#: What preprocessing reads from a configuration's section of the plans.
CONFIGURATION_KEYS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling")
#: What it reads from the plans themselves.
PLANS_KEYS = ("transpose_forward", "foreground_intensity_properties_per_channel", "seed")


def preprocessing_signature(plans: Mapping[str, Any], configuration: str) -> str:
    """Every value of ``plans`` that preprocessing ``configuration`` reads, as one string:
    equal strings, equal preprocessed data.

    Raises:
        KeyError: ``configuration`` is not in the plans.
    """
    section = plans["configurations"][configuration]
    values = {
        "plans": {key: plans.get(key) for key in PLANS_KEYS},
        "configuration": {key: section.get(key) for key in CONFIGURATION_KEYS},
    }
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def preprocessed_owners(
    plans: Mapping[str | None, Mapping[str, Any]],
) -> dict[tuple[str | None, str], tuple[str | None, str]]:
    """For every configuration of every plans, whose preprocessed data it uses.

    Args:
        plans: plans name -> content; ``None`` names the main plans (``plans.json``).

    Returns:
        ``(plans name, configuration)`` -> ``(plans name, configuration)`` of the owner: the
        first with the same :func:`preprocessing_signature`, in this order: the main plans
        first, then the others by name, each in its configurations' order. The order does not
        depend on the experiments' names or their order in the config: data the main plans
        share stays where it is whatever the experiments change.
    """
    order = sorted(plans, key=lambda name: (name is not None, name or ""))
    first: dict[str, tuple[str | None, str]] = {}
    owners: dict[tuple[str | None, str], tuple[str | None, str]] = {}
    for name in order:
        for configuration in plans[name]["configurations"]:
            signature = preprocessing_signature(plans[name], configuration)
            owners[(name, configuration)] = first.setdefault(signature, (name, configuration))
    return owners
