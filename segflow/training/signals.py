"""Stop signals during training: which ones, the error a stopped run ends with, and a handler
installed for the duration of a block."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from segflow.errors import Interrupted

__all__ = ["STOP_SIGNALS", "TrainingInterrupted", "handling"]

#: Signals that make the trainer write a checkpoint and stop (SLURM sends them before a kill).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingInterrupted(Interrupted):
    """A stop signal arrived; a checkpoint was written and training can resume."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        super().__init__(
            f"stopped by {signal.Signals(signum).name}; wrote {checkpoint}; the same command "
            "resumes from it",
            signum,
        )


@contextlib.contextmanager
def handling(signals: Iterable[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Call ``handler`` for each of ``signals`` inside the block; the previous handlers are
    restored after it. Outside the main thread signals cannot be handled: the caller's
    handlers stay."""
    previous = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
