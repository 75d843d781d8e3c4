"""What runs a network during prediction: PyTorch, OpenVINO or ONNX Runtime, in float32 or
bfloat16.

A fold's network is converted once per process (never per case or window): exported to ONNX
(opset :data:`ONNX_OPSET` = 20, a dynamic batch axis, the window's spatial shape fixed), then
compiled by the runtime. The ONNX network of a trained fold comes, in this order, from

1. ``fold_<k>/network.onnx`` beside its checkpoint (an exported model carries one per fold,
   hashed in its manifest); it must record the sha256 of that checkpoint, or it is refused;
2. the cache ``$SEGFLOW_CACHE_DIR`` (default ``$XDG_CACHE_HOME/segflow``, ``~/.cache/segflow``)
   under ``onnx/<checkpoint sha256>.opset<N>.onnx``, keyed by the checkpoint's hash so that a
   retrained fold never meets a stale file;
3. a fresh export, written to that cache.

A network that cannot be exported or compiled, or whose float32 output on a test window
differs from PyTorch's, predicts with PyTorch instead; one warning line names the network and
the reason.

``auto`` picks PyTorch on CUDA and MPS and for 3D networks on the CPU; for 2D networks on the
CPU ONNX Runtime in float32 and OpenVINO in bfloat16 (see ``docs/how-to/deployment.md`` for the
measurements behind the rule); a runtime that is not installed is skipped.

bfloat16 runs only where the CPU has it natively (``avx512_bf16`` or ``amx_bf16`` among
``/proc/cpuinfo``'s flags); elsewhere prediction computes in float32 and warns once, rather
than emulate bf16 at many times the cost. ONNX Runtime has no bfloat16 convolutions on the
CPU, so that combination is refused.
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
import os
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segflow.errors import Problem, SegflowError
from segflow.inference.options import BACKENDS, PRECISIONS, unknown_choice
from segflow.io.atomic import atomic_path
from segflow.io.paths import readable_path

__all__ = [
    "CHECKPOINT_KEY",
    "ONNX_NAME",
    "ONNX_OPSET",
    "OnnxNetwork",
    "Runtime",
    "backend_problems",
    "check_backend",
    "cpu_flags",
    "effective_precision",
    "export_onnx",
    "native_bf16",
    "onnx_cache_dir",
    "prepare_runtime",
    "read_onnx",
    "remember_checkpoint",
    "resolve_backend",
    "unexportable",
    "write_onnx_beside",
]

logger = logging.getLogger(__name__)

#: The ONNX network's file name, beside its fold's checkpoint.
ONNX_NAME = "network.onnx"
#: The ONNX operator set of the exported networks (supported by both runtimes; 20 for the
#: spatial transformer's AffineGrid).
ONNX_OPSET = 20
#: The ONNX metadata key that records the sha256 of the checkpoint the network came from.
CHECKPOINT_KEY = "segflow.checkpoint_sha256"
CACHE_ENV = "SEGFLOW_CACHE_DIR"
#: The Python package each runtime needs (and ``onnx``, which reads the networks).
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
EXPORT_PACKAGE = "onnx"
#: The largest difference from PyTorch's float32 output, relative to its largest absolute
#: value, that a converted network may show on a test window. Float32 reassociation gives
#: about 1e-6 relative (measured: 1.5e-4 absolute on logits of magnitude ~10); a wrongly
#: converted operation gives differences of order one.
AGREEMENT = 1e-3


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    from segflow.compute import cpu_has_native_bf16  # no /proc/cpuinfo: ask oneDNN

    return cpu_has_native_bf16()


@functools.cache
def _warn_no_native_bf16() -> None:
    logger.warning(
        "precision bfloat16 asked for, but this CPU has no native bfloat16 (neither "
        "avx512_bf16 nor amx_bf16 among its flags): predicting in float32 instead of "
        "emulating bfloat16 at many times the cost"
    )


def effective_precision(precision: str, device: torch.device | str) -> str:
    """The precision a network computes in on ``device``: ``bfloat16`` only on a CPU with
    native bf16 (warns once per process otherwise); ``float32`` everywhere else (CUDA adds
    its float16 autocast on its own)."""
    if precision == "float32" or torch.device(device).type != "cpu":
        return "float32"
    if native_bf16():
        return "bfloat16"
    _warn_no_native_bf16()
    return "float32"


def _import_problem(package: str) -> str | None:
    try:
        importlib.import_module(package)
    except Exception as err:  # an ImportError, or a broken install
        return f"{type(err).__name__}: {err}"
    return None


def backend_problems(backend: str, precision: str, device: torch.device | str) -> list[Problem]:
    """Why ``backend`` cannot predict in ``precision`` on ``device``; empty when it can."""
    problems = []
    for what, value, valid in (
        ("backend", backend, BACKENDS),
        ("precision", precision, PRECISIONS),
    ):
        message = unknown_choice(what, value, valid)
        if message:
            problems.append(Problem(what, message))
    if backend in PACKAGES:
        kind = torch.device(device).type
        if kind != "cpu":
            problems.append(Problem("backend", f"{backend} predicts on the CPU only, not on "
                                    f"{device}; use device cpu or backend torch"))  # fmt: skip
        for package in (PACKAGES[backend], EXPORT_PACKAGE):
            reason = _import_problem(package)
            if reason is not None:
                problems.append(Problem("backend", f"{backend} needs the Python package "
                                        f"'{package}', which cannot be imported ({reason}); "
                                        f"install it (pip install {package}) or use backend "
                                        "torch"))  # fmt: skip
    if backend == "onnxruntime" and precision == "bfloat16":
        problems.append(Problem("precision", "ONNX Runtime has no bfloat16 convolutions on the "
                                "CPU; use backend openvino or torch for bfloat16"))  # fmt: skip
    return problems


def check_backend(backend: str, precision: str, device: torch.device | str) -> None:
    """Raise :class:`SegflowError` listing every :func:`backend_problems`."""
    problems = backend_problems(backend, precision, device)
    if problems:
        raise SegflowError("cannot predict with this backend", problems)


@functools.cache
def _installed(package: str) -> bool:
    return _import_problem(package) is None and _import_problem(EXPORT_PACKAGE) is None


def resolve_backend(backend: str, device: torch.device | str, ndim: int, precision: str) -> str:
    """The backend ``auto`` stands for (any other name stands for itself).

    PyTorch on CUDA and MPS, and on the CPU for 3D networks (measured end to end on
    Hippocampus 3d_fullres against OpenVINO and ONNX Runtime, docs/results/deployment.md:
    PyTorch was as fast or faster in float32 and bfloat16, at a lower peak RSS); for 2D
    networks on the CPU ONNX Runtime (else OpenVINO) in float32 and OpenVINO in bfloat16;
    PyTorch where neither is installed.
    """
    if backend != "auto":
        return backend
    if torch.device(device).type != "cpu" or ndim != 2:
        return "torch"
    order = ("openvino",) if precision == "bfloat16" else ("onnxruntime", "openvino")
    return next((b for b in order if _installed(PACKAGES[b])), "torch")


# ---------------------------------------------------------------------------------------
# ONNX networks: export, reading, the per-checkpoint cache


@dataclass(frozen=True)
class _Source:
    """The checkpoint a loaded network came from and its input channels."""

    checkpoint: Path
    channels: int


_SOURCES: weakref.WeakKeyDictionary[nn.Module, _Source] = weakref.WeakKeyDictionary()


def remember_checkpoint(network: nn.Module, checkpoint: Path, channels: int) -> None:
    """Record which checkpoint ``network`` was loaded from (where its ONNX network lives)."""
    _SOURCES[network] = _Source(Path(checkpoint), int(channels))


#: Parts of networks PyTorch's ONNX exporter cannot write, by class name, and why: the
#: exporter is not even tried (on the axial attention's reshapes its shape inference ended
#: the process with SIGFPE at times, which no ``except`` catches).
_UNEXPORTABLE = {
    "AxialAttention": "the ONNX exporter cannot write axial attention's reshapes",
    "SpatialTransformer": "the spatial transformer's matrix inverse has no ONNX form",
    "SwinUNETR": "the ONNX exporter cannot write its instance norm of unknown channel size",
}


def unexportable(network: nn.Module) -> str | None:
    """Why ``network`` cannot be exported to ONNX (a part of :data:`_UNEXPORTABLE`), or None."""
    for module in network.modules():
        reason = _UNEXPORTABLE.get(type(module).__name__)
        if reason is not None:
            return reason
    return None


def export_onnx(
    network: nn.Module,
    channels: int,
    patch: Sequence[int],
    *,
    checkpoint_sha256: str | None = None,
) -> bytes:
    """``network`` as an ONNX model taking ``(batch, channels, *patch)`` float32 windows.

    The network is exported on the CPU in evaluation mode (its device and mode are restored);
    ``checkpoint_sha256`` is recorded in the model's metadata (:data:`CHECKPOINT_KEY`).

    Raises:
        ValueError: the network has a part the exporter cannot write (:func:`unexportable`).
    """
    import onnx

    reason = unexportable(network)
    if reason is not None:
        raise ValueError(reason)

    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    was_training = network.training
    network.to("cpu").eval()
    sample = torch.zeros((1, int(channels), *(int(p) for p in patch)))
    buffer = io.BytesIO()
    # PyTorch's fused attention kernel (the fast path of nn.MultiheadAttention in evaluation
    # mode) has no ONNX form; the plain path computes the same.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow
            torch.onnx.export(
                network, (sample,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        network.to(device).train(was_training)
    model = onnx.load_from_string(buffer.getvalue())
    if checkpoint_sha256 is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = CHECKPOINT_KEY, checkpoint_sha256
    return model.SerializeToString()


def read_onnx(path: Path, checkpoint_sha256: str) -> bytes:
    """The ONNX network at ``path``, checked to be whole and made from the checkpoint whose
    sha256 is given.

    Raises:
        SegflowError: the file is missing, truncated or not ONNX, or records another
            checkpoint.
    """
    import onnx

    where = readable_path(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SegflowError(
            "cannot read the ONNX network", [Problem(where, f"{err.strerror or err}")]
        ) from None
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as err:
        raise SegflowError(
            "damaged ONNX network",
            [Problem(where, f"is truncated or not an ONNX model ({type(err).__name__}); "
                     "export the model again or delete the file")],
        ) from None  # fmt: skip
    recorded = {p.key: p.value for p in model.metadata_props}.get(CHECKPOINT_KEY)
    if recorded != checkpoint_sha256:
        said = f"checkpoint sha256 {recorded[:12]}..." if recorded else "no checkpoint"
        raise SegflowError(
            "the ONNX network does not match its checkpoint",
            [Problem(where, f"records {said}, but the checkpoint beside it has sha256 "
                     f"{checkpoint_sha256[:12]}...; export the model again or delete the file")],
        )  # fmt: skip
    return data


def _sha256(path: Path) -> str:
    from segflow.export.bundle import file_sha256

    return file_sha256(path)


def onnx_cache_dir() -> Path:
    """Where ONNX networks made from checkpoints are cached."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segflow"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_onnx_beside(
    network: nn.Module, checkpoint: Path, channels: int, patch: Sequence[int]
) -> Path:
    """Export ``network`` to ``network.onnx`` beside its ``checkpoint`` (for an exported
    model); returns the file."""
    target = Path(checkpoint).parent / ONNX_NAME
    _write(target, export_onnx(network, channels, patch, checkpoint_sha256=_sha256(checkpoint)))
    return target


def _onnx_of(network: nn.Module, channels: int, patch: tuple[int, ...]) -> bytes:
    """The ONNX network of ``network``: beside its checkpoint, cached, or exported now."""
    source = _SOURCES.get(network)
    if source is None:  # a network not loaded from a checkpoint: nothing to cache it by
        return export_onnx(network, channels, patch)
    sha = _sha256(source.checkpoint)
    beside = source.checkpoint.parent / ONNX_NAME
    if beside.exists():
        return read_onnx(beside, sha)
    cached = onnx_cache_dir() / "onnx" / f"{sha}.opset{ONNX_OPSET}.onnx"
    if cached.is_file():
        try:
            return read_onnx(cached, sha)
        except SegflowError:
            logger.warning("%s: damaged cache entry, exporting again", cached)
    data = export_onnx(network, channels, patch, checkpoint_sha256=sha)
    try:
        _write(cached, data)
    except (OSError, SegflowError) as err:
        logger.warning("cannot cache the ONNX network at %s (%s); it is made again next time",
                       cached, err)  # fmt: skip
    return data


# ---------------------------------------------------------------------------------------
# Runtimes


class OnnxNetwork(nn.Module):
    """An ONNX network run by a CPU runtime, behaving as a module for the sliding window:
    a float32 batch of windows in, float32 logits out (on the CPU).

    :attr:`flips_per_call` flips of a window go in one call. Measured on the Hippocampus
    3d_fullres model with mirroring (OpenVINO, 2 threads, busy machine): 2 flips a call took
    the time of 8 (11.0 vs 11.4 s for two cases) at 763 instead of 1075 MB peak RSS (PyTorch:
    628 MB); 1 flip a call was slower (13.1 s), 4 no faster (10.5 s) at 886 MB.
    """

    flips_per_call = 2
    #: Whether :meth:`_run` returns the runtime's own buffer (copied) or a fresh array (kept).
    shares_output = False

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def _run(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self._run(array)
        # A runtime's own output buffer is overwritten by its next call: copied once, here.
        out = np.array(out, dtype=np.float32) if self.shares_output else np.asarray(out, np.float32)
        return torch.from_numpy(out)


# The process's one OpenVINO Core (see _openvino_core); never released before the process ends.
_OPENVINO_CORE: Any = None


def _openvino_core() -> Any:
    """The process's one OpenVINO ``Core``, made on first use and kept until the process ends.

    OpenVINO's CPU plugin (made when a ``Core`` first compiles for the CPU; one per ``Core``)
    installs an alternate signal stack on the thread that makes it, in memory it maps itself
    (AMX's signal frames are larger than the default stack allows), and unmaps that memory
    when the plugin is destroyed, on whichever thread drops the last reference, restoring the
    old stack only on that thread. When the garbage collector released it on another thread (a
    worker pool's, a DataLoader's), the first thread kept an alternate stack in unmapped
    memory, and the next signal whose handler runs on it (every handler Python installs asks
    for it: SIGINT, the SIGCHLD handler of torch's DataLoader) ended the process with SIGSEGV,
    wherever the thread was (gdb: in ``waitpid``). Several ``Core`` objects released out of
    order leave the same dangling stack on one thread. One ``Core`` for the process, never
    released, keeps its plugin and that stack valid until the interpreter ends
    (``tests/inference/test_backends.py`` checks it in a process of its own).
    """
    global _OPENVINO_CORE
    if _OPENVINO_CORE is None:
        import openvino

        _OPENVINO_CORE = openvino.Core()
    return _OPENVINO_CORE


class _OpenVINONetwork(OnnxNetwork):
    """OpenVINO's CPU plugin; one compiled model per batch size (static shapes are faster)."""

    shares_output = True

    def __init__(self, onnx_model: bytes, precision: str, threads: int) -> None:
        super().__init__("openvino")
        self._core = _openvino_core()
        self._model = self._core.read_model(onnx_model)
        self._config = {
            "INFERENCE_NUM_THREADS": int(threads),
            # OpenVINO's own default is bf16 on CPUs that have it: float32 must be asked for.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _run(self, array: np.ndarray) -> np.ndarray:
        shape = tuple(array.shape)
        compiled = self._compiled.get(shape)
        if compiled is None:
            model = self._model.clone()
            model.reshape({0: list(shape)})
            compiled = self._compiled[shape] = self._core.compile_model(model, "CPU", self._config)
        # The input is read in place, the output is the request's own buffer (forward copies
        # it once): no copy of either inside OpenVINO.
        return compiled(array, share_inputs=True, share_outputs=True)[0]


class _OnnxRuntimeNetwork(OnnxNetwork):
    """ONNX Runtime's CPU execution provider."""

    def __init__(self, onnx_model: bytes, precision: str, threads: int) -> None:
        import onnxruntime

        super().__init__("onnxruntime")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            onnx_model, options, providers=["CPUExecutionProvider"]
        )

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self._session.run(["logits"], {"image": array})[0]


_RUNTIMES = {"openvino": _OpenVINONetwork, "onnxruntime": _OnnxRuntimeNetwork}


@dataclass(frozen=True)
class Runtime:
    """What predicts with a network: the module to call, and the backend and precision it
    computes with (after ``auto``, fallbacks and the CPU's bf16 are taken into account)."""

    module: nn.Module
    backend: str
    precision: str

    def describe(self) -> str:
        return f"{self.backend}, {self.precision}"


# Per network, its runtimes by settings; PyTorch's as None (a value that held the network
# itself would keep the weak key alive forever).
_PREPARED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Runtime | None]] = (
    weakref.WeakKeyDictionary()
)


def _network_name(network: nn.Module) -> str:
    """The network's class (a zoo network's family; what a U-Net adds: axial attention, a
    spatial transformer) and the checkpoint it came from."""
    name = getattr(network, "family", None) or type(network).__name__
    if any(type(m).__name__ == "AxialAttention" for m in network.modules()):
        name += " with axial attention"
    source = _SOURCES.get(network)
    where = f" ({readable_path(source.checkpoint)})" if source is not None else ""
    return f"{name}{where}"


def _reference_output(
    network: nn.Module, channels: int, patch: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A test window (two random windows, seeded) and PyTorch's float32 output for it.

    Computed before the runtime is compiled, and the heap PyTorch used is handed back
    (:func:`segflow.compute.release_freed_memory`), so that PyTorch's activations and the
    runtime's compiled network never take memory at the same time (the peak RSS of a
    prediction stays that of its longer part, not their sum).
    """
    from segflow.compute import release_freed_memory

    generator = torch.Generator().manual_seed(0)
    window = torch.randn((2, channels, *patch), generator=generator)
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    with torch.no_grad():
        expected = network.eval()(window.to(device)).float().cpu()
    release_freed_memory()
    return window, expected


def _agreement_problem(
    module: OnnxNetwork, window: torch.Tensor, expected: torch.Tensor
) -> str | None:
    """Why ``module`` does not compute on ``window`` what PyTorch did (``expected``), or
    None."""
    with torch.no_grad():
        got = module(window)
    if got.shape != expected.shape:
        return f"its output has shape {tuple(got.shape)}, PyTorch's {tuple(expected.shape)}"
    scale = max(float(expected.abs().max()), 1.0)
    difference = float((got - expected).abs().max())
    if not difference <= AGREEMENT * scale:
        return f"its float32 output differs from PyTorch's by {difference:.3g}"
    return None


def prepare_runtime(
    network: nn.Module,
    *,
    backend: str,
    precision: str,
    device: torch.device | str,
    channels: int,
    patch: Sequence[int],
    threads: int | None = None,
) -> Runtime:
    """The runtime that predicts with ``network``, made once per network and settings in a
    process (later calls return the same one).

    Args:
        network: a network in evaluation mode whose output is one tensor.
        backend, precision: as asked for (``auto``, ``bfloat16`` are resolved here).
        device: where prediction runs.
        channels, patch: the input windows' channels and spatial shape.
        threads: the runtime's CPU threads (None: torch's thread count).

    Raises:
        SegflowError: the backend cannot run here (:func:`backend_problems`), or the ONNX
            network beside the checkpoint is damaged or belongs to another checkpoint.
    """
    patch = tuple(int(p) for p in patch)
    device = torch.device(device)
    resolved = resolve_backend(backend, device, len(patch), precision)
    check_backend(resolved, precision, device)
    effective = effective_precision(precision, device)
    threads = int(threads or torch.get_num_threads())
    key = (resolved, effective, threads, int(channels), patch, device.type)
    prepared = _PREPARED.setdefault(network, {})
    if key in prepared:
        return prepared[key] or Runtime(network, "torch", effective)
    runtime = Runtime(network, "torch", effective)
    if resolved != "torch":
        try:
            data = _onnx_of(network, int(channels), patch)
            window, expected = _reference_output(network, int(channels), patch)
            module: OnnxNetwork = _RUNTIMES[resolved](data, "float32", threads)
            reason = _agreement_problem(module, window, expected)
            if reason is None and effective == "bfloat16":
                del module  # the float32 check's network, before the bfloat16 one is compiled
                module = _RUNTIMES[resolved](data, effective, threads)
        except SegflowError:  # a damaged or foreign ONNX file: the user's to fix
            raise
        except Exception as err:  # an export or compilation the runtime cannot do
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if reason is None:
            runtime = Runtime(module, resolved, effective)
        else:
            logger.warning("%s cannot run on %s (%s); it predicts with PyTorch",
                           _network_name(network), resolved, reason)  # fmt: skip
    logger.debug("%s predicts with %s", _network_name(network), runtime.describe())
    prepared[key] = runtime if runtime.module is not network else None
    return runtime
