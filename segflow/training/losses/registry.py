"""The losses experiments can name, their parameters, and :func:`build_loss`.

:data:`LOSSES` maps a name to a :class:`LossSpec`: how to make the loss and how to check each
of its parameters. It is made from :data:`segflow.training.loss_catalog.LOSS_CATALOG`, the
torch-free table where every loss is declared (the settings read the names there). A
parameter's default is the default of the ``make`` callable's keyword argument of that name,
so it is written once, next to the loss (where its source is stated).
Every ``make`` takes ``batch_dice``, ``regions`` and ``ignore_label`` (see
:class:`~segflow.training.losses.variants.ExpLogLoss` for their meaning) plus its parameters.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from segflow.errors import Problem, SegflowError
from segflow.io.dataset import DatasetJson
from segflow.lazy import import_object
from segflow.training.loss_catalog import DEFAULT_LOSS, LOSS_CATALOG, Check
from segflow.training.losses.deep_supervision import (
    DeepSupervisionLoss,
    deep_supervision_weights,
)

__all__ = [
    "DEFAULT_LOSS",
    "LOSSES",
    "LossSpec",
    "build_loss",
    "loss_parameters",
    "loss_problems",
]

_CONTRACT = ("batch_dice", "regions", "ignore_label")
"""Keyword arguments every ``make`` takes that are not the loss's parameters."""


@dataclass(frozen=True)
class LossSpec:
    """One loss experiments can name.

    Args:
        make: builds the loss module from ``batch_dice``, ``regions``, ``ignore_label`` and the
            parameters, all keyword arguments; the parameters' defaults are its defaults.
        checks: one :data:`Check` per parameter (the keys are the parameter names).
        summary: one line for listings and the report.
        no_regions: why the loss has no region form, or ``None`` when it has one.
    """

    make: Callable[..., nn.Module]
    checks: Mapping[str, Check]
    summary: str
    no_regions: str | None = None
    _defaults: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        signature = inspect.signature(self.make).parameters
        defaults = {k: p.default for k, p in signature.items() if k not in _CONTRACT}
        if set(defaults) != set(self.checks) or any(
            v is inspect.Parameter.empty for v in defaults.values()
        ):
            raise TypeError(
                f"{self.make.__name__}: checks {sorted(self.checks)} must name exactly its "
                f"parameters {sorted(defaults)}, each with a default"
            )
        object.__setattr__(self, "_defaults", defaults)

    @property
    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default value."""
        return dict(self._defaults)


LOSSES: dict[str, LossSpec] = {
    name: LossSpec(import_object(entry.make), entry.checks, entry.summary, entry.no_regions)
    for name, entry in LOSS_CATALOG.items()
}
"""Every loss by name, made from :data:`~segflow.training.loss_catalog.LOSS_CATALOG` (declare a
new one there)."""


def _closest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} (valid: {', '.join(valid) or 'none'})"


def loss_problems(
    name: str, params: Mapping[str, Any], *, regions: bool | None = None, where: str = "loss"
) -> list[Problem]:
    """Every problem with a loss name and its parameters, without building anything.

    Args:
        name: the loss's name in :data:`LOSSES`.
        params: parameters overriding the defaults.
        regions: whether the dataset trains regions; ``None`` when not known yet (the region
            checks are skipped then).
        where: where the name comes from (a config key), prefixed to each problem.

    Returns:
        The problems, empty when the loss can be built.
    """
    spec = LOSSES.get(name)
    if spec is None:
        return [Problem(where, f"loss '{name}' is not known{_closest(str(name), list(LOSSES))}")]
    problems = []
    defaults = spec.defaults
    for key, value in params.items():
        if key not in defaults:
            message = f"loss '{name}' has no parameter '{key}'{_closest(str(key), list(defaults))}"
            problems.append(Problem(f"{where}.{key}", message))
            continue
        message = spec.checks[key](value)
        if message:
            problems.append(Problem(f"{where}.{key}", f"{key} {message}"))
    resolved = {**defaults, **params}
    weights = [k for k in defaults if k.startswith("weight_")]
    if weights and not problems and all(resolved[k] == 0 for k in weights):
        problems.append(
            Problem(where, f"loss '{name}': {', '.join(weights)} are all 0; the loss would be 0")
        )
    if regions:
        if spec.no_regions is not None:
            problems.append(Problem(where, f"loss '{name}' has no region form: {spec.no_regions}"))
        elif resolved.get("include_background"):
            problems.append(
                Problem(
                    f"{where}.include_background",
                    "include_background must be false for a dataset with regions (a region "
                    "target has no background channel)",
                )
            )
    return problems


def loss_parameters(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of loss ``name`` with ``params`` applied: what a checkpoint records.

    Raises:
        SegflowError: the name or a parameter is wrong (every problem listed).
    """
    params = dict(params or {})
    problems = loss_problems(name, params)
    if problems:
        raise SegflowError(f"cannot use the training loss '{name}'", problems)
    return {**LOSSES[name].defaults, **params}


def build_loss(
    dataset: DatasetJson,
    *,
    name: str = DEFAULT_LOSS,
    batch_dice: bool,
    num_outputs: int = 1,
    **params: Any,
) -> nn.Module:
    """The training loss ``name`` for this dataset.

    Args:
        dataset: the dataset description: regions pick the loss's region form (one sigmoid per
            region), its ignore label is masked out of every term.
        name: a key of :data:`LOSSES`; the default is nnU-Net v2's Dice + CE.
        batch_dice: the configuration's ``batch_dice``.
        num_outputs: network outputs; above 1, the loss is wrapped in
            :class:`DeepSupervisionLoss` with :func:`deep_supervision_weights`.
        **params: the loss's parameters, overriding its defaults.

    Returns:
        The loss module; with deep supervision it takes lists of outputs and targets.

    Raises:
        SegflowError: unknown name or parameter (with the closest valid one), an invalid value,
            or a loss without a region form for a dataset with regions; every problem at once.
    """
    problems = loss_problems(name, params, regions=dataset.has_regions)
    if problems:
        raise SegflowError(f"cannot build the training loss '{name}'", problems)
    loss = LOSSES[name].make(
        batch_dice=batch_dice,
        regions=dataset.has_regions,
        ignore_label=dataset.ignore_label,
        **params,
    )
    if num_outputs > 1:
        loss = DeepSupervisionLoss(loss, deep_supervision_weights(num_outputs))
    return loss
