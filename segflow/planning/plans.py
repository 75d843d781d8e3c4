"""Typed, read-only access to ``plans.json``.

Stages never index the raw dictionary: they load the plans once with :func:`load_plans`
(which validates them against the schema) and read typed properties, so a renamed or
missing key fails in one place with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.io.schema import check_against_schema

__all__ = ["ConfigurationPlan", "NetworkPlan", "Plans", "load_plans"]


def _tuple(values: Any) -> tuple[Any, ...]:
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


class NetworkPlan:
    """The U-Net of one configuration."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def architecture(self) -> str:
        """``PlainConvUNet`` or ``ResidualEncoderUNet``."""
        return self._data["architecture"]

    @property
    def n_stages(self) -> int:
        return int(self._data["n_stages"])

    @property
    def features_per_stage(self) -> tuple[int, ...]:
        return tuple(self._data["features_per_stage"])

    @property
    def kernel_sizes(self) -> tuple[tuple[int, ...], ...]:
        return _tuple(self._data["kernel_sizes"])

    @property
    def strides(self) -> tuple[tuple[int, ...], ...]:
        return _tuple(self._data["strides"])

    @property
    def blocks_per_stage_encoder(self) -> tuple[int, ...]:
        """Convolutions (plain U-Net) or residual blocks (ResEnc) per encoder stage."""
        key = "n_conv_per_stage" if "n_conv_per_stage" in self._data else "n_blocks_per_stage"
        return tuple(self._data[key])

    @property
    def n_conv_per_stage_decoder(self) -> tuple[int, ...]:
        return tuple(self._data["n_conv_per_stage_decoder"])

    @property
    def conv_op(self) -> str:
        return self._data["conv_op"]

    @property
    def conv_bias(self) -> bool:
        return bool(self._data["conv_bias"])

    @property
    def norm_op(self) -> str:
        return self._data["norm_op"]

    @property
    def norm_op_kwargs(self) -> dict[str, Any]:
        return dict(self._data["norm_op_kwargs"])

    @property
    def dropout_op(self) -> str | None:
        return self._data["dropout_op"]

    @property
    def nonlin(self) -> str:
        return self._data["nonlin"]

    @property
    def nonlin_kwargs(self) -> dict[str, Any]:
        return dict(self._data["nonlin_kwargs"])

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))


class ConfigurationPlan:
    """One configuration (``2d``, ``3d_fullres``, ...) of the plans."""

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        self._name = name
        self._data = data

    def __repr__(self) -> str:
        return (
            f"ConfigurationPlan({self._name!r}, patch_size={self.patch_size}, "
            f"batch_size={self.batch_size})"
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def data_identifier(self) -> str:
        return self._data["data_identifier"]

    @property
    def ndim(self) -> int:
        """2 for the ``2d`` configuration, 3 otherwise."""
        return len(self._data["patch_size"])

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self._data["spacing"])

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self._data["patch_size"])

    @property
    def batch_size(self) -> int:
        return int(self._data["batch_size"])

    @property
    def median_image_size_in_voxels(self) -> tuple[float, ...]:
        return tuple(self._data["median_image_size_in_voxels"])

    @property
    def normalization_schemes(self) -> tuple[str, ...]:
        return tuple(self._data["normalization_schemes"])

    @property
    def use_mask_for_norm(self) -> tuple[bool, ...]:
        return tuple(self._data["use_mask_for_norm"])

    @property
    def resampling(self) -> dict[str, dict[str, Any]]:
        """``{"data"|"seg"|"probabilities": {"order", "order_z", "force_separate_z"}}``."""
        return {k: dict(v) for k, v in self._data["resampling"].items()}

    @property
    def batch_dice(self) -> bool:
        return bool(self._data["batch_dice"])

    @property
    def network(self) -> NetworkPlan:
        return NetworkPlan(self._data["network"])

    @property
    def previous_stage(self) -> str | None:
        """The cascade stage whose predictions this one takes as input, if any."""
        return self._data.get("previous_stage")

    @property
    def next_stage(self) -> str | None:
        return self._data.get("next_stage")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))


class Plans:
    """The whole plans file.

    Args:
        data: the parsed plans; use :meth:`from_dict` or :func:`load_plans` to validate.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "plans") -> Plans:
        """Validate ``data`` against the plans schema and wrap it.

        Raises:
            SegflowError: listing every way ``data`` breaks the schema.
        """
        check_against_schema(data, "plans", where)
        return cls(data)

    def __repr__(self) -> str:
        return (
            f"Plans({self.dataset_name!r}, preset={self.preset!r}, "
            f"configurations={self.configuration_names})"
        )

    @property
    def dataset_name(self) -> str:
        return self._data["dataset_name"]

    @property
    def segflow_version(self) -> str:
        return self._data["segflow_version"]

    @property
    def seed(self) -> int:
        return int(self._data["seed"])

    @property
    def preset(self) -> str:
        return self._data["preset"]

    @property
    def gpu_memory_target_gb(self) -> float:
        return float(self._data["gpu_memory_target_gb"])

    @property
    def planner(self) -> dict[str, Any]:
        return dict(self._data["planner"])

    @property
    def transpose_forward(self) -> tuple[int, ...]:
        return tuple(self._data["transpose_forward"])

    @property
    def transpose_backward(self) -> tuple[int, ...]:
        return tuple(self._data["transpose_backward"])

    @property
    def original_median_spacing_after_transp(self) -> tuple[float, ...]:
        return tuple(self._data["original_median_spacing_after_transp"])

    @property
    def original_median_shape_after_transp(self) -> tuple[int, ...]:
        return tuple(self._data["original_median_shape_after_transp"])

    @property
    def foreground_intensity_properties_per_channel(self) -> dict[str, dict[str, float]]:
        return {
            k: dict(v) for k, v in self._data["foreground_intensity_properties_per_channel"].items()
        }

    @property
    def configuration_names(self) -> tuple[str, ...]:
        return tuple(self._data["configurations"])

    def configuration(self, name: str) -> ConfigurationPlan:
        """The configuration called ``name``.

        Raises:
            SegflowError: it does not exist; the message lists those that do.
        """
        configurations = self._data["configurations"]
        if name not in configurations:
            valid = ", ".join(configurations)
            raise SegflowError(f"configuration '{name}' does not exist; valid: {valid}")
        return ConfigurationPlan(name, configurations[name])

    def __contains__(self, name: object) -> bool:
        return name in self._data["configurations"]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))


def load_plans(path: str | Path) -> Plans:
    """Read ``plans.json`` and validate it against the schema.

    Raises:
        SegflowError: the file is missing, is not JSON, or breaks the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise SegflowError("plans not found", [Problem(str(path), "file does not exist")])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SegflowError("plans are not valid JSON", [Problem(str(path), str(err))]) from None
    return Plans.from_dict(data, str(path))
