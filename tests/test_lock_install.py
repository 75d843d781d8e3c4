"""requirements.lock, which the images (containers/) install, installs into a fresh virtual
environment and every stage of segflow imports from it: the recipes' own steps (torch first,
then the lock and the package without dependencies, `pip check`, containers/check_install.py)
outside a container. The lock is installed without resolving anything, so `pip check` passing
shows that it pins every package an install needs (setuptools and argparse included). It needs
the package index (skipped when unreachable) and takes a minute or two with pip's cache warm
(longer the first time)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"

pytestmark = pytest.mark.slow


def _index_url() -> str:
    """The index pip installs from here (PIP_INDEX_URL, pip's configuration, or PyPI)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True).stdout  # fmt: skip
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if key.endswith(".index-url") and not key.endswith("extra-index-url"):
                url = value.strip("'\"")
    return url or "https://pypi.org/simple"


DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=15):
            return True
    except OSError:
        return False


def _torch_pin() -> str:
    return next(line.strip() for line in LOCK.read_text().splitlines()
                if line.startswith("torch=="))  # fmt: skip


def test_the_lock_installs_and_every_stage_imports(tmp_path):
    index = _index_url()
    if not _reachable(index):
        pytest.skip(f"the package index {index} is unreachable: cannot install the lock")
    # The package's sources, as the recipes copy them (building in the repository would
    # leave build/ there).
    src = tmp_path / "src"
    shutil.copytree(REPO / "segflow", src / "segflow",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-compile"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        # torch first, pinned (see the Makefile): here pip's index decides the build.
        [*install, _torch_pin()],
        # Nothing resolved: the lock is the whole set (pip check below says whether it is).
        [*install, "--no-deps", "-r", str(LOCK)],
        [*install, "--no-deps", str(src)],
        [str(python), "-m", "pip", "check"],
        [str(python), str(REPO / "containers" / "check_install.py")],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=1200)  # fmt: skip
        assert proc.returncode == 0, f"{' '.join(step)}\n{proc.stdout}\n{proc.stderr}"
    # The stages imported the installed package, not the repository's sources.
    assert f"({venv}/lib/" in proc.stdout, proc.stdout
    # Every distribution, as importlib sees them: `pip list` and `pip freeze` leave out
    # argparse (which pip counts as part of the standard library), freeze also setuptools.
    listed = subprocess.run([str(python), "-c", DISTRIBUTIONS], capture_output=True, text=True,
                            env=env, check=True).stdout  # fmt: skip
    installed = {_normal(f"{name}=={version}") for name, version in json.loads(listed).items()
                 if name != "pip"}  # fmt: skip
    locked = {_normal(line) for line in LOCK.read_text().splitlines()
              if "==" in line and not line.startswith("#")}  # fmt: skip
    # Exactly the lock's versions (torch's own CUDA libraries aside, where pip's index gives
    # the CUDA build), and segflow.
    assert not locked - installed, locked - installed
    allowed = ("segflow==", "nvidia-", "triton==")
    extra = {p for p in installed - locked if not p.startswith(allowed)}
    assert not extra, extra


def _normal(line: str) -> str:
    name, _, version = line.strip().partition("==")
    return f"{name.lower().replace('_', '-')}=={version.split('+')[0]}"
