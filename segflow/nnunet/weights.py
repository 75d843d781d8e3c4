"""nnU-Net v2's network weights as segflow's, and back: the one pairing of their names.

segflow's ``PlainConvUNet`` and ``ResidualEncoderUNet`` have nnU-Net's layers in nnU-Net's
order (``benchmarks/compare_networks_nnunet.py`` proves it number by number); only the module
names differ. :data:`NAME_RULES` is that difference, written once: each rule turns a segflow
name into nnU-Net's and back. nnU-Net's state dict also holds every tensor a second time under
an alias (a conv block's ``all_modules.<i>`` beside its ``conv``/``norm``; the decoder's
reference to the encoder, ``decoder.encoder.*``): reading checks that each alias equals its
tensor and drops it; writing adds them back, since nnU-Net loads its weights strictly.

Every name and shape is checked against the network segflow builds from the converted plans:
a tensor without a rule, one the network lacks, one the network has that the weights lack, or
a shape that differs is named, all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from segflow.errors import Problem, SegflowError

__all__ = [
    "NAME_RULES",
    "nnunet_name",
    "nnunet_to_segflow",
    "renamed_nnunet_weights",
    "segflow_name",
    "segflow_to_nnunet",
]

#: ``(segflow pattern, nnU-Net pattern)`` per kind of module; ``{s}``, ``{b}`` ... are indices
#: and ``{rest}`` the parameter's name inside the module.
NAME_RULES: tuple[tuple[str, str], ...] = (
    # Plain encoder: a stage is a Sequential holding one StackedConvBlocks in nnU-Net.
    ("encoder.stages.{s}.{c}.{rest}", "encoder.stages.{s}.0.convs.{c}.{rest}"),
    # Residual encoder: the stem (one conv block) and the stages of residual blocks.
    ("encoder.stem.{rest}", "encoder.stem.convs.0.{rest}"),
    ("encoder.stages.{s}.{b}.conv1.{rest}", "encoder.stages.{s}.blocks.{b}.conv1.{rest}"),
    ("encoder.stages.{s}.{b}.conv2.{rest}", "encoder.stages.{s}.blocks.{b}.conv2.{rest}"),
    ("encoder.stages.{s}.{b}.shortcut.{k}.{rest}", "encoder.stages.{s}.blocks.{b}.skip.{k}.{rest}"),
    # Decoder: merging convolutions, transposed convolutions, segmentation heads.
    ("decoder.stages.{s}.{c}.{rest}", "decoder.stages.{s}.convs.{c}.{rest}"),
    ("decoder.upsamplers.{s}.{rest}", "decoder.transpconvs.{s}.{rest}"),
    ("decoder.heads.{s}.{rest}", "decoder.seg_layers.{s}.{rest}"),
)
# In a conv block, the parameter's name inside the module: conv or norm weight/bias (a
# residual block's shortcut holds one conv block, so its rest is the same).
_REST = r"(?:conv|norm)\.(?:weight|bias)"
_HEAD_REST = r"(?:weight|bias)"


def _regex(pattern: str, rest: str) -> re.Pattern[str]:
    escaped = re.escape(pattern)
    for field in ("s", "c", "b", "k"):
        escaped = escaped.replace(re.escape("{" + field + "}"), rf"(?P<{field}>\d+)")
    return re.compile(escaped.replace(re.escape("{rest}"), f"(?P<rest>{rest})") + "$")


def _rest_of(segflow_pattern: str) -> str:
    return (
        _HEAD_REST if segflow_pattern.startswith(("decoder.upsamplers", "decoder.heads")) else _REST
    )


_TO_NNUNET = [(_regex(ours, _rest_of(ours)), theirs) for ours, theirs in NAME_RULES]
_TO_SEGFLOW = [(_regex(theirs, _rest_of(ours)), ours) for ours, theirs in NAME_RULES]
_ALIAS = re.compile(r"^(?P<block>.+)\.all_modules\.(?P<i>\d+)\.(?P<p>weight|bias)$")
_ENCODER_ALIAS = "decoder.encoder."


def _translate(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for regex, target in rules:
        match = regex.match(name)
        if match:
            return target.format(**match.groupdict())
    return None


def nnunet_name(name: str) -> str | None:
    """nnU-Net's name of segflow's tensor ``name``; None when no rule covers it."""
    return _translate(name, _TO_NNUNET)


def segflow_name(name: str) -> str | None:
    """segflow's name of nnU-Net's tensor ``name``; None when no rule covers it."""
    return _translate(name, _TO_SEGFLOW)


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape)).replace(",)", ")")


def _alias_problems(weights: Mapping[str, torch.Tensor], name: str) -> Problem | None:
    """Why the alias ``name`` is not a second copy of a tensor in ``weights``."""
    if name.startswith(_ENCODER_ALIAS):
        original = name.removeprefix("decoder.")
        if original in weights and torch.equal(weights[original], weights[name]):
            return None
        return Problem(name, f"differs from {original}, which it should repeat")
    match = _ALIAS.match(name)
    assert match is not None
    block, p = match["block"], match["p"]
    if any(
        f"{block}.{layer}.{p}" in weights
        and weights[f"{block}.{layer}.{p}"].shape == weights[name].shape
        and torch.equal(weights[f"{block}.{layer}.{p}"], weights[name])
        for layer in ("conv", "norm")
    ):
        return None
    return Problem(name, f"repeats neither {block}.conv.{p} nor {block}.norm.{p}")


def renamed_nnunet_weights(
    weights: Mapping[str, torch.Tensor], where: str = "nnU-Net weights"
) -> tuple[dict[str, torch.Tensor], list[Problem]]:
    """nnU-Net's tensors under segflow's names, its aliases checked and dropped; a problem
    for each alias that is not a copy and each tensor no rule covers."""
    problems: list[Problem] = []
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.startswith(_ENCODER_ALIAS) or _ALIAS.match(name):
            problem = _alias_problems(weights, name)
            if problem is not None:
                problems.append(Problem(f"{where}: {problem.where}", problem.message))
            continue
        ours = segflow_name(name)
        if ours is None:
            problems.append(Problem(f"{where}: {name}", "has no counterpart in segflow's U-Nets"))
        else:
            out[ours] = tensor
    return out, problems


def nnunet_to_segflow(
    weights: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    where: str = "nnU-Net weights",
) -> dict[str, torch.Tensor]:
    """segflow's state dict from nnU-Net's, every name and shape checked.

    Args:
        weights: nnU-Net's ``network_weights``.
        expected: the state dict of the segflow network they go into (names and shapes).
        where: the file, for messages.

    Raises:
        SegflowError: every nnU-Net tensor without a segflow name or with another shape, every
            alias that is not a copy, and every tensor of the segflow network left without
            weights.
    """
    renamed, problems = renamed_nnunet_weights(weights, where)
    theirs = {segflow_name(n): n for n in weights}
    out: dict[str, torch.Tensor] = {}
    for ours, tensor in renamed.items():
        if ours not in expected:
            problems.append(
                Problem(f"{where}: {theirs[ours]}", f"would be {ours}, which this network lacks")
            )
        elif expected[ours].shape != tensor.shape:
            problems.append(
                Problem(
                    f"{where}: {theirs[ours]}",
                    f"shape {_shape(tensor)}, the network's {ours} {_shape(expected[ours])}",
                )
            )
        else:
            out[ours] = tensor
    for name in expected:
        if name not in renamed:
            problems.append(Problem(f"{where}: {name}", "the network's tensor has no weights"))
    if problems:
        raise SegflowError(
            f"the nnU-Net weights do not fit the network ({len(problems)} problems)", problems
        )
    return out


def segflow_to_nnunet(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nnU-Net's state dict (aliases included) from segflow's.

    Raises:
        SegflowError: a tensor no rule covers (a network nnU-Net does not build), named.
    """
    problems = []
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        theirs = nnunet_name(name)
        if theirs is None:
            problems.append(Problem(name, "has no counterpart in nnU-Net's U-Nets"))
            continue
        out[theirs] = tensor
    if problems:
        raise SegflowError("these weights cannot be written as nnU-Net's", problems)
    aliases: dict[str, torch.Tensor] = {}
    for name, tensor in out.items():
        block, _, rest = name.rpartition(".")
        block, _, layer = block.rpartition(".")
        if layer in ("conv", "norm") and not name.startswith("decoder.seg_layers"):
            aliases[f"{block}.all_modules.{0 if layer == 'conv' else 1}.{rest}"] = tensor
    out.update(aliases)
    out.update({f"decoder.{k}": v for k, v in out.items() if k.startswith("encoder.")})
    return out
