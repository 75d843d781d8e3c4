"""Variants of a planned network: the extensions of the BraTS 2021 winner, each on its own.

Luu & Park, "Extending nn-UNet for brain tumor segmentation" (arXiv 2112.04653), compare
nnU-Net's network (BL) with a larger encoder (BL+L), group normalization (BL+GN), axial
attention in the decoder (BL+AA) and combinations (BL+L+GN). A :class:`NetworkVariant` holds
those switches as plain settings; :func:`~segflow.networks.build_network` applies it to the
network a configuration plans, so plans stay as planned and a checkpoint that records
``variant.to_dict()`` rebuilds the same network with :meth:`NetworkVariant.from_dict`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segflow.errors import Problem, SegflowError
from segflow.networks.catalog import NETWORK_NAMES, ZOO_NAMES
from segflow.settings import setting

if TYPE_CHECKING:
    from torch import nn

    from segflow.networks.blocks import LayerOps

__all__ = [
    "BRATS2021_VARIANTS",
    "MEDNEXT_KERNELS",
    "MEDNEXT_SIZE_NAMES",
    "NORMS",
    "NetworkVariant",
]

NORMS = ("instance", "group", "batch")
"""The normalizations a variant may put in place of the planned one."""

#: The settings that change a U-Net of the plans, with the value that changes nothing.
_UNET_ONLY = {"encoder_scale": 1, "norm": None, "axial_attention": False}
#: MedNeXt's sizes and kernel sizes (segflow.networks.zoo.MEDNEXT_SIZES and _KERNEL_SIZES,
#: which a test keeps equal); the settings naming them change MedNeXt only.
MEDNEXT_SIZE_NAMES = ("S", "B", "M", "L")
MEDNEXT_KERNELS = (3, 5)
_MEDNEXT_ONLY = ("size", "kernel_size")
# Of the planned normalization's arguments, those every normalization takes.
_SHARED_NORM_KWARGS = ("eps", "affine")
_POSITIVE_INTEGERS = (
    "encoder_scale",
    "encoder_max_features",
    "groups",
    "attention_stages",
    "attention_heads",
    "attention_head_size",
)


@dataclass(frozen=True)
class NetworkVariant:
    """Changes to the planned network; the defaults change nothing.

    Attributes:
        architecture: the network, by its name in :data:`~segflow.networks.NETWORKS` or in
            the model zoo (:data:`~segflow.networks.catalog.ZOO_NAMES`,
            :mod:`segflow.networks.zoo`); ``None``: the plan's ``architecture``. The encoder,
            normalization and attention settings change the U-Nets of the plans only.
        encoder_scale: multiplies the encoder's features per stage (BraTS 2021's larger
            encoder: 2), capped at ``encoder_max_features`` (never below the planned width);
            the decoder keeps the planned widths.
        encoder_max_features: the cap of the scaled encoder ("up to 512" in the paper).
        norm: ``"instance"``, ``"group"`` or ``"batch"`` normalization in every block, or
            ``None`` for the planned one. The eps and affine of the plan carry over.
        groups: channel groups of group normalization; it must divide every width of the
            network. 16: the paper's count could not be checked when this was written.
        axial_attention: add :class:`~segflow.networks.attention.AxialAttention` to the
            output of the transposed convolution of the ``attention_stages`` coarsest decoder
            stages.
        attention_stages: how many of the coarsest decoder stages get attention (paper: 4).
        attention_heads: heads at the finest attended stage (paper: 4); heads and head size
            double at each coarser stage.
        attention_head_size: channels per head there (paper: 16).
        spatial_transformer: put a spatial transformer (a localization network predicting an
            affine transform, initialized to the identity) in front of the network
            (:mod:`segflow.networks.spatial_transformer`; JMedSeg's SAS framework).
        spatial_transformer_lr_scale: the factor on the learning rate of the spatial
            transformer's localization network; ``None``: 0.01
            (:data:`~segflow.networks.spatial_transformer.LOCALIZATION_LR_SCALE`).
        size: MedNeXt's size, ``S``, ``B``, ``M`` or ``L`` (Roy et al. 2023); ``None``: B.
        kernel_size: MedNeXt's depthwise kernel size, 3 or 5; ``None``: 3.
    """

    architecture: str | None = setting(None, "the network by name (default: the plan's)")
    encoder_scale: int = setting(1, "multiplies the encoder's features (BraTS 2021 BL+L: 2)")
    encoder_max_features: int = setting(512, "cap of the scaled encoder's features")
    norm: str | None = setting(None, "instance, group or batch (default: the plan's)")
    groups: int = setting(16, "channel groups of group normalization")
    axial_attention: bool = setting(False, "axial attention in the coarsest decoder stages")
    attention_stages: int = setting(4, "decoder stages with axial attention")
    attention_heads: int = setting(4, "attention heads at the finest attended stage")
    attention_head_size: int = setting(16, "channels per head at the finest attended stage")
    spatial_transformer: bool = setting(
        False, "a spatial transformer (learned affine, identity at start) before the network"
    )
    spatial_transformer_lr_scale: float | None = setting(
        None, "factor on the learning rate of the transformer's localization network (0.01)"
    )
    size: str | None = setting(None, "MedNeXt's size: S, B, M or L (default B; MedNeXt only)")
    kernel_size: int | None = setting(None, "MedNeXt's kernel size: 3 or 5 (default 3)")

    def __post_init__(self) -> None:
        problems = _value_problems(self.to_dict(), "network variant")
        if problems:
            raise SegflowError("the network variant is not valid", problems)

    @classmethod
    def from_dict(cls, data: Any, where: str = "network variant") -> NetworkVariant:
        """The variant ``data`` (plain settings, as :meth:`to_dict` writes them) describes.

        Missing keys take their defaults. Raises :class:`~segflow.errors.SegflowError` with
        every problem at once: an unknown key (with the closest valid one) or a bad value,
        each named ``<where>.<key>``.
        """
        if not isinstance(data, Mapping):
            raise SegflowError(
                "the network variant is not valid",
                [Problem(where, f"must be a mapping of settings, got {type(data).__name__}")],
            )
        known = [f.name for f in dataclasses.fields(cls)]
        problems = []
        for key in data:
            if key not in known:
                problems.append(Problem(f"{where}.{key}", _unknown("key", key, known)))
        values = {key: value for key, value in data.items() if key in known}
        problems += _value_problems(values, where)
        if problems:
            raise SegflowError("the network variant is not valid", problems)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain data (JSON, YAML, a checkpoint)."""
        return dataclasses.asdict(self)

    @property
    def is_default(self) -> bool:
        """Whether every setting is its default (then any plan's network is built unchanged)."""
        return self == NetworkVariant()

    @property
    def is_zoo(self) -> bool:
        """Whether the network is one of the model zoo's (:mod:`segflow.networks.zoo`)."""
        return self.architecture in ZOO_NAMES

    def encoder_features(self, planned: Sequence[int]) -> tuple[int, ...]:
        """The encoder's features per stage for the ``planned`` ones."""
        return tuple(
            max(f, min(f * self.encoder_scale, self.encoder_max_features)) for f in planned
        )

    def attention_per_stage(self, decoder_stages: int) -> list[tuple[int, int] | None]:
        """Per decoder stage from the bottleneck up, ``(heads, head_size)`` or ``None``.

        The ``attention_stages`` coarsest stages are attended; the finest of them has
        ``attention_heads`` heads of ``attention_head_size``, each coarser one twice both.
        """
        if not self.axial_attention:
            return [None] * decoder_stages
        attended = min(self.attention_stages, decoder_stages)
        specs: list[tuple[int, int] | None] = []
        for i in range(decoder_stages):
            if i < attended:
                doublings = attended - 1 - i
                specs.append(
                    (self.attention_heads << doublings, self.attention_head_size << doublings)
                )
            else:
                specs.append(None)
        return specs

    def layer_ops(self, planned: LayerOps) -> LayerOps:
        """The ``planned`` layer types with this variant's normalization."""
        from torch import nn

        from segflow.networks.blocks import GroupNorm, InstanceNorm2d, InstanceNorm3d

        if self.norm is None or self.norm == _norm_kind(planned.norm_type):
            return planned
        shared = {k: v for k, v in planned.norm_kwargs.items() if k in _SHARED_NORM_KWARGS}
        if self.norm == "group":
            return dataclasses.replace(
                planned, norm_type=GroupNorm, norm_kwargs={**shared, "groups": self.groups}
            )
        norm_types = (
            {2: InstanceNorm2d, 3: InstanceNorm3d}
            if self.norm == "instance"
            else {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
        )
        return dataclasses.replace(planned, norm_type=norm_types[planned.ndim], norm_kwargs=shared)

    def width_problems(self, widths: Iterable[int], where: str) -> list[Problem]:
        """A problem when group normalization's ``groups`` do not divide every width."""
        if self.norm != "group":
            return []
        widths = sorted(set(widths))
        bad = [w for w in widths if w % self.groups]
        if not bad:
            return []
        common = math.gcd(*widths)
        fits = max(d for d in range(1, min(self.groups, common) + 1) if common % d == 0)
        return [
            Problem(
                f"{where}.groups",
                f"{self.groups} groups do not divide the network's width(s) "
                f"{', '.join(map(str, bad))} (widths: {', '.join(map(str, widths))}); "
                f"the largest count up to {self.groups} that fits is {fits}",
            )
        ]


def _norm_kind(norm_type: type[nn.Module]) -> str | None:
    from torch import nn

    if issubclass(norm_type, nn.modules.instancenorm._InstanceNorm):
        return "instance"
    if issubclass(norm_type, nn.modules.batchnorm._BatchNorm):
        return "batch"
    if issubclass(norm_type, nn.GroupNorm):
        return "group"
    return None


def _unknown(kind: str, name: object, valid: Sequence[str], also: str = "") -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (valid: {', '.join(valid)}{also})"


def _value_problems(values: Mapping[str, Any], where: str) -> list[Problem]:
    problems = []
    for key in _POSITIVE_INTEGERS:
        if key in values:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(
                    Problem(f"{where}.{key}", f"must be a positive integer, got {value!r}")
                )
    norm = values.get("norm")
    if norm is not None and (not isinstance(norm, str) or norm not in NORMS):
        problems.append(
            Problem(f"{where}.norm", _unknown("norm", norm, NORMS, "; null: the planned one"))
        )
    scale = values.get("spatial_transformer_lr_scale")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1
    ):
        problems.append(
            Problem(
                f"{where}.spatial_transformer_lr_scale",
                f"must be a number in (0, 1], got {scale!r}",
            )
        )
    for key in ("axial_attention", "spatial_transformer"):
        if key in values and not isinstance(values[key], bool):
            problems.append(
                Problem(f"{where}.{key}", f"must be true or false, got {values[key]!r}")
            )
    architecture = values.get("architecture")
    if architecture is not None and (
        not isinstance(architecture, str) or architecture not in NETWORK_NAMES
    ):
        close = difflib.get_close_matches(str(architecture), NETWORK_NAMES, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(
            Problem(
                f"{where}.architecture",
                f"architecture '{architecture}' is not supported{hint} "
                f"(valid: {', '.join(NETWORK_NAMES)})",
            )
        )
    problems += _mednext_problems(values, where, architecture)
    if architecture in ZOO_NAMES:
        for key, unchanged in _UNET_ONLY.items():
            if key in values and values[key] != unchanged:
                problems.append(
                    Problem(
                        f"{where}.{key}",
                        f"changes the U-Nets of the plans only, not the zoo network "
                        f"'{architecture}' (leave it at {unchanged!r})",
                    )
                )
    return problems


def _mednext_problems(values: Mapping[str, Any], where: str, architecture: Any) -> list[Problem]:
    problems = []
    size, kernel = values.get("size"), values.get("kernel_size")
    if size is not None and size not in MEDNEXT_SIZE_NAMES:
        problems.append(
            Problem(f"{where}.size", _unknown("MedNeXt size", size, MEDNEXT_SIZE_NAMES))
        )
    if kernel is not None and (isinstance(kernel, bool) or kernel not in MEDNEXT_KERNELS):
        problems.append(Problem(f"{where}.kernel_size", f"must be 3 or 5, got {kernel!r}"))
    if architecture != "MedNeXt":
        other = f"'{architecture}'" if architecture else "the plan's network"
        for key in _MEDNEXT_ONLY:
            if values.get(key) is not None:
                problems.append(
                    Problem(
                        f"{where}.{key}",
                        f"sets MedNeXt's {key.replace('_', ' ')} only, not {other} (leave it null)",
                    )
                )
    return problems


BRATS2021_VARIANTS: dict[str, NetworkVariant] = {
    "BL": NetworkVariant(),
    "BL+L": NetworkVariant(encoder_scale=2),
    "BL+GN": NetworkVariant(norm="group"),
    "BL+AA": NetworkVariant(axial_attention=True),
    "BL+L+GN": NetworkVariant(encoder_scale=2, norm="group"),
}
"""The networks of the BraTS 2021 winner's ablation table (arXiv 2112.04653), by its names."""
