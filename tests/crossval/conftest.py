"""The training tests' tiny experiment, for cross-validation tests that predict with a
really trained fold."""

from __future__ import annotations

from ..training.conftest import tiny_experiment  # noqa: F401 (a fixture)
