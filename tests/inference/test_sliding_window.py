"""Sliding-window prediction: importance map, window placement, mirroring, batching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from segflow.inference import sliding_window
from segflow.inference.options import PredictionOptions
from segflow.inference.sliding_window import (
    gaussian_importance_map,
    mirror_combinations,
    padding_for_patch,
    predict_logits,
    window_starts,
)

# nnU-Net v2.8.1's compute_steps_for_sliding_window(image_size, patch_size, 0.5), computed
# once in its own environment: (image size, patch size) -> start positions per axis.
NNUNET_STEPS = [
    ((110,), (64,), [[0, 23, 46]]),
    ((40, 56, 40), (40, 56, 40), [[0], [0], [0]]),
    ((41, 57, 45), (40, 56, 40), [[0, 1], [0, 1], [0, 5]]),
    (
        (200, 150, 97),
        (64, 48, 32),
        [[0, 27, 54, 82, 109, 136], [0, 20, 41, 61, 82, 102], [0, 13, 26, 39, 52, 65]],
    ),
    ((7,), (4,), [[0, 2, 3]]),
    ((13,), (4,), [[0, 2, 4, 5, 7, 9]]),
    ((100,), (20,), [[0, 10, 20, 30, 40, 50, 60, 70, 80]]),
    ((56, 51), (56, 40), [[0], [0, 11]]),
    ((130, 300), (64, 96), [[0, 22, 44, 66], [0, 41, 82, 122, 163, 204]]),
    ((9, 10, 11), (4, 5, 6), [[0, 2, 3, 5], [0, 2, 5], [0, 2, 5]]),
]

# nnU-Net v2.8.1's compute_gaussian((3, 8), 1/8, value_scaling_factor=1, float32), same way
# (its first and last rows are equal).
_OUTER_ROW = [
    9.582658094586805e-06,
    0.0003173340519424528,
    0.003865920240059495,
    0.017325852066278458,
    0.028565499931573868,
    0.017325852066278458,
    0.003865920240059495,
    0.0003173340519424528,
]
_MIDDLE_ROW = [
    0.000335462624207139,
    0.011108996346592903,
    0.1353352814912796,
    0.6065306663513184,
    1.0,
    0.6065306663513184,
    0.1353352814912796,
    0.011108996346592903,
]
NNUNET_GAUSSIAN_3x8 = [_OUTER_ROW, _MIDDLE_ROW, _OUTER_ROW]


# ---------------------------------------------------------------- importance map


def test_gaussian_matches_nnunet():
    np.testing.assert_allclose(
        gaussian_importance_map((3, 8)).numpy(), NNUNET_GAUSSIAN_3x8, rtol=1e-6
    )


@pytest.mark.parametrize("patch", [(8, 12, 10), (7, 9), (5,), (40, 56, 40)])
def test_gaussian_is_a_sampled_gaussian_with_its_peak_at_the_centre(patch):
    weights = gaussian_importance_map(patch, dtype=torch.float64).numpy()
    assert weights.shape == patch
    centre = tuple(p // 2 for p in patch)
    assert weights[centre] == 1.0 == weights.max()
    # Within 4 sigma (the whole patch at sigma = patch / 8) it is exactly exp(-d^2 / 2 s^2).
    expected = np.ones(())
    for p in patch:
        d = np.arange(p) - p // 2
        expected = np.multiply.outer(expected, np.exp(-0.5 * (d / (p / 8)) ** 2))
    np.testing.assert_allclose(weights, expected, rtol=1e-10)
    assert weights.min() > 0


def test_gaussian_is_symmetric_for_odd_patches():
    weights = gaussian_importance_map((7, 9, 5)).numpy()
    for axis in range(3):
        np.testing.assert_allclose(weights, np.flip(weights, axis), rtol=1e-6)


def test_gaussian_zeros_become_the_smallest_nonzero_weight():
    # A narrow sigma truncates the kernel (at 4 sigma) inside the patch.
    weights = gaussian_importance_map((33,), sigma_scale=1 / 32, dtype=torch.float64).numpy()
    raw = np.exp(-0.5 * ((np.arange(33) - 16) / (33 / 32)) ** 2)
    inside = np.abs(np.arange(33) - 16) <= int(4 * 33 / 32 + 0.5)
    np.testing.assert_allclose(weights[inside], raw[inside], rtol=1e-10)
    assert not inside.all()
    np.testing.assert_array_equal(weights[~inside], weights[inside].min())
    assert weights[inside].min() == pytest.approx(raw[inside].min(), rel=1e-10)


# ---------------------------------------------------------------- window placement


@pytest.mark.parametrize(("image", "patch", "expected"), NNUNET_STEPS)
def test_window_starts_match_nnunet(image, patch, expected):
    assert window_starts(image, patch, 0.5) == expected


@pytest.mark.parametrize(("image", "patch", "_"), NNUNET_STEPS)
def test_windows_cover_every_voxel_from_border_to_border(image, patch, _):
    for size, p, starts in zip(image, patch, window_starts(image, patch), strict=True):
        assert starts[0] == 0
        assert starts[-1] == size - p  # the last window ends at the border
        steps = np.diff(starts)
        # Half a patch apart at most, give or take the rounding of the starts.
        assert (steps > 0).all() and (steps < p / 2 + 1).all()
        covered = np.zeros(size, dtype=int)
        for s in starts:
            covered[s : s + p] += 1
        assert covered.min() >= 1


def test_window_starts_with_other_step_sizes():
    assert window_starts((110,), (64,), 1.0) == [[0, 46]]
    assert window_starts((110,), (64,), 0.25) == [[0, 15, 31, 46]]  # nnU-Net's too
    assert window_starts((64,), (64,), 1.0) == [[0]]


def test_window_starts_refuse_bad_input():
    with pytest.raises(ValueError, match="smaller than the patch"):
        window_starts((10, 4), (5, 5))
    with pytest.raises(ValueError, match="step size"):
        window_starts((10,), (5,), 0)
    with pytest.raises(ValueError, match="differ"):
        window_starts((10, 10), (5,))


def test_padding_centres_the_image():
    assert padding_for_patch((35, 51, 64), (56, 40, 64)) == [(10, 11), (0, 0), (0, 0)]


def test_every_voxel_is_predicted_by_the_planned_windows(monkeypatch):
    """The windows the predictor runs are exactly the planned ones, each once."""
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            # The input holds each voxel's flat index: the first voxel names the window.
            seen.extend(x[:, 0].flatten(1)[:, 0].long().tolist())
            return x

    shape, patch = (9, 10, 11), (4, 5, 6)
    index = torch.arange(np.prod(shape), dtype=torch.float64).reshape(1, *shape)
    out = predict_logits(
        Recorder(), index, patch, PredictionOptions(mirror_axes=None, batch_windows=5)
    )
    planned = [
        np.ravel_multi_index(starts, shape)
        for starts in itertools.product(*window_starts(shape, patch))
    ]
    assert sorted(seen) == sorted(planned)
    np.testing.assert_allclose(out[0].numpy(), index[0].numpy(), rtol=1e-6)


# ---------------------------------------------------------------- predictions


class Conv1x1(nn.Module):
    """A pointwise convolution: its prediction of a voxel does not depend on the window."""

    def __init__(self, dims: int, channels_in: int = 2, channels_out: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        torch.manual_seed(0)
        self.conv = conv(channels_in, channels_out, 1)

    def forward(self, x):
        return self.conv(x)


class Shifted(nn.Module):
    """A 3-wide convolution with an asymmetric kernel: mirroring changes its output."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        torch.manual_seed(1)
        self.conv = conv(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("mirror_axes", [None, (0, 1, 2)])
@pytest.mark.parametrize("shape", [(9, 10, 11), (3, 4, 5), (12, 3, 20)])
def test_identity_gives_back_its_input(shape, mirror_axes):
    data = torch.randn(2, *shape)
    out = predict_logits(nn.Identity(), data, (4, 5, 6), PredictionOptions(mirror_axes=mirror_axes))
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, data, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mirror_axes", [None, (0, 1, 2), (2,)])
def test_pointwise_convolution_equals_the_convolution_of_the_whole_image(mirror_axes):
    net = Conv1x1(3)
    data = torch.randn(2, 10, 13, 7)
    out = predict_logits(
        net, data, (4, 6, 8), PredictionOptions(mirror_axes=mirror_axes, batch_windows=3)
    )
    with torch.no_grad():
        expected = net(data[None])[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_mirroring_averages_all_flips_of_a_single_window():
    net = Shifted(3)
    data = torch.randn(1, 4, 6, 8)  # exactly one window: the importance map cancels out
    out = predict_logits(net, data, (4, 6, 8), PredictionOptions(mirror_axes=(0, 2)))
    with torch.no_grad():
        x = data[None]
        flips = [(), (2,), (4,), (2, 4)]
        expected = sum(torch.flip(net(torch.flip(x, f)), f) for f in flips)[0] / 4
        plain = net(x)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, plain, atol=1e-3)  # mirroring did change something
    torch.testing.assert_close(
        predict_logits(net, data, (4, 6, 8), PredictionOptions(mirror_axes=None)), plain
    )


def test_single_windows_run_their_flips_in_pairs_on_the_cpu():
    calls = []

    class Recording(Shifted):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    net = Recording(3)
    data = torch.randn(1, 4, 6, 8)  # one window
    out = predict_logits(net, data, (4, 6, 8), PredictionOptions(mirror_axes=(0, 1, 2)))
    assert calls == [2, 2, 2, 2]  # 8 flips, two per call
    calls.clear()
    with torch.no_grad():
        x = data[None]
        flips = [tuple(a + 2 for a in c) for c in mirror_combinations((0, 1, 2))]
        expected = sum(torch.flip(net(torch.flip(x, f)), f) for f in flips)[0] / 8
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    calls.clear()
    predict_logits(
        net,
        torch.randn(1, 8, 6, 8),
        (4, 6, 8),
        PredictionOptions(mirror_axes=(1,), batch_windows=3),
    )
    assert calls == [3, 3]  # batches of several windows: one call per flip
    calls.clear()
    predict_logits(net, data, (4, 6, 8), PredictionOptions(mirror_axes=None))
    assert calls == [1]


def test_mirroring_every_axis_makes_the_prediction_flip_equivariant():
    net = Shifted(3)
    # Odd patches centre the importance map, and these sizes place the windows
    # symmetrically ([0, 2, 4], [0, 3, 6], [0, 2, 4, 6]).
    data = torch.randn(1, 9, 13, 11)
    patch = (5, 7, 5)
    out = predict_logits(net, data, patch, PredictionOptions(mirror_axes=(0, 1, 2)))
    for axis in range(3):
        flipped = predict_logits(
            net, torch.flip(data, (axis + 1,)), patch, PredictionOptions(mirror_axes=(0, 1, 2))
        )
        torch.testing.assert_close(flipped, torch.flip(out, (axis + 1,)), rtol=1e-4, atol=1e-5)


def test_batching_does_not_change_the_result():
    net = Shifted(3)
    data = torch.randn(1, 9, 10, 11)
    one = predict_logits(net, data, (4, 5, 6), PredictionOptions(mirror_axes=(1,), batch_windows=1))
    many = predict_logits(
        net, data, (4, 5, 6), PredictionOptions(mirror_axes=(1,), batch_windows=7)
    )
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)


def test_2d_patch_predicts_a_volume_slice_by_slice():
    net = Conv1x1(2)
    data = torch.randn(2, 5, 13, 9)
    out = predict_logits(net, data, (8, 6), PredictionOptions(mirror_axes=(0, 1), batch_windows=4))
    assert out.shape == (3, 5, 13, 9)
    with torch.no_grad():
        expected = torch.stack([net(data[:, z][None])[0] for z in range(5)], dim=1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_2d_patch_on_a_slice_of_a_volume_matches_a_2d_image():
    net = Shifted(2)
    data = torch.randn(1, 3, 14, 11)
    volume = predict_logits(net, data, (8, 6), PredictionOptions(mirror_axes=(0, 1)))
    for z in range(3):
        plane = predict_logits(net, data[:, z], (8, 6), PredictionOptions(mirror_axes=(0, 1)))
        assert plane.shape == (2, 14, 11)  # a 2D input gives a 2D output
        torch.testing.assert_close(volume[:, z], plane)


def test_images_smaller_than_the_patch_are_padded_and_cropped_back():
    net = Shifted(2)
    data = torch.randn(1, 5, 7)
    out = predict_logits(net, data, (8, 10), PredictionOptions(mirror_axes=None))
    assert out.shape == (2, 5, 7)
    padded = torch.nn.functional.pad(data, (1, 2, 1, 2))  # centred, extra after
    with torch.no_grad():
        expected = net(padded[None])[0, :, 1:6, 1:8]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_numpy_input_and_network_mode():
    net = Conv1x1(3)
    net.train()
    out = predict_logits(
        net, np.ones((2, 4, 4, 4), np.float32), (4, 4, 4), PredictionOptions(mirror_axes=None)
    )
    assert out.shape == (3, 4, 4, 4)
    assert net.training  # restored


def test_bad_arguments_are_refused():
    data = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ValueError, match="mirror axes"):
        predict_logits(nn.Identity(), data, (4, 4, 4), PredictionOptions(mirror_axes=(3,)))
    with pytest.raises(ValueError, match="batch_windows"):
        predict_logits(
            nn.Identity(), data, (4, 4, 4), PredictionOptions(mirror_axes=None, batch_windows=0)
        )
    with pytest.raises(ValueError, match="does not fit a patch"):
        predict_logits(
            nn.Identity(), torch.zeros(1, 4, 4, 4, 4), (4, 4), PredictionOptions(mirror_axes=None)
        )

    class Deep(nn.Module):
        def forward(self, x):
            return [x, x[:, :, ::2]]

    with pytest.raises(TypeError, match="deep supervision"):
        predict_logits(Deep(), data, (4, 4, 4), PredictionOptions(mirror_axes=None))


def test_mirror_combinations():
    assert mirror_combinations(None) == [()]
    assert mirror_combinations((0, 2)) == [(), (0,), (2,), (0, 2)]
    assert len(mirror_combinations((0, 1, 2))) == 8


# ---------------------------------------------------------------- where the sums live


def test_accumulation_falls_back_to_host_memory_when_the_device_is_full(monkeypatch):
    """On a full GPU the predictions are summed again in host memory ("auto")."""
    calls = []
    real = sliding_window._sum_windows

    def fake(network, data, patch, combinations, step, batch, device, accumulate, fmt, cast):
        calls.append(accumulate.type)
        if accumulate.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        cpu = torch.device("cpu")
        return real(network, data, patch, combinations, step, batch, cpu, accumulate, fmt, cast)

    monkeypatch.setattr(sliding_window, "_sum_windows", fake)
    monkeypatch.setattr(sliding_window, "_empty_cache", lambda device: None)
    # The network "runs" on the meta device only in name: fake() computes on the CPU.
    net = nn.Identity()
    data = torch.randn(1, 6, 6, 6)
    out = predict_logits(net, data, (4, 4, 4), PredictionOptions(mirror_axes=None, device="meta"))
    assert calls == ["meta", "cpu"]
    torch.testing.assert_close(out, data, rtol=1e-5, atol=1e-5)

    calls.clear()
    with pytest.raises(torch.OutOfMemoryError):
        predict_logits(
            net,
            data,
            (4, 4, 4),
            PredictionOptions(mirror_axes=None, device="meta", accumulate_on="meta"),
        )
    assert calls == ["meta"]  # an explicit choice is not overridden


def test_other_errors_are_not_taken_for_a_full_device(monkeypatch):
    def broken(*args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(sliding_window, "_sum_windows", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_logits(
            nn.Identity(),
            torch.zeros(1, 4, 4, 4),
            (4, 4, 4),
            PredictionOptions(mirror_axes=None, device="meta"),
        )


class DtypeRecording(Shifted):
    """Records the dtype its convolution computes in."""

    def __init__(self) -> None:
        super().__init__(3)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x):
        out = super().forward(x)
        self.dtypes.append(out.dtype)
        return out


def test_bfloat16_runs_the_network_in_bfloat16_and_sums_in_float32(monkeypatch):
    from segflow.inference import backends

    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    net = DtypeRecording()
    data = torch.randn(1, 9, 10, 11)
    plain = predict_logits(net, data, (4, 5, 6), PredictionOptions(mirror_axes=(0, 1, 2)))
    assert set(net.dtypes) == {torch.float32}
    net.dtypes.clear()
    bf16 = predict_logits(
        net, data, (4, 5, 6), PredictionOptions(mirror_axes=(0, 1, 2), precision="bfloat16")
    )
    assert set(net.dtypes) == {torch.bfloat16}
    assert bf16.dtype == torch.float32
    # bfloat16 keeps 8 significant bits: close to float32, but not equal.
    assert not torch.equal(bf16, plain)
    torch.testing.assert_close(bf16, plain, rtol=0.02, atol=0.02)


def test_bfloat16_falls_back_to_float32_with_one_warning_without_native_bf16(monkeypatch, caplog):
    """A CPU without avx512_bf16 and amx_bf16 (simulated): float32, one warning, never
    emulated bfloat16."""
    from segflow.inference import backends

    backends._warn_no_native_bf16.cache_clear()
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    net = DtypeRecording()
    options = PredictionOptions(mirror_axes=None, precision="bfloat16")
    with caplog.at_level("WARNING", logger="segflow.inference.backends"):
        for _ in range(2):
            predict_logits(net, torch.randn(1, 4, 5, 6), (4, 5, 6), options)
    warnings = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    assert len(warnings) == 1 and "float32 instead" in warnings[0], warnings
    assert net.dtypes == [torch.float32, torch.float32]

    backends._warn_no_native_bf16.cache_clear()
    caplog.clear()
    net.dtypes.clear()
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    with caplog.at_level("WARNING", logger="segflow.inference.backends"):
        predict_logits(net, torch.randn(1, 4, 5, 6), (4, 5, 6), options)
    assert not caplog.records
    assert net.dtypes == [torch.bfloat16]


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # a CUDA autocast made without one
def test_autocast_only_for_torch_and_bf16_only_on_the_cpu():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    autocast = sliding_window._autocast
    assert autocast(cpu, "torch", "float32").__class__.__name__ == "nullcontext"
    bf16 = autocast(cpu, "torch", "bfloat16")
    assert isinstance(bf16, torch.autocast) and bf16.fast_dtype == torch.bfloat16
    assert bf16.device == "cpu"
    # Another backend sets its precision when it compiles the network.
    assert autocast(cpu, "openvino", "bfloat16").__class__.__name__ == "nullcontext"
    for precision in ("float32", "bfloat16"):
        # CUDA always predicts in float16 autocast, MPS never in autocast.
        assert autocast(cuda, "torch", precision).device == "cuda"
        assert autocast(mps, "torch", precision).__class__.__name__ == "nullcontext"


def test_accumulation_devices():
    cuda = torch.device("cuda", 0)
    assert sliding_window._accumulation_devices("auto", cuda) == [cuda, torch.device("cpu")]
    assert sliding_window._accumulation_devices("auto", torch.device("cpu")) == [
        torch.device("cpu")
    ]
    assert sliding_window._accumulation_devices("cpu", cuda) == [torch.device("cpu")]
