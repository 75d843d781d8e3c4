"""Small network plans for the network tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from segflow.planning import ConfigurationPlan


def _network_section(
    architecture: str = "PlainConvUNet",
    ndim: int = 3,
    features: tuple[int, ...] = (4, 8, 16),
    strides: tuple[tuple[int, ...], ...] | None = None,
    kernel_sizes: tuple[tuple[int, ...], ...] | None = None,
    blocks: tuple[int, ...] | None = None,
    decoder: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """A plans network section (segflow's vocabulary) for a small U-Net."""
    n = len(features)
    strides = strides or ((1,) * ndim, *[(2,) * ndim] * (n - 1))
    kernel_sizes = kernel_sizes or ((3,) * ndim,) * n
    plain = architecture == "PlainConvUNet"
    blocks = blocks or ((2,) * n if plain else (1, 2, 2, 2, 2, 2)[:n])
    decoder = decoder or ((2,) * (n - 1) if plain else (1,) * (n - 1))
    return {
        "architecture": architecture,
        "n_stages": n,
        "features_per_stage": list(features),
        "kernel_sizes": [list(k) for k in kernel_sizes],
        "strides": [list(s) for s in strides],
        "n_conv_per_stage" if plain else "n_blocks_per_stage": list(blocks),
        "n_conv_per_stage_decoder": list(decoder),
        "conv_op": f"Conv{ndim}d",
        "conv_bias": True,
        "norm_op": f"InstanceNorm{ndim}d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "nonlin": "LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def _configuration(network: dict[str, Any], patch_size=None, name: str = "test"):
    """A configuration holding ``network`` (and a patch size of the right dimensionality)."""
    ndim = 2 if network["conv_op"] == "Conv2d" else 3
    patch = list(patch_size or [16] * ndim)
    return ConfigurationPlan(name, {"patch_size": patch, "network": network})


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    # The test networks are tiny: a second thread gains nothing and, on cores shared with
    # other jobs, OpenMP's waiting makes every call several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def network_section():
    """``network_section(architecture, ndim, features, ...)``: a plans network section."""
    return _network_section


@pytest.fixture
def make_configuration():
    """``make_configuration(network, patch_size=None)``: a ConfigurationPlan holding it."""
    return _configuration
