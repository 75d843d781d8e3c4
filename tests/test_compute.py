"""The compute set-up of a stage (segflow.compute): device, threads, the C allocator."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from segflow.compute import (
    GLIBC_TUNABLES_REUSE_FREED_MEMORY,
    REUSE_FREED_MEMORY_ENV,
    choose_device,
    release_freed_memory,
    set_up_compute,
)
from segflow.errors import SegflowError


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("CPU") == torch.device("cpu")
    assert choose_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(SegflowError, match="unknown device 'tpu'"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SegflowError, match="this machine has none"):
            choose_device("cuda")


def _glibc_with_mallinfo2() -> bool:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return False
    if not version.startswith("glibc "):
        return False
    major, minor = (int(n) for n in version.split()[1].split(".")[:2])
    return (major, minor) >= (2, 33)


# Allocates and writes a 64 MiB tensor in a fresh process and prints whether the setting took
# effect and how many bytes of mmapped blocks the allocation added (glibc's mallinfo2).
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import torch
    from segflow.compute import set_up_compute

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    from segflow.compute import reusing_freed_memory
    set_up_compute(sys.argv[1], 1)
    before = libc.mallinfo2().hblkhd
    tensor = torch.empty(64 * 2**20, dtype=torch.uint8)
    tensor.fill_(1)
    print(reusing_freed_memory(), torch.get_num_threads(), libc.mallinfo2().hblkhd - before)
    """
)


def _probe(device: str, **env: str) -> tuple[bool, int, int]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, device],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert run.returncode == 0, run.stderr
    applied, threads, mapped = run.stdout.split()
    return applied == "True", int(threads), int(mapped)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or newer")
def test_on_the_cpu_large_blocks_come_from_the_heap():
    applied, threads, mapped = _probe("cpu")
    assert applied and threads == 1
    assert mapped < 2**20  # nothing mmapped for the 64 MiB tensor


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or newer")
def test_the_environment_variable_leaves_the_allocator_alone():
    applied, _, mapped = _probe("cpu", **{REUSE_FREED_MEMORY_ENV: "0"})
    assert not applied
    assert mapped >= 64 * 2**20  # glibc's own behaviour: a fresh mapping


def test_set_up_compute_checks_the_device_first(monkeypatch):
    calls = []
    monkeypatch.setattr("segflow.compute.reuse_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    with pytest.raises(SegflowError, match="unknown device"):
        set_up_compute("tpu", 3)
    assert calls == []
    assert set_up_compute("cpu", 3) == torch.device("cpu")
    assert calls == [("threads", 3), 1]
    monkeypatch.setattr("segflow.compute.choose_device", lambda requested: torch.device("cuda"))
    calls.clear()
    set_up_compute("cuda")
    assert calls == []  # the accelerator's host memory is left alone


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or newer")
def test_the_tunables_give_another_process_the_same_setting():
    env = {REUSE_FREED_MEMORY_ENV: "0", "GLIBC_TUNABLES": GLIBC_TUNABLES_REUSE_FREED_MEMORY}
    applied, _, mapped = _probe("cpu", **env)
    assert not applied  # segflow left the allocator alone; glibc took the setting at start-up
    assert mapped < 2**20


# Frees a written 256 MiB tensor with the heap kept for reuse, then releases the free heap:
# prints the resident memory (MiB) after the free and after the release.
_RELEASE_PROBE = textwrap.dedent(
    """
    import os
    import torch
    from segflow.compute import release_freed_memory, set_up_compute

    def resident():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20

    set_up_compute("cpu", 1)
    tensor = torch.empty(256 * 2**20, dtype=torch.uint8)
    tensor.fill_(1)
    del tensor
    kept = resident()
    released = release_freed_memory()
    print(kept, resident(), released)
    """
)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or newer")
def test_the_kept_heap_is_given_back_before_a_fork():
    run = subprocess.run(
        [sys.executable, "-c", _RELEASE_PROBE], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    kept, after, released = run.stdout.split()
    assert released == "True"
    assert int(kept) - int(after) > 200  # the freed 256 MiB stayed resident until released


def test_nothing_to_release_without_the_kept_heap(monkeypatch):
    monkeypatch.setattr("segflow.compute._applied", False)
    assert release_freed_memory() is False
