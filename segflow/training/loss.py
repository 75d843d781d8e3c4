"""The training losses, under the import path the trainer and older code use.

Everything lives in :mod:`segflow.training.losses`; this module re-exports it unchanged.
"""

from __future__ import annotations

from segflow.training.losses import *  # noqa: F403  (the same names, listed there once)
from segflow.training.losses import __all__  # noqa: F401
