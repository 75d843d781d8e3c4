"""A fold's ``training.log``: the package's log records of a run, also written to a file."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

__all__ = ["logging_to_file"]


@contextlib.contextmanager
def logging_to_file(path: str | os.PathLike[str]) -> Iterator[None]:
    """Inside the block, segflow's log records of INFO and above also go to ``path``,
    whatever level the caller configured (its other handlers filter their own); the
    package logger's level and handlers are restored after it."""
    file_log = logging.FileHandler(path, encoding="utf-8")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    file_log.setLevel(logging.INFO)
    package_logger = logging.getLogger("segflow")
    level = package_logger.level
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    package_logger.addHandler(file_log)
    try:
        yield
    finally:
        package_logger.removeHandler(file_log)
        package_logger.setLevel(level)
        file_log.close()
