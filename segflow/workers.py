"""Running one function over many cases in worker processes: validation, fingerprinting and
preprocessing share this pool.

Worker *processes*, never threads, read images: SimpleITK's readers are not reliably safe to
run concurrently in one process (SimpleITK issues #45, #74 and ITK #2003). Reading the demo
dataset in two threads failed once in CI with ``basic_string::_S_create`` thrown by
``ImageFileReader_Execute`` on a file that reads fine alone.

On Linux a process that runs no other thread forks its workers, which then reuse its imports
(numpy, scipy, SimpleITK, blosc2: about a second per process otherwise); a threaded caller gets
a fork server (preloading the function's module) and other systems spawn clean workers.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["map_in_workers", "worker_context"]

Item = TypeVar("Item")
Result = TypeVar("Result")

# What a worker runs: ``(function, job)``, set once per process by the pool's initializer, so
# that the job (plans, dataset description...) crosses to each worker once, not per case.
_WORK: tuple[Callable[..., Any], tuple[Any, ...]] | None = None


def worker_context(preload: Iterable[str] = ()) -> multiprocessing.context.BaseContext:
    """How to start workers: fork where it is safe, else a fork server preloading ``preload``
    (module names), else spawn."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        return context
    return multiprocessing.get_context("spawn")


def _start_worker(function: Callable[..., Any], job: tuple[Any, ...]) -> None:
    global _WORK
    _WORK = (function, job)


def _run(item: Any) -> Any:
    if _WORK is None:  # pragma: no cover - only if the pool is misused
        raise RuntimeError("worker not initialised")
    function, job = _WORK
    return function(item, *job)


def map_in_workers(
    function: Callable[..., Result],
    items: Iterable[Item],
    workers: int,
    job: tuple[Any, ...] = (),
    chunks_per_worker: int = 4,
) -> Iterator[Result]:
    """``function(item, *job)`` for every item, in the order of ``items``, lazily.

    Args:
        function: a module-level function (it crosses to spawned workers by name).
        items: the items; each crosses to a worker, so they must pickle.
        workers: processes at most (never more than items); 1 runs in this process.
        job: extra arguments, the same for every item, sent to each worker once.
        chunks_per_worker: items go to workers in chunks, about this many per worker.

    Yields:
        the results, in order, as they are ready. Closing the iterator early (or an exception
        from ``function``, raised here) cancels the items not yet started.
    """
    items = list(items)
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        for item in items:
            yield function(item, *job)
        return
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=worker_context([function.__module__]),
        initializer=_start_worker,
        initargs=(function, job),
    )
    try:
        chunksize = max(1, len(items) // (chunks_per_worker * workers))
        yield from pool.map(_run, items, chunksize=chunksize)
    finally:
        pool.shutdown(cancel_futures=True)
