"""Progress bars for the stages that take minutes: training epochs and case prediction.

:class:`ProgressBar` is tqdm's bar without tqdm's monitor thread. tqdm starts that thread,
which wakes every 10 s, for every bar, even a disabled one (``disable=True``, or a bar on a
stream that is not a terminal, as in a Snakemake job), and never stops it for disabled bars:
every training job and every prediction would otherwise keep a daemon thread alive until the
interpreter shuts down. The monitor only matters for bars that update rarely with a large
``miniters``; segflow's bars update every step.
"""

from __future__ import annotations

from tqdm import tqdm

__all__ = ["ProgressBar"]


class ProgressBar(tqdm):
    """A tqdm bar that starts no monitor thread."""

    monitor_interval = 0
