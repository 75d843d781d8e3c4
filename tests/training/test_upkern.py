"""UpKern (MedNeXt, Roy et al. 2023): a kernel-3 MedNeXt's checkpoint starts a kernel-5 one,
its depthwise kernels interpolated, every other layer copied, each resized layer named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from segflow.config import ConfigError, check_config, load_config_schema
from segflow.errors import SegflowError
from segflow.networks import NetworkVariant, build_network
from segflow.training.checkpoint import save_checkpoint
from segflow.training.pretrained import load_pretrained_weights, resizable_kernel
from segflow.training.settings import TrainingSettings
from tests.networks.conftest import _configuration, _network_section

pytest.importorskip("monai")

SCHEMA = load_config_schema(
    Path(__file__).parents[2] / "workflow" / "schemas" / "config.schema.yaml"
)


def _mednext(ndim: int, kernel: int, size: str = "S") -> nn.Module:
    network = _network_section(ndim=ndim, features=(8, 16, 32))
    conf = _configuration(network, patch_size=[16] * ndim, name="upkern")
    variant = NetworkVariant(architecture="MedNeXt", size=size, kernel_size=kernel)
    return build_network(conf, 1, 3, True, variant)


def _k3_checkpoint(tmp_path, ndim: int = 3) -> tuple[nn.Module, str]:
    torch.manual_seed(1)
    net3 = _mednext(ndim, 3)
    state = {"network": net3.state_dict(), "num_input_channels": 1}
    return net3, str(save_checkpoint(tmp_path / "k3.pt", state))


def _depthwise(net: nn.Module) -> set[str]:
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return {
        f"{name}.weight"
        for name, m in net.named_modules()
        if isinstance(m, convs) and m.groups > 1 and m.groups == m.in_channels
    }


def test_a_k3_checkpoint_starts_a_k5_network_with_interpolated_kernels(tmp_path):
    net3, path = _k3_checkpoint(tmp_path)
    net5 = _mednext(3, 5)
    started = load_pretrained_weights(net5, path, 1, resample_kernels=True)
    own3, own5 = net3.state_dict(), net5.state_dict()
    resized = {name: (before, after) for name, before, after in started["resized"]}
    # Exactly the depthwise kernels were resized, 3x3x3 to 5x5x5, channels kept.
    assert set(resized) == _depthwise(net5) and len(resized) == 14
    for before, after in resized.values():
        assert before[2:] == [3, 3, 3] and after[2:] == [5, 5, 5] and before[:2] == after[:2]
    name = sorted(resized)[0]
    k3, k5 = own3[name], own5[name]
    # Linear interpolation, corners not aligned, 3 to 5 taps: tap i of 5 reads position
    # (i + 0.5) * 3 / 5 - 0.5 of 3 (clamped): taps 0, 2, 4 are the corners and the centre...
    assert torch.equal(k5[..., 2, 2, 2], k3[..., 1, 1, 1])
    assert torch.equal(k5[..., 0, 0, 0], k3[..., 0, 0, 0])
    assert torch.equal(k5[..., 4, 4, 4], k3[..., 2, 2, 2])
    # ... tap 1 lies 0.4 of the way from the first tap to the centre.
    expected = 0.6 * k3[..., 0, 1, 1] + 0.4 * k3[..., 1, 1, 1]
    torch.testing.assert_close(k5[..., 1, 2, 2], expected)
    # Every other layer but the heads is a copy.
    heads = net5.head_prefixes
    for key, tensor in own5.items():
        if key not in resized and not key.startswith(heads):
            assert torch.equal(tensor, own3[key]), key
    # The k5 network runs with the loaded weights.
    net5.eval()
    with torch.no_grad():
        out = net5(torch.randn(1, 1, 16, 16, 16))
    assert out[0].shape == (1, 3, 16, 16, 16) and torch.isfinite(out[0]).all()


def test_in_2d_the_kernels_are_interpolated_bilinearly(tmp_path):
    net3, path = _k3_checkpoint(tmp_path, ndim=2)
    net5 = _mednext(2, 5)
    started = load_pretrained_weights(net5, path, 1, resample_kernels=True)
    assert {r[0] for r in started["resized"]} == _depthwise(net5)
    name = started["resized"][0][0]
    k3, k5 = net3.state_dict()[name], net5.state_dict()[name]
    assert torch.equal(k5[..., 2, 2], k3[..., 1, 1]) and torch.equal(k5[..., 4, 0], k3[..., 2, 0])


def test_without_resampling_the_k3_kernels_are_refused_naming_each(tmp_path):
    _, path = _k3_checkpoint(tmp_path)
    net5 = _mednext(3, 5)
    with pytest.raises(SegflowError) as err:
        load_pretrained_weights(net5, path, 1)
    problems = [str(p) for p in err.value.problems]
    assert len(problems) == 15  # the 14 depthwise kernels and the hint
    assert "stem" not in " ".join(problems)  # the stem is a 1x1x1 convolution: it fits
    assert any(
        p.endswith("pretrained (8, 1, 3, 3, 3), this network (8, 1, 5, 5, 5)") for p in problems
    )


def test_resampling_does_not_hide_other_mismatches(tmp_path):
    _, path = _k3_checkpoint(tmp_path)
    other = _mednext(3, 5, size="B")  # other expansion ratios: other channel counts
    with pytest.raises(SegflowError) as err:
        load_pretrained_weights(other, path, 1, resample_kernels=True)
    problems = [str(p) for p in err.value.problems]
    assert (
        "network.enc_stages.1.0.conv2.weight: pretrained (32, 16, 1, 1, 1), "
        "this network (48, 16, 1, 1, 1)"
    ) in problems
    # The kernels it can resize are not among the problems.
    assert not any(p.startswith("network.enc_stages.0.0.conv1.weight") for p in problems)


def test_resizable_kernel_takes_convolution_kernels_of_equal_channels_only():
    k3 = torch.zeros(8, 1, 3, 3, 3)
    assert resizable_kernel(k3, torch.zeros(8, 1, 5, 5, 5))
    assert not resizable_kernel(k3, torch.zeros(8, 1, 3, 3, 3))  # nothing to resize
    assert not resizable_kernel(k3, torch.zeros(16, 1, 5, 5, 5))  # other channels
    assert not resizable_kernel(torch.zeros(8, 3), torch.zeros(8, 5))  # not a kernel
    assert not resizable_kernel(k3, torch.zeros(8, 1, 5, 5))  # other dimensionality


def test_resampling_without_pretrained_weights_is_refused(tmp_path):
    with pytest.raises(SegflowError, match="pretrained_resample_kernels"):
        TrainingSettings(pretrained_resample_kernels=True)
    settings = dataclasses.replace(
        TrainingSettings(), pretrained_weights="k3.pt", pretrained_resample_kernels=True
    )
    assert settings.result_fields()["pretrained_resample_kernels"] is True
    with pytest.raises(ConfigError) as err:
        check_config(
            {"dataset": "d", "experiments": {"k5": {"pretrained_resample_kernels": True}}}, SCHEMA
        )
    assert any(
        str(p).startswith("experiments.k5.pretrained_resample_kernels: resizes the kernels")
        for p in err.value.problems
    )
