"""Checks an installation of segflow: every stage module imports, and torch is the build the
image is meant to have. The image recipes run it at build time; tests/test_lock_install.py
runs it in a fresh virtual environment made from requirements.lock.

    python containers/check_install.py [--torch cpu|cuda|any]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# The package of every `python -m segflow` stage (segflow/cli.py imports them lazily).
STAGE_MODULES = (
    "segflow.cli",
    "segflow.demo",
    "segflow.holdout",
    "segflow.validation",
    "segflow.fingerprint",
    "segflow.planning",
    "segflow.preprocessing",
    "segflow.training",
    "segflow.training.splits",
    "segflow.training.trainer",
    "segflow.inference",
    "segflow.evaluation",
    "segflow.crossval.merge",
    "segflow.crossval.validate",
    "segflow.ensembling",
    "segflow.postprocessing",
    "segflow.export",
    "segflow.report",
)
# The inference backends' runtimes (segflow.inference.backends imports them when used).
RUNTIME_PACKAGES = ("onnx", "onnxruntime", "openvino")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", choices=("cpu", "cuda", "any"), default="any",
                        help="the torch build expected: CPU-only, CUDA, or either")  # fmt: skip
    args = parser.parse_args(argv)
    for name in (*STAGE_MODULES, *RUNTIME_PACKAGES):
        importlib.import_module(name)
    import torch

    import segflow

    cuda = torch.version.cuda
    if args.torch == "cpu" and cuda is not None:
        print(f"torch {torch.__version__} is a CUDA {cuda} build, not CPU-only", file=sys.stderr)
        return 1
    if args.torch == "cuda" and cuda is None:
        print(f"torch {torch.__version__} is CPU-only; expected a CUDA build", file=sys.stderr)
        return 1
    build = f"CUDA {cuda}" if cuda else "CPU-only"
    where = Path(segflow.__file__).parent
    print(f"segflow {segflow.__version__} ({where}): {len(STAGE_MODULES)} stage modules import; "
          f"torch {torch.__version__} ({build})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
