"""nnU-Net v2's plans (``nnUNetPlans.json``, a results folder's ``plans.json``) as segflow's
plans, and back.

segflow's plans reproduce nnU-Net's decisions field by field under the same names where
nnU-Net has one (``benchmarks/compare_plans_nnunet.py`` proves the correspondence on real and
synthetic datasets). The conversion reads every field; nothing is guessed. A field segflow does
not know, a component segflow cannot reproduce (an image reader other than SimpleITK, a
preprocessor, resampling function, network class, layer type or label manager of its own) or
a configuration segflow has no name for is refused, every one named at once.

What nnU-Net's plans do not record is filled with what segflow's plans mean by it:
``preset`` (provenance: ``default`` for the plain U-Net, ``resenc_m``/``_l``/``_xl`` from the
residual-encoder planners' names), ``gpu_memory_target_gb`` (nnU-Net's default 8 GB, or the
residual-encoder presets' targets), ``seed`` 0 (planning is deterministic) and ``planner``
(nnU-Net's planner and plans names).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import segflow
from segflow.errors import Problem, SegflowError
from segflow.planning.plans import Plans

__all__ = [
    "NETWORK_CLASSES",
    "from_nnunet_plans",
    "is_nnunet_plans",
    "resolved_configuration",
    "to_nnunet_plans",
]

logger = logging.getLogger(__name__)

#: nnU-Net's network classes segflow builds, by their import path in the plans.
NETWORK_CLASSES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": "PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": "ResidualEncoderUNet",
}
#: The layer types segflow's plans name, by nnU-Net's import paths (both spellings occur).
_LAYERS = {
    "conv_op": ("Conv2d", "Conv3d"),
    "norm_op": ("InstanceNorm2d", "InstanceNorm3d"),
    "nonlin": ("LeakyReLU", "ReLU", "ELU", "GELU"),
}
_LAYER_MODULES = {
    "Conv2d": "torch.nn.modules.conv",
    "Conv3d": "torch.nn.modules.conv",
    "InstanceNorm2d": "torch.nn.modules.instancenorm",
    "InstanceNorm3d": "torch.nn.modules.instancenorm",
    "LeakyReLU": "torch.nn.modules.activation",
    "ReLU": "torch.nn.modules.activation",
    "ELU": "torch.nn.modules.activation",
    "GELU": "torch.nn.modules.activation",
}
_REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")
TOP_LEVEL_KEYS = frozenset(
    {
        "dataset_name",
        "plans_name",
        "original_median_spacing_after_transp",
        "original_median_shape_after_transp",
        "image_reader_writer",
        "transpose_forward",
        "transpose_backward",
        "configurations",
        "experiment_planner_used",
        "label_manager",
        "foreground_intensity_properties_per_channel",
    }
)
CONFIGURATION_KEYS = frozenset(
    {
        "data_identifier",
        "preprocessor_name",
        "batch_size",
        "patch_size",
        "median_image_size_in_voxels",
        "spacing",
        "normalization_schemes",
        "use_mask_for_norm",
        "resampling_fn_data",
        "resampling_fn_seg",
        "resampling_fn_probabilities",
        "resampling_fn_data_kwargs",
        "resampling_fn_seg_kwargs",
        "resampling_fn_probabilities_kwargs",
        "architecture",
        "batch_dice",
        "previous_stage",
        "next_stage",
        "inherits_from",
    }
)
ARCH_KWARGS = frozenset(
    {
        "n_stages",
        "features_per_stage",
        "conv_op",
        "kernel_sizes",
        "strides",
        "n_conv_per_stage",
        "n_blocks_per_stage",
        "n_conv_per_stage_decoder",
        "conv_bias",
        "norm_op",
        "norm_op_kwargs",
        "dropout_op",
        "dropout_op_kwargs",
        "nonlin",
        "nonlin_kwargs",
    }
)
#: The values segflow reproduces, per plans field.
KNOWN_COMPONENTS = {
    "image_reader_writer": ("SimpleITKIO",),
    "label_manager": ("LabelManager",),
    "preprocessor_name": ("DefaultPreprocessor",),
    "resampling_fn_data": ("resample_data_or_seg_to_shape",),
    "resampling_fn_seg": ("resample_data_or_seg_to_shape",),
    "resampling_fn_probabilities": ("resample_data_or_seg_to_shape",),
}
CONFIGURATION_NAMES = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
_RESAMPLING_KWARGS = ("is_seg", "order", "order_z", "force_separate_z")
#: Residual-encoder presets by the planner's name (nnU-Net's ``nnUNetPlannerResEnc<M|L|XL>``).
_RESENC_PRESETS = (("XL", "resenc_xl", 40.0), ("L", "resenc_l", 24.0), ("M", "resenc_m", 8.0))


def resolved_configuration(
    configurations: Mapping[str, Any], name: str, where: str
) -> dict[str, Any]:
    """The configuration ``name`` with its ``inherits_from`` chain merged in.

    Raises:
        SegflowError: the configuration or a parent does not exist, or the chain is a loop.
    """
    chain, current = [], name
    while True:
        if current not in configurations or not isinstance(configurations[current], Mapping):
            valid = ", ".join(configurations)
            raise SegflowError(
                f"configuration '{current}' does not exist in the nnU-Net plans; valid: {valid}",
                [Problem(where, f"configurations.{name}")],
            )
        if current in chain:
            raise SegflowError(
                "nnU-Net plans' inherits_from chain is a loop",
                [Problem(where, " -> ".join([*chain, current]))],
            )
        chain.append(current)
        parent = configurations[current].get("inherits_from")
        if parent is None:
            break
        current = parent
    merged: dict[str, Any] = {}
    for link in reversed(chain):
        merged.update(copy.deepcopy(dict(configurations[link])))
    merged.pop("inherits_from", None)
    return merged


def _short_name(path: Any, key: str, where: str, problems: list[Problem]) -> str | None:
    """``torch.nn.modules.conv.Conv3d`` -> ``Conv3d`` for the layers segflow builds."""
    if not isinstance(path, str):
        problems.append(Problem(where, f"{key} must be a class path, found {path!r}"))
        return None
    module, _, short = path.rpartition(".")
    if short in _LAYERS[key] and module in ("torch.nn", _LAYER_MODULES[short]):
        return short
    problems.append(
        Problem(
            where,
            f"{key} '{path}' is not a layer segflow builds "
            f"(valid: {', '.join('torch.nn.' + n for n in _LAYERS[key])})",
        )
    )
    return None


def _network(architecture: Any, where: str, problems: list[Problem]) -> dict[str, Any] | None:
    """segflow's ``network`` entry from nnU-Net's ``architecture``."""
    if not isinstance(architecture, Mapping):
        problems.append(Problem(where, "'architecture' must be an object"))
        return None
    unknown = sorted(
        set(architecture) - {"network_class_name", "arch_kwargs", "_kw_requires_import"}
    )
    problems += [Problem(f"{where}.{k}", "is not a field segflow knows; refused") for k in unknown]
    class_name = architecture.get("network_class_name")
    name = NETWORK_CLASSES.get(class_name)
    if name is None:
        problems.append(
            Problem(
                f"{where}.network_class_name",
                f"network class '{class_name}' is not one "
                f"segflow builds (valid: {', '.join(NETWORK_CLASSES)})",
            )
        )
    requires = architecture.get("_kw_requires_import", list(_REQUIRES_IMPORT))
    if sorted(requires) != sorted(_REQUIRES_IMPORT):
        problems.append(
            Problem(
                f"{where}._kw_requires_import",
                f"{requires!r}: segflow knows {list(_REQUIRES_IMPORT)}",
            )
        )
    kwargs = architecture.get("arch_kwargs")
    if not isinstance(kwargs, Mapping):
        problems.append(Problem(f"{where}.arch_kwargs", "must be an object"))
        return None
    here = f"{where}.arch_kwargs"
    problems += [
        Problem(f"{here}.{k}", "is not a network argument segflow knows; refused")
        for k in sorted(set(kwargs) - ARCH_KWARGS)
    ]
    blocks = "n_conv_per_stage" if name == "PlainConvUNet" else "n_blocks_per_stage"
    required = (
        "n_stages",
        "features_per_stage",
        "conv_op",
        "kernel_sizes",
        "strides",
        blocks,
        "n_conv_per_stage_decoder",
        "conv_bias",
        "norm_op",
        "norm_op_kwargs",
        "nonlin",
        "nonlin_kwargs",
    )
    missing = [k for k in required if k not in kwargs]
    problems += [Problem(f"{here}.{k}", "is missing") for k in missing]
    if kwargs.get("dropout_op") is not None:
        problems.append(
            Problem(
                f"{here}.dropout_op", f"'{kwargs['dropout_op']}': segflow's U-Nets have no dropout"
            )
        )
    if name is None or missing:
        return None
    layers = {key: _short_name(kwargs[key], key, here, problems) for key in _LAYERS}
    return {
        "architecture": name,
        "n_stages": kwargs["n_stages"],
        "features_per_stage": list(kwargs["features_per_stage"]),
        "kernel_sizes": [list(k) for k in kwargs["kernel_sizes"]],
        "strides": [list(s) for s in kwargs["strides"]],
        blocks: list(kwargs[blocks]),
        "n_conv_per_stage_decoder": list(kwargs["n_conv_per_stage_decoder"]),
        "conv_op": layers["conv_op"],
        "conv_bias": kwargs["conv_bias"],
        "norm_op": layers["norm_op"],
        "norm_op_kwargs": dict(kwargs["norm_op_kwargs"] or {}),
        "dropout_op": None,
        "nonlin": layers["nonlin"],
        "nonlin_kwargs": dict(kwargs["nonlin_kwargs"] or {}),
    }


def _resampling(conf: Mapping[str, Any], step: str, where: str, problems: list[Problem]):
    kwargs = conf.get(f"resampling_fn_{step}_kwargs")
    if not isinstance(kwargs, Mapping):
        problems.append(Problem(f"{where}.resampling_fn_{step}_kwargs", "must be an object"))
        return None
    unknown = sorted(set(kwargs) - set(_RESAMPLING_KWARGS))
    problems += [
        Problem(f"{where}.resampling_fn_{step}_kwargs.{k}", "is not an argument segflow knows")
        for k in unknown
    ]
    missing = [k for k in ("order", "order_z", "force_separate_z") if k not in kwargs]
    problems += [Problem(f"{where}.resampling_fn_{step}_kwargs.{k}", "is missing") for k in missing]
    if missing:
        return None
    return {k: kwargs[k] for k in ("order", "order_z", "force_separate_z")}


def _configuration(conf: dict[str, Any], where: str, problems: list[Problem]) -> dict | None:
    """segflow's configuration entry from a resolved nnU-Net configuration."""
    problems += [
        Problem(f"{where}.{k}", "is not a field segflow knows; refused")
        for k in sorted(set(conf) - CONFIGURATION_KEYS)
    ]
    for key, valid in KNOWN_COMPONENTS.items():
        if key in conf and conf[key] not in valid:
            problems.append(
                Problem(
                    f"{where}.{key}",
                    f"'{conf[key]}' is not one segflow reproduces (valid: {', '.join(valid)})",
                )
            )
    required = (
        "data_identifier",
        "batch_size",
        "patch_size",
        "median_image_size_in_voxels",
        "spacing",
        "normalization_schemes",
        "use_mask_for_norm",
        "architecture",
    )
    missing = [k for k in required if k not in conf]
    problems += [Problem(f"{where}.{k}", "is missing") for k in missing]
    network = _network(conf.get("architecture"), f"{where}.architecture", problems)
    resampling = {
        step: _resampling(conf, name, where, problems)
        for step, name in (("data", "data"), ("seg", "seg"), ("probabilities", "probabilities"))
    }
    if missing or network is None or None in resampling.values():
        return None
    out = {
        "data_identifier": conf["data_identifier"],
        "spacing": list(conf["spacing"]),
        "patch_size": list(conf["patch_size"]),
        "batch_size": conf["batch_size"],
        "median_image_size_in_voxels": list(conf["median_image_size_in_voxels"]),
        "normalization_schemes": list(conf["normalization_schemes"]),
        "use_mask_for_norm": list(conf["use_mask_for_norm"]),
        "resampling": resampling,
        # nnU-Net's trainer decides batch Dice from the plans and defaults to it for 3D.
        "batch_dice": bool(conf.get("batch_dice", True)),
        "network": network,
    }
    for key in ("previous_stage", "next_stage"):
        if conf.get(key) is not None:
            out[key] = conf[key]
    return out


def _preset(planner: str, architecture: str) -> tuple[str, float]:
    if architecture == "PlainConvUNet":
        return "default", 8.0
    for suffix, preset, memory in _RESENC_PRESETS:
        if planner.endswith(f"ResEnc{suffix}") or f"ResEncUNet{suffix}Plans" in planner:
            return preset, memory
    return "resenc_m", 8.0


def from_nnunet_plans(
    plans: Mapping[str, Any],
    configurations: Sequence[str] | None = None,
    where: str = "plans.json",
) -> dict[str, Any]:
    """segflow's plans (validated against its schema) from nnU-Net v2's plans.

    Args:
        plans: nnU-Net's parsed plans.
        configurations: the configurations to convert (default: all); a cascade stage
            brings its previous stage along.
        where: the plans' file, for messages.

    Raises:
        SegflowError: every field, component or configuration segflow cannot take, named.
    """
    problems: list[Problem] = []
    if not isinstance(plans, Mapping):
        raise SegflowError("not nnU-Net plans", [Problem(where, "expected a JSON object")])
    problems += [
        Problem(f"{where}: {k}", "is not a plans field segflow knows; refused")
        for k in sorted(set(plans) - TOP_LEVEL_KEYS)
    ]
    for key in ("image_reader_writer", "label_manager"):
        value = plans.get(key, KNOWN_COMPONENTS[key][0])
        if value not in KNOWN_COMPONENTS[key]:
            problems.append(
                Problem(
                    f"{where}: {key}",
                    f"'{value}' is not one segflow reproduces "
                    f"(valid: {', '.join(KNOWN_COMPONENTS[key])})",
                )
            )
    raw = plans.get("configurations")
    if not isinstance(raw, Mapping) or not raw:
        raise SegflowError("not nnU-Net plans", [Problem(where, "has no 'configurations'")])
    wanted = list(configurations) if configurations is not None else list(raw)
    for name in list(wanted):
        previous = (
            raw.get(name, {}).get("previous_stage") if isinstance(raw.get(name), Mapping) else None
        )
        if previous is not None and previous not in wanted:
            wanted.append(previous)
    converted: dict[str, Any] = {}
    for name in wanted:
        here = f"{where}: configurations.{name}"
        if name not in CONFIGURATION_NAMES:
            problems.append(
                Problem(
                    here,
                    f"configuration '{name}' has no segflow name "
                    f"(valid: {', '.join(CONFIGURATION_NAMES)})",
                )
            )
            continue
        try:
            conf = resolved_configuration(raw, name, where)
        except SegflowError as err:
            problems += err.problems or [Problem(here, err.summary)]
            continue
        entry = _configuration(conf, here, problems)
        if entry is not None:
            if entry.get("next_stage") not in (None, *wanted):
                del entry["next_stage"]  # not converted: nothing predicts after it here
            converted[name] = entry
    top = (
        "dataset_name",
        "transpose_forward",
        "transpose_backward",
        "original_median_spacing_after_transp",
        "original_median_shape_after_transp",
        "foreground_intensity_properties_per_channel",
    )
    problems += [Problem(f"{where}: {k}", "is missing") for k in top if k not in plans]
    if problems:
        raise SegflowError(f"cannot convert the nnU-Net plans {where}", problems)
    planner = str(plans.get("experiment_planner_used", "ExperimentPlanner"))
    architecture = next(iter(converted.values()))["network"]["architecture"]
    preset, memory = _preset(f"{planner} {plans.get('plans_name', '')}", architecture)
    out = {
        "segflow_version": segflow.__version__,
        "dataset_name": plans["dataset_name"],
        "preset": preset,
        "gpu_memory_target_gb": memory,
        "seed": 0,
        "planner": {
            "name": planner,
            "plans_name": str(plans.get("plans_name", "nnUNetPlans")),
            "architecture": architecture,
        },
        **{k: copy.deepcopy(plans[k]) for k in top if k != "dataset_name"},
        "configurations": converted,
    }
    Plans.from_dict(out, f"{where} (converted)")
    return out


def is_nnunet_plans(raw: Any) -> bool:
    """Whether parsed plans are nnU-Net's (its plans name, no segflow version) rather than
    segflow's."""
    return isinstance(raw, Mapping) and "plans_name" in raw and "segflow_version" not in raw


def _class_path(short: str) -> str:
    """The class path nnU-Net's planner writes (its nonlinearity under ``torch.nn``)."""
    module = "torch.nn" if short in _LAYERS["nonlin"] else _LAYER_MODULES[short]
    return f"{module}.{short}"


def to_nnunet_plans(plans: Mapping[str, Any]) -> dict[str, Any]:
    """nnU-Net v2's plans from segflow's (the inverse of :func:`from_nnunet_plans`).

    Raises:
        SegflowError: a configuration's network is not one nnU-Net builds (named).
    """
    problems = []
    configurations = {}
    for name, conf in plans["configurations"].items():
        net = conf["network"]
        if net.get("architecture") not in NETWORK_CLASSES.values():
            problems.append(
                Problem(
                    f"configurations.{name}",
                    f"network '{net.get('architecture')}' is not "
                    "one nnU-Net builds (PlainConvUNet, ResidualEncoderUNet)",
                )
            )
            continue
        blocks = "n_conv_per_stage" if "n_conv_per_stage" in net else "n_blocks_per_stage"
        class_name = next(k for k, v in NETWORK_CLASSES.items() if v == net["architecture"])
        resampling = conf["resampling"]
        configurations[name] = {
            "data_identifier": conf["data_identifier"],
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": conf["batch_size"],
            "patch_size": conf["patch_size"],
            "median_image_size_in_voxels": conf["median_image_size_in_voxels"],
            "spacing": conf["spacing"],
            "normalization_schemes": conf["normalization_schemes"],
            "use_mask_for_norm": conf["use_mask_for_norm"],
            **{
                f"resampling_fn_{step}": "resample_data_or_seg_to_shape"
                for step in ("data", "seg", "probabilities")
            },
            **{
                f"resampling_fn_{step}_kwargs": {"is_seg": step == "seg", **resampling[step]}
                for step in ("data", "seg", "probabilities")
            },
            "architecture": {
                "network_class_name": class_name,
                "arch_kwargs": {
                    "n_stages": net["n_stages"],
                    "features_per_stage": net["features_per_stage"],
                    "conv_op": _class_path(net["conv_op"]),
                    "kernel_sizes": net["kernel_sizes"],
                    "strides": net["strides"],
                    blocks: net[blocks],
                    "n_conv_per_stage_decoder": net["n_conv_per_stage_decoder"],
                    "conv_bias": net["conv_bias"],
                    "norm_op": _class_path(net["norm_op"]),
                    "norm_op_kwargs": net["norm_op_kwargs"],
                    "dropout_op": None,
                    "dropout_op_kwargs": None,
                    "nonlin": _class_path(net["nonlin"]),
                    "nonlin_kwargs": net["nonlin_kwargs"],
                },
                "_kw_requires_import": list(_REQUIRES_IMPORT),
            },
            "batch_dice": conf["batch_dice"],
            **{k: conf[k] for k in ("previous_stage", "next_stage") if conf.get(k)},
        }
    if problems:
        raise SegflowError("these plans cannot be written as nnU-Net plans", problems)
    planner = plans.get("planner", {})
    return {
        "dataset_name": plans["dataset_name"],
        "plans_name": planner.get("plans_name", "nnUNetPlans"),
        "original_median_spacing_after_transp": plans["original_median_spacing_after_transp"],
        "original_median_shape_after_transp": plans["original_median_shape_after_transp"],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": plans["transpose_forward"],
        "transpose_backward": plans["transpose_backward"],
        "configurations": configurations,
        "experiment_planner_used": planner.get("name", "ExperimentPlanner"),
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": plans[
            "foreground_intensity_properties_per_channel"
        ],
    }
