"""Building the network a configuration plans (with a variant): :func:`build_network`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segflow.errors import Problem, SegflowError
from segflow.networks.blocks import resolve_layer_ops
from segflow.networks.registry import NETWORKS, unknown_network
from segflow.networks.variants import NetworkVariant
from segflow.planning.plans import ConfigurationPlan, NetworkPlan

__all__ = ["build_network", "memory_format_for"]

_STAGE_KEYS = ("features_per_stage", "kernel_sizes", "strides", "blocks_per_stage_encoder")


def _read(network: NetworkPlan, where: str, problems: list[Problem]) -> dict[str, Any] | None:
    """Every property of ``network``, or ``None`` (adding a problem per missing/malformed key)."""
    values = {}
    missing = []
    for name in (
        "architecture",
        "n_stages",
        *_STAGE_KEYS,
        "n_conv_per_stage_decoder",
        "conv_op",
        "conv_bias",
        "norm_op",
        "norm_op_kwargs",
        "dropout_op",
        "nonlin",
        "nonlin_kwargs",
    ):
        try:
            values[name] = getattr(network, name)
        except (KeyError, TypeError, ValueError) as err:
            missing.append(Problem(f"{where}.{name}", f"missing or malformed ({err!r})"))
    problems += missing
    return None if missing else values


def _topology_problems(values: dict[str, Any], ndim: int | None, where: str) -> list[Problem]:
    problems = []
    n_stages = values["n_stages"]
    if n_stages < 2:
        problems.append(
            Problem(f"{where}.n_stages", f"a U-Net needs at least 2 stages, got {n_stages}")
        )
    for key in _STAGE_KEYS:
        if len(values[key]) != n_stages:
            problems.append(
                Problem(
                    f"{where}.{key}",
                    f"needs one entry per stage ({n_stages}), got {len(values[key])}",
                )
            )
    decoder = values["n_conv_per_stage_decoder"]
    if len(decoder) != n_stages - 1:
        problems.append(
            Problem(
                f"{where}.n_conv_per_stage_decoder",
                f"needs one entry per decoder stage ({n_stages - 1}), got {len(decoder)}",
            )
        )
    if ndim is not None:
        for key in ("kernel_sizes", "strides"):
            for i, entry in enumerate(values[key]):
                if len(entry) != ndim:
                    problems.append(
                        Problem(
                            f"{where}.{key}[{i}]",
                            f"needs {ndim} values for {values['conv_op']}, got {list(entry)}",
                        )
                    )
    return problems


def build_network(
    configuration: ConfigurationPlan,
    num_input_channels: int,
    num_outputs: int,
    deep_supervision: bool = True,
    variant: NetworkVariant | None = None,
) -> nn.Module:
    """The U-Net a configuration plans, freshly initialized as nnU-Net initializes it, or the
    network of the model zoo a variant names, sized from the configuration.

    Args:
        configuration: the configuration; its ``network`` names the architecture and layers.
        num_input_channels: image channels (a cascade stage adds one per foreground class
            for the previous stage's segmentation).
        num_outputs: output channels: classes including background, or regions.
        deep_supervision: return one output per decoder stage, finest first (training), or only
            the finest (inference). Switch later with ``network.set_deep_supervision(flag)``.
        variant: changes to the planned network (architecture, encoder width, normalization,
            axial attention, a spatial transformer in front); ``None`` or the default variant:
            the network as planned.

    Returns:
        A :class:`~segflow.networks.unet.UNet` (a
        :class:`~segflow.networks.zoo.ZooNetwork` for a zoo architecture; either behind a
        :class:`~segflow.networks.spatial_transformer.SpatialTransformer` when the variant
        asks for one) on the default device, in float32. Each has ``set_deep_supervision``
        and ``num_deep_supervision_outputs`` (1 for the zoo but MedNeXt and SegResNetDS).

    Raises:
        SegflowError: every problem with the network plan and the variant at once: an unknown
            architecture or layer name, lists whose lengths do not match ``n_stages``, kernel
            sizes or strides of the wrong dimensionality, channel counts below one, group
            normalization whose groups do not divide a width, or a plan a zoo network cannot
            be sized from.
    """
    network = _build_planned_or_zoo(
        configuration, num_input_channels, num_outputs, deep_supervision, variant
    )
    if variant is not None and variant.spatial_transformer:
        from segflow.networks.spatial_transformer import SpatialTransformer

        network = SpatialTransformer(
            network,
            len(configuration.patch_size),
            num_input_channels,
            lr_scale=variant.spatial_transformer_lr_scale,
        )
    return network


def _build_planned_or_zoo(
    configuration: ConfigurationPlan,
    num_input_channels: int,
    num_outputs: int,
    deep_supervision: bool,
    variant: NetworkVariant | None,
) -> nn.Module:
    where = f"configuration '{configuration.name}': network"
    problems: list[Problem] = []
    if variant is None:
        variant = NetworkVariant()
    elif not isinstance(variant, NetworkVariant):
        problems.append(
            Problem("variant", f"must be a NetworkVariant, got {type(variant).__name__}")
        )
        variant = NetworkVariant()
    for name, value in (("num_input_channels", num_input_channels), ("num_outputs", num_outputs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(Problem(name, f"must be a positive integer, got {value!r}"))
    values = _read(configuration.network, where, problems)
    if values is None:
        raise SegflowError("the network cannot be built", problems)
    name = variant.architecture or values["architecture"]
    if variant.is_zoo:
        return _build_zoo(name, configuration, values, num_input_channels, num_outputs,
                          deep_supervision, where, problems, variant)  # fmt: skip
    builder = NETWORKS.get(name)
    if builder is None:
        key = "network variant.architecture" if variant.architecture else f"{where}.architecture"
        problems.append(Problem(key, unknown_network(name)))
    ops, op_problems = resolve_layer_ops(configuration.network, where)
    problems += op_problems
    ndim = ops.ndim if ops is not None else None
    problems += _topology_problems(values, ndim, where)
    patch_ndim = len(configuration.patch_size)
    if ndim is not None and patch_ndim != ndim:
        problems.append(
            Problem(
                f"{where}.conv_op",
                f"'{values['conv_op']}' is {ndim}D but the patch size has {patch_ndim} axes",
            )
        )
    if problems or builder is None or ops is None:
        raise SegflowError("the network cannot be built", problems)
    decoder_features = values["features_per_stage"]
    encoder_features = variant.encoder_features(decoder_features)
    problems += variant.width_problems(
        (*encoder_features, *decoder_features[:-1]), "network variant"
    )
    if problems:
        raise SegflowError("the network cannot be built", problems)
    return builder(
        variant.layer_ops(ops),
        num_input_channels,
        num_outputs,
        encoder_features,
        values["kernel_sizes"],
        values["strides"],
        values["blocks_per_stage_encoder"],
        values["n_conv_per_stage_decoder"],
        deep_supervision=deep_supervision,
        decoder_features=decoder_features,
        attention=variant.attention_per_stage(values["n_stages"] - 1),
    )


def _build_zoo(
    name: str,
    configuration: ConfigurationPlan,
    values: dict[str, Any],
    num_input_channels: int,
    num_outputs: int,
    deep_supervision: bool,
    where: str,
    problems: list[Problem],
    variant: NetworkVariant,
) -> nn.Module:
    """The zoo network ``name`` sized from the configuration (its patch, the plans' widths
    and strides) and the variant (MedNeXt's size and kernel)."""
    from segflow.networks.zoo import ZooPlan, build_zoo_network

    patch = tuple(int(p) for p in configuration.patch_size)
    problems += _topology_problems(values, len(patch), where)
    if problems:
        raise SegflowError("the network cannot be built", problems)
    plan = ZooPlan(
        patch_size=patch,
        in_channels=num_input_channels,
        num_outputs=num_outputs,
        features_per_stage=tuple(int(f) for f in values["features_per_stage"]),
        strides=tuple(tuple(int(v) for v in s) for s in values["strides"]),
        size=variant.size,
        kernel_size=variant.kernel_size,
    )
    return build_zoo_network(name, plan, deep_supervision)


def memory_format_for(
    ndim: int, device: torch.device | str, channels_last: bool | str = "auto"
) -> torch.memory_format:
    """The memory format to run a network of ``ndim`` spatial axes in on ``device``.

    ``channels_last`` is True (channels-last), False (channels-first) or ``"auto"``:
    channels-last for 3D networks on the CPU, channels-first otherwise. On the CPU, oneDNN's
    3D convolutions read and write channels-last tensors as they are, whereas channels-first
    ones are reordered into its blocked layout and back around every convolution; together
    with the instance normalization of :class:`~segflow.networks.blocks.InstanceNorm3d`,
    which keeps the layout, the forward and backward pass of the Hippocampus 3d_fullres
    network takes 28 % less time (``benchmarks/network_speed.py``; whole training epochs 19 %
    less). 2D networks gain nothing on the CPU, and on CUDA nnU-Net's channels-first layout
    is kept.
    """
    if channels_last == "auto":
        channels_last = ndim == 3 and torch.device(device).type == "cpu"
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if ndim == 3 else torch.channels_last
