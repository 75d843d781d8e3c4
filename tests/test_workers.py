"""The worker-process pool shared by validation, fingerprinting and preprocessing."""

from __future__ import annotations

import os
import threading

import pytest

from segflow.errors import SegflowError
from segflow.workers import map_in_workers, worker_context


def _scaled_with_pid(item: int, factor: int) -> tuple[int, int]:
    return item * factor, os.getpid()


def _fail_on_three(item: int) -> int:
    if item == 3:
        raise SegflowError(f"item {item} is bad")
    return item


def test_results_come_back_in_order_from_other_processes():
    results = list(map_in_workers(_scaled_with_pid, range(23), workers=2, job=(10,)))
    assert [value for value, _ in results] == [10 * i for i in range(23)]
    pids = {pid for _, pid in results}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_one_worker_runs_in_this_process():
    results = list(map_in_workers(_scaled_with_pid, [1, 2], workers=1, job=(3,)))
    assert results == [(3, os.getpid()), (6, os.getpid())]


def test_never_more_workers_than_items_and_no_items_is_fine():
    assert list(map_in_workers(_scaled_with_pid, [], workers=4, job=(2,))) == []
    results = list(map_in_workers(_scaled_with_pid, [5], workers=8, job=(2,)))
    assert results == [(10, os.getpid())]  # one item: no pool at all


def test_a_workers_error_reaches_the_caller():
    with pytest.raises(SegflowError, match="item 3 is bad"):
        list(map_in_workers(_fail_on_three, range(6), workers=2))


def test_a_threaded_caller_gets_a_fork_server_not_fork():
    if threading.active_count() == 1:
        assert worker_context().get_start_method() == "fork"
    seen = []
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        seen.append(worker_context(["segflow.workers"]).get_start_method())
    finally:
        stop.set()
        thread.join()
    assert seen == ["forkserver"]
