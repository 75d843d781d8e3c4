"""Every loss an experiment may name, in one table: :data:`LOSS_CATALOG`.

Standard library only: the settings (:data:`~segflow.training.settings.LOSS_NAMES`, the
choices of ``training.loss``) and the config check read the names at every Snakemake start,
without torch. :data:`segflow.training.losses.LOSSES`, which builds the losses, is made from the
same table (each entry's ``make`` is imported there), so a loss's name is spelled here only.

How to add a loss: write its ``nn.Module`` or ``make`` function (see
:mod:`segflow.training.losses`), then add one entry to :data:`LOSS_CATALOG`: where ``make`` is
(``module:attribute``), a check per parameter, a summary line, and ``no_regions="why"`` if it
has no region form, and the name to the ``training.loss`` enum of the config schema (a data file;
``tests/test_settings.py`` keeps it equal to :data:`LOSS_NAMES`). A parameter's default is the
default of ``make``'s keyword argument of that name, so it is written once, next to the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_LOSS",
    "LOSS_CATALOG",
    "LOSS_NAMES",
    "Check",
    "LossEntry",
    "boolean",
    "fraction_or_none",
    "non_negative",
]

Check = Callable[[Any], "str | None"]
"""A parameter check: the value in, ``None`` if fine, else what is wrong."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def non_negative(value: Any) -> str | None:
    """Check: a finite number >= 0."""
    return None if _number(value) and value >= 0 else f"must be a number >= 0, got {value!r}"


def fraction_or_none(value: Any) -> str | None:
    """Check: ``None`` or a number in [0, 1]."""
    if value is None or (_number(value) and 0 <= value <= 1):
        return None
    return f"must be a number in [0, 1] or null, got {value!r}"


def boolean(value: Any) -> str | None:
    """Check: ``True`` or ``False``."""
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


@dataclass(frozen=True)
class LossEntry:
    """One loss experiments can name, without importing it.

    Attributes:
        make: where the callable that builds the loss module is, ``module:attribute``; it
            takes ``batch_dice``, ``regions``, ``ignore_label`` and the loss's parameters, all
            keyword arguments, and the parameters' defaults are its defaults.
        checks: one :data:`Check` per parameter (the keys are the parameter names).
        summary: one line for listings and the report.
        no_regions: why the loss has no region form, or ``None`` when it has one.
    """

    make: str
    checks: Mapping[str, Check]
    summary: str
    no_regions: str | None = None


_LOSSES = "segflow.training.losses"

#: Every loss by name: declare a new one here (see the module docstring).
LOSS_CATALOG: dict[str, LossEntry] = {
    "dice_ce": LossEntry(
        f"{_LOSSES}.dice_ce:dice_ce_loss",
        {"weight_dice": non_negative, "weight_ce": non_negative, "smooth": non_negative},
        "soft Dice + cross-entropy 1:1 (regions: + binary cross-entropy); nnU-Net v2's loss",
    ),
    "exp_log": LossEntry(
        f"{_LOSSES}.variants:ExpLogLoss",
        {
            "weight_dice": non_negative,
            "weight_ce": non_negative,
            "gamma_dice": non_negative,
            "gamma_ce": non_negative,
            "smooth": non_negative,
            "include_background": boolean,
        },
        "exponential logarithmic loss (Wong et al. 2018), as in the KiTS19 seed",
    ),
    "focal": LossEntry(
        f"{_LOSSES}.variants:FocalLoss",
        {"gamma": non_negative, "alpha": fraction_or_none},
        "focal loss (Lin et al. 2017)",
    ),
    "soft_iou": LossEntry(
        f"{_LOSSES}.variants:SoftIoULoss",
        {"smooth": non_negative, "include_background": boolean},
        "soft Jaccard (IoU) loss, 1 - mean soft IoU",
    ),
    "dice_focal": LossEntry(
        f"{_LOSSES}.variants:DiceFocalLoss",
        {
            "weight_dice": non_negative,
            "weight_focal": non_negative,
            "gamma": non_negative,
            "alpha": fraction_or_none,
            "smooth": non_negative,
            "include_background": boolean,
        },
        "soft Dice + focal loss",
    ),
}

#: The losses a run may name (``training.loss``'s choices).
LOSS_NAMES = tuple(LOSS_CATALOG)
#: The method's own loss (nnU-Net v2's Dice + CE), used when an experiment names none.
DEFAULT_LOSS = "dice_ce"
