"""Shared fixtures: where the repository and the shared real datasets are; how the test
process ends."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

#: Set to ``1`` to let the test process end through Python's normal shutdown (see below).
FULL_SHUTDOWN_ENV = "SEGFLOW_TESTS_FULL_SHUTDOWN"

_exit_status: int | None = None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``; tests using it skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process with pytest's exit status once pytest is done with it, without
    Python's interpreter shutdown.

    The suite runs torch, oneDNN, OpenMP, two OpenBLAS builds, numexpr and ITK in this one
    process, and their native threads and static destructors are still there when the
    interpreter shuts down. Once (CI of 2026-12-02: 958 passed, then ``make: *** [test]
    Segmentation fault``; two full runs and four without tests/workflow here did not repeat
    it) the process crashed after pytest had finished, which turned a passing suite into a
    failed run. What the tests check is unaffected: segflow's own commands and Snakemake
    jobs, which the workflow tests run as processes, still end through the normal shutdown,
    so a crash of theirs still fails a test. ``SEGFLOW_TESTS_FULL_SHUTDOWN=1`` restores the
    normal end of this process too (to look for the crash, e.g. under
    ``python -X faulthandler``).
    """
    if _exit_status is None or os.environ.get(FULL_SHUTDOWN_ENV) == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@pytest.fixture(autouse=True)
def _onnx_cache_in_tmp(tmp_path_factory, monkeypatch):
    """ONNX networks made from checkpoints are cached in a test's own folder, never in the
    user's ~/.cache."""
    monkeypatch.setenv("SEGFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("segflow-cache")))
