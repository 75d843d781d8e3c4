"""The inference backends: OpenVINO and ONNX Runtime against PyTorch on small 2D and 3D
networks, every network segflow builds walked through each backend (or its fallback line),
the auto rule, bfloat16 on a CPU without it (simulated), and the errors before any case."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segflow.errors import SegflowError
from segflow.inference import backends
from segflow.inference.backends import (
    backend_problems,
    export_onnx,
    prepare_runtime,
    resolve_backend,
)
from segflow.inference.options import PredictionOptions
from segflow.inference.sliding_window import predict_logits
from segflow.networks import NETWORKS, NetworkVariant, build_network
from segflow.networks.catalog import ZOO_NAMES
from segflow.networks.variants import BRATS2021_VARIANTS, NORMS
from tests.networks.conftest import _configuration, _network_section

pytest.importorskip("onnx")
RUNTIMES = [
    pytest.param(name, marks=pytest.mark.skipif(
        not backends._installed(name), reason=f"{name} is not installed"))
    for name in ("openvino", "onnxruntime")
]  # fmt: skip

#: Logits of a converted network may differ from PyTorch's by float32 reassociation only:
#: measured at most ~1e-5 on these networks (logits of magnitude ~1-10); 1e-4 leaves a margin
#: while a wrongly converted operation differs by order one.
ATOL = 1e-4
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _network(ndim, architecture="PlainConvUNet", channels=1, features=(4, 8, 16), **variant):
    patch = [16, 16, 16] if ndim == 3 else [32, 32]
    section = _network_section(architecture if architecture in NETWORKS else "PlainConvUNet",
                               ndim=ndim, features=features)  # fmt: skip
    variant = NetworkVariant(architecture=architecture, **variant)
    net = build_network(_configuration(section, patch_size=patch), channels, 3, False, variant)
    return net.eval(), tuple(patch)


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize(("ndim", "shape"), [(2, (1, 3, 45, 38)), (3, (1, 20, 23, 18))])
def test_each_backend_predicts_the_logits_torch_does(backend, ndim, shape):
    net, patch = _network(ndim)
    data = torch.randn(shape)
    axes = tuple(range(ndim))
    expected = predict_logits(net, data, patch, PredictionOptions(mirror_axes=axes))
    got = predict_logits(net, data, patch, PredictionOptions(mirror_axes=axes, backend=backend))
    assert got.shape == expected.shape and got.dtype == torch.float32
    difference = float((got - expected).abs().max())
    assert difference <= ATOL, difference
    assert difference > 0 or backend == "torch"  # another runtime really ran


def _every_network():
    """(name, ndim, builder kwargs) for every network the registries and variants offer: each
    architecture of NETWORKS and of the zoo in 2D and 3D, each normalization, the BraTS 2021
    variants, the spatial transformer, and a cascade's extra input channels."""
    for ndim in (2, 3):
        for name in (*NETWORKS, *ZOO_NAMES):
            yield f"{name}-{ndim}d", ndim, {"architecture": name}
        for norm in NORMS:
            yield f"norm-{norm}-{ndim}d", ndim, {"norm": norm, "groups": 4}
        for name, variant in BRATS2021_VARIANTS.items():
            kwargs = {k: getattr(variant, k) for k in ("encoder_scale", "norm", "axial_attention")}
            yield f"brats-{name}-{ndim}d", ndim, {**kwargs, "groups": 4, "attention_heads": 2,
                                                   "attention_head_size": 2}  # fmt: skip
        yield f"spatial-transformer-{ndim}d", ndim, {"spatial_transformer": True}
        yield f"cascade-{ndim}d", ndim, {"channels": 3}


NETWORK_CASES = list(_every_network())


def test_the_walk_covers_every_registered_network():
    from segflow.networks.zoo import ZOO

    walked = {kwargs.get("architecture") for _, _, kwargs in NETWORK_CASES}
    assert set(NETWORKS) | set(ZOO) <= walked


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize(
    ("name", "ndim", "kwargs"), NETWORK_CASES, ids=[c[0] for c in NETWORK_CASES]
)
def test_every_network_runs_on_the_backend_or_says_why_not(backend, name, ndim, kwargs, caplog):
    if kwargs.get("architecture") in ZOO_NAMES:
        pytest.importorskip("monai")
    kwargs = dict(kwargs)
    channels = kwargs.pop("channels", 1)
    features = (8, 16, 32) if kwargs.get("architecture") in ZOO_NAMES else (4, 8, 16)
    net, patch = _network(ndim, channels=channels, features=features, **kwargs)
    with caplog.at_level(logging.WARNING, logger="segflow.inference.backends"):
        runtime = prepare_runtime(net, backend=backend, precision="float32", device="cpu",
                                  channels=channels, patch=patch, threads=1)  # fmt: skip
    # The backends' own lines only: building a zoo network logs its padding at INFO, which
    # reaches caplog when an earlier test left the root logger at INFO.
    lines = [r.getMessage() for r in caplog.records if r.name == "segflow.inference.backends"]
    if runtime.backend == backend:
        assert lines == []
        window = torch.randn(2, channels, *patch)
        with torch.no_grad():
            expected = net(window)
        scale = max(float(expected.abs().max()), 1.0)
        assert float((runtime.module(window) - expected).abs().max()) <= 1e-3 * scale
    else:
        # The fallback: PyTorch, and one line naming the network and the reason.
        assert runtime.backend == "torch" and runtime.module is net
        assert len(lines) == 1, lines
        network = getattr(net, "family", None) or type(net).__name__
        assert f"{network}" in lines[0] and f"cannot run on {backend}" in lines[0]
    # The plans' own U-Nets, with any normalization, larger encoder or a cascade's channels,
    # always convert (axial attention and the spatial transformer fall back today: the
    # exporter cannot write their attention reshapes and matrix inverse).
    plain = kwargs.get("architecture", "PlainConvUNet") in NETWORKS
    if plain and not kwargs.get("axial_attention") and not kwargs.get("spatial_transformer"):
        assert runtime.backend == backend, lines


def test_a_network_that_cannot_be_exported_falls_back_with_one_line(caplog):
    class PythonLoop(torch.nn.Module):
        """Data-dependent Python control flow: the exporter traces one branch only, so
        the converted network disagrees with PyTorch on other inputs."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y if float(x.sum()) > 0 else -y

    net = PythonLoop().eval()
    with caplog.at_level(logging.WARNING, logger="segflow.inference.backends"):
        for _ in range(2):  # converted (and refused) once
            runtime = prepare_runtime(net, backend="onnxruntime", precision="float32",
                                      device="cpu", channels=1, patch=(8, 8))  # fmt: skip
    assert runtime.backend == "torch" and runtime.module is net
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "PythonLoop cannot run on onnxruntime" in lines[0], lines
    assert "differs from PyTorch's" in lines[0]


def test_the_network_is_converted_once_per_process(monkeypatch):
    net, patch = _network(2)
    calls = []
    real = backends.export_onnx
    monkeypatch.setattr(backends, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = torch.randn(1, 2, 40, 40)
    options = PredictionOptions(mirror_axes=(0, 1), backend="onnxruntime")
    first = predict_logits(net, data, patch, options)
    second = predict_logits(net, data, patch, options)
    assert calls == [1]
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # same settings, same numbers


def test_auto_picks_by_device_network_and_precision(monkeypatch):
    monkeypatch.setattr(backends, "_installed", lambda package: True)
    assert resolve_backend("auto", "cuda", 3, "float32") == "torch"
    assert resolve_backend("auto", "mps", 2, "bfloat16") == "torch"
    assert resolve_backend("auto", "cpu", 3, "float32") == "torch"
    assert resolve_backend("auto", "cpu", 3, "bfloat16") == "torch"
    assert resolve_backend("auto", "cpu", 2, "float32") == "onnxruntime"
    assert resolve_backend("auto", "cpu", 2, "bfloat16") == "openvino"
    assert resolve_backend("onnxruntime", "cpu", 3, "float32") == "onnxruntime"
    monkeypatch.setattr(backends, "_installed", lambda package: package == "openvino")
    assert resolve_backend("auto", "cpu", 2, "float32") == "openvino"
    monkeypatch.setattr(backends, "_installed", lambda package: False)
    assert resolve_backend("auto", "cpu", 3, "float32") == "torch"


def test_errors_name_the_missing_package_the_device_and_the_precision(monkeypatch):
    real = backends._import_problem
    monkeypatch.setattr(
        backends, "_import_problem",
        lambda p: "ModuleNotFoundError: No module named 'openvino'" if p == "openvino" else real(p),
    )  # fmt: skip
    problems = {str(p) for p in backend_problems("openvino", "float32", "cuda")}
    assert any("'openvino', which cannot be imported" in p and "pip install openvino" in p
               for p in problems)  # fmt: skip
    assert any("predicts on the CPU only, not on cuda" in p for p in problems)
    problems = [str(p) for p in backend_problems("onnxruntime", "bfloat16", "cpu")]
    assert len(problems) == 1 and "no bfloat16 convolutions" in problems[0]
    problems = [str(p) for p in backend_problems("onnx", "float32", "cpu")]
    assert "did you mean 'onnxruntime'?" in problems[0]
    assert backend_problems("torch", "bfloat16", "cpu") == []
    net, patch = _network(2)
    with pytest.raises(SegflowError, match="no bfloat16 convolutions"):
        predict_logits(net, torch.randn(1, 32, 32), patch,
                       PredictionOptions(mirror_axes=None, backend="onnxruntime",
                                         precision="bfloat16"))  # fmt: skip


@pytest.mark.skipif(not backends._installed("openvino"), reason="openvino is not installed")
def test_openvino_bfloat16_without_native_bf16_computes_float32_with_one_warning(
    monkeypatch, caplog
):
    backends._warn_no_native_bf16.cache_clear()
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    net, patch = _network(3)
    data = torch.randn(1, 18, 16, 20)
    fp32 = predict_logits(net, data, patch, PredictionOptions(None, backend="openvino"))
    with caplog.at_level(logging.WARNING, logger="segflow.inference.backends"):
        for _ in range(2):
            asked = predict_logits(
                net, data, patch, PredictionOptions(None, backend="openvino", precision="bfloat16")
            )
    torch.testing.assert_close(asked, fp32, rtol=0, atol=0)  # float32, not emulated bf16
    assert len([r for r in caplog.records if "no native bfloat16" in r.getMessage()]) == 1


_BF16_CHECK = """
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
from segflow.inference.options import PredictionOptions
from segflow.inference.sliding_window import predict_logits
from tests.inference.test_backends import _network

net, patch = _network(3)
data = torch.randn(1, 18, 16, 20)
fp32 = predict_logits(net, data, patch, PredictionOptions(None, backend="openvino"))
bf16 = predict_logits(
    net, data, patch, PredictionOptions(None, backend="openvino", precision="bfloat16")
)
print(float((bf16 - fp32).abs().max()), float(fp32.abs().max()))
"""


@pytest.mark.skipif(
    not (backends._installed("openvino") and backends.native_bf16()),
    reason="needs openvino and a CPU with native bfloat16",
)
def test_openvino_bfloat16_on_a_cpu_that_has_it(tmp_path):
    # In a process of its own (as before the cause of a SIGSEGV after OpenVINO was found:
    # see test_openvino_released_on_another_thread_leaves_signals_deliverable).
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "SEGFLOW_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _BF16_CHECK], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    difference, largest = (float(v) for v in done.stdout.split()[-2:])
    # bfloat16 keeps 8 significant bits: visibly different from float32, but close.
    assert 1e-4 < difference < 0.1 * max(largest, 1.0)


_RELEASED_ON_ANOTHER_THREAD = """
import gc, os, signal, sys, threading
import torch
from segflow.inference.options import PredictionOptions
from segflow.inference.sliding_window import predict_logits
from tests.inference.test_backends import _network

net, patch = _network(3)
options = PredictionOptions(None, backend="openvino", precision=sys.argv[1])
predict_logits(net, torch.randn(1, 18, 16, 20), patch, options)
# Every segflow object that holds OpenVINO dropped on another thread, as the garbage
# collector may do it on any thread (a worker pool's, a DataLoader's).
def drop():
    globals().pop("net")
    gc.collect()
thread = threading.Thread(target=drop)
thread.start()
thread.join()
# A signal whose handler runs on this thread's alternate stack (every handler Python
# installs asks for it, as torch's DataLoader's SIGCHLD handler), delivered in waitpid.
signal.signal(signal.SIGCHLD, lambda *args: None)
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
print("survived")
"""


@pytest.mark.skipif(not backends._installed("openvino"), reason="needs openvino")
def test_openvino_released_on_another_thread_leaves_signals_deliverable(tmp_path):
    # OpenVINO's CPU plugin installs an alternate signal stack on the thread that made it and
    # unmaps it when the plugin is destroyed, on whatever thread that happens: the process
    # ended with SIGSEGV at the next signal (see segflow.inference.backends._openvino_core).
    precision = "bfloat16" if backends.native_bf16() else "float32"
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "SEGFLOW_CACHE_DIR": str(tmp_path)}
    command = [sys.executable, "-c", _RELEASED_ON_ANOTHER_THREAD, precision]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split()[-1] == "survived"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"axial_attention": True, "attention_heads": 2, "attention_head_size": 2},
         "axial attention's reshapes"),
        ({"spatial_transformer": True}, "matrix inverse"),
    ],
)  # fmt: skip
def test_parts_the_exporter_cannot_write_fall_back_without_trying_it(
    kwargs, reason, monkeypatch, caplog
):
    # The exporter's shape inference ended the process with SIGFPE on axial attention at
    # times: it must not be called for the parts it cannot write.
    def never(*args, **kw):
        raise AssertionError("the ONNX exporter was called")

    monkeypatch.setattr(torch.onnx, "export", never)
    net, patch = _network(3, channels=1, features=(4, 8, 16), **kwargs)
    with caplog.at_level(logging.WARNING, logger="segflow.inference.backends"):
        runtime = prepare_runtime(net, backend="openvino", precision="float32", device="cpu",
                                  channels=1, patch=patch, threads=1)  # fmt: skip
    assert runtime.backend == "torch" and runtime.module is net
    [line] = [r.getMessage() for r in caplog.records if r.name == "segflow.inference.backends"]
    assert "cannot run on openvino" in line and reason in line, line
    with pytest.raises(ValueError, match=reason):
        export_onnx(net, 1, patch)
