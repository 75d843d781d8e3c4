"""Stop signals during training: a handler installed for the duration of a block."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["handling"]


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
