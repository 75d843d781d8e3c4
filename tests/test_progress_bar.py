"""segflow.progress_bar: the stages' bars start no tqdm monitor thread."""

from __future__ import annotations

import io

import pytest
import tqdm
import tqdm.std

from segflow.progress_bar import ProgressBar


@pytest.fixture
def monitors(monkeypatch) -> list[float]:
    """Records the monitor threads tqdm would start (their intervals) instead of starting them."""
    started: list[float] = []

    class Recording:
        def __init__(self, bar_class, interval: float) -> None:
            started.append(interval)

        def report(self) -> bool:
            return True

        def exit(self) -> bool:
            return True

    monkeypatch.setattr(tqdm.std, "TMonitor", Recording)
    monkeypatch.setattr(tqdm.std.tqdm, "monitor", None)
    monkeypatch.setattr(ProgressBar, "monitor", None)
    return started


def test_plain_tqdm_starts_a_monitor_even_for_a_disabled_bar(monitors):
    """What ProgressBar avoids: tqdm starts its monitor for a bar that shows nothing."""
    with tqdm.tqdm(total=2, disable=True) as bar:
        bar.update()
    assert monitors == [10]


@pytest.mark.parametrize("disable", [True, False, None])
def test_progress_bars_start_no_monitor(monitors, disable):
    out = io.StringIO()
    with ProgressBar(total=3, disable=disable, file=out, desc="epoch 0") as bar:
        for _ in range(3):
            bar.update()
            bar.set_postfix(loss="0.5000")
    assert list(ProgressBar(range(4), disable=disable, file=out)) == [0, 1, 2, 3]
    assert monitors == []
    if disable is False:
        assert "epoch 0" in out.getvalue() and "3/3" in out.getvalue()
