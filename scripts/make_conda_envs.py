#!/usr/bin/env python3
"""Writes envs/cpu.yaml and envs/gpu.yaml (`snakemake --use-conda`) from requirements.lock.

Each pins every package of the lock at its version, like the image of the same name
(containers/): the CPU environment takes torch from PyTorch's CPU wheel index, the GPU one
from PyPI (the CUDA build on Linux x86_64). Run it after changing requirements.lock;
`--check` only says whether the files are up to date (tests/test_environments.py runs it).

    python scripts/make_conda_envs.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHON = "3.11"

_HEADER = {
    "cpu": (
        "# Conda environment of the CPU rules (every rule but train, validate and predict) for\n"
        "# `snakemake --use-conda`: what containers/cpu.def installs. torch is the CPU build:\n"
        "# PyTorch's CPU wheel index is searched besides PyPI, and its <version>+cpu wheel wins\n"
        "# over PyPI's <version> (pip takes the higher; a local label sorts after).\n"
    ),
    "gpu": (
        "# Conda environment of the GPU rules (train, validate, predict) for\n"
        "# `snakemake --use-conda`: what containers/gpu.def installs. torch comes from PyPI:\n"
        "# the CUDA build on Linux x86_64 (which also runs on CPU).\n"
    ),
}


def lock_lines(lock: Path = LOCK) -> list[str]:
    """The requirement lines of the lock, in its order (comments and blank lines dropped)."""
    lines = []
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def render(kind: str, lock: Path = LOCK) -> str:
    pip = ([f"--extra-index-url {CPU_INDEX}"] if kind == "cpu" else []) + lock_lines(lock)
    body = "\n".join(f"      - {line}" for line in pip)
    return (
        f"{_HEADER[kind]}"
        "# Generated from requirements.lock by scripts/make_conda_envs.py: edit the lock and\n"
        "# rerun it. segflow itself is not installed: with --use-conda the rules run the\n"
        "# package of this repository (workflow/rules/common.smk puts it on PYTHONPATH).\n"
        "channels:\n"
        "  - conda-forge\n"
        "  - nodefaults\n"
        "dependencies:\n"
        f"  - python={PYTHON}\n"
        "  - pip\n"
        "  - pip:\n"
        f"{body}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for kind in ("cpu", "gpu"):
        path = REPO / "envs" / f"{kind}.yaml"
        text = render(kind)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path.relative_to(REPO))
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date with requirements.lock: {', '.join(map(str, stale))}; "
              "run scripts/make_conda_envs.py", file=sys.stderr)  # fmt: skip
        return 1
    for path in [] if args.check else stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
