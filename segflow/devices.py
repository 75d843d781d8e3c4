"""The device names segflow takes (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), checked
the same way by the workflow's config and by :func:`segflow.compute.choose_device`.
Standard library only: the rules import it at every Snakemake start."""

from __future__ import annotations

import difflib
import re

__all__ = ["DEVICE_NAMES", "device_problem"]

#: The device names segflow.compute.choose_device takes (``cuda:N`` for the N-th GPU).
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# Names people write for a device, and the name segflow uses for it.
_DEVICE_ALIASES = {
    "gpu": "cuda",
    "nvidia": "cuda",
    "cuda0": "cuda:0",
    "metal": "mps",
    "apple": "mps",
}


def device_problem(name: str) -> str | None:
    """What is wrong with a device name (``None``: nothing), with the closest valid name."""
    lowered = name.lower()
    if _DEVICE.fullmatch(lowered):
        return None
    close = _DEVICE_ALIASES.get(lowered) or next(
        iter(difflib.get_close_matches(lowered, ["auto", "cpu", "cuda", "cuda:0", "mps"], n=1)),
        None,
    )
    hint = f"; did you mean '{close}'?" if close else ""
    return f"unknown device '{name}'{hint} (valid: {', '.join(DEVICE_NAMES)})"
