"""What names the files segflow writes and the workflow's wildcards can carry.

Two limits come from outside segflow: a file system allows :data:`NAME_MAX` bytes in one file
or folder name, and Snakemake refuses a wildcard value that ends in one substring repeated
:data:`SNAKEMAKE_PERIODIC_REPEATS` times or more (its ``PeriodicWildcardError``: it takes such
a value for a rule that calls itself without end). The config check (experiment names,
which name folders and the ``{configuration}`` wildcard) and validate-dataset (test case ids,
the predict rule's ``{case}`` wildcard) refuse such names before any job. Standard library
only: the workflow's config check imports it at every Snakemake start.
"""

from __future__ import annotations

import re

__all__ = ["NAME_MAX", "SNAKEMAKE_PERIODIC_REPEATS", "periodic_suffix"]

#: The longest name a file or folder may have on the file systems segflow runs on (bytes).
NAME_MAX = 255
#: Snakemake refuses a wildcard value that ends in one substring repeated this many times.
SNAKEMAKE_PERIODIC_REPEATS = 20
_PERIODIC_SUFFIX = re.compile(rf"(.+?)\1{{{SNAKEMAKE_PERIODIC_REPEATS - 1},}}$", re.S)


def periodic_suffix(value: str) -> tuple[str, int] | None:
    """The substring ``value`` ends in, repeated :data:`SNAKEMAKE_PERIODIC_REPEATS` times or
    more, with its count; None when there is none (Snakemake accepts it as a wildcard)."""
    match = _PERIODIC_SUFFIX.search(value)
    if match is None:
        return None
    unit = match.group(1)
    return unit, len(match.group(0)) // len(unit)
