"""What the workflow's jobs need from Apptainer (`snakemake --use-singularity`).

Snakemake runs each job as ``apptainer exec --home <working directory> <apptainer args>
<image> bash -c '<command>'``: the working directory is mounted (as the home folder, so the
user's real home is not), nothing else of the host's files but Apptainer's defaults.
:func:`apptainer_args` adds a ``--bind`` for each folder the jobs read or write outside the
working directory (the dataset, the results, ...) and ``--nv`` when a job may use a CUDA GPU.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from segflow.errors import Problem, SegflowError

__all__ = ["apptainer_args"]

_BIND_OPTIONS = ("--bind", "-B")


def _bound_sources(tokens: list[str]) -> list[Path]:
    """The host paths that ``--bind``/``-B`` options among ``tokens`` mount at themselves."""
    sources = []
    for i, token in enumerate(tokens):
        if token in _BIND_OPTIONS and i + 1 < len(tokens):
            specs = tokens[i + 1]
        elif token.startswith(tuple(f"{o}=" for o in _BIND_OPTIONS)):
            specs = token.split("=", 1)[1]
        else:
            continue
        # src[:dest[:options]], several separated by commas; only a folder mounted at its own
        # path is where the jobs look for it.
        for spec in filter(None, specs.split(",")):
            source, dest = [*spec.split(":"), spec][:2]
            if _normal(Path(source)) == _normal(Path(dest)):
                sources.append(Path(source))
    return sources


def _normal(path: Path) -> Path:
    """``path`` made absolute, ``..`` and ``.`` removed (symbolic links kept)."""
    return Path(os.path.normpath(path.absolute()))


def _within(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def apptainer_args(given: str, paths: Iterable[str | Path], cwd: Path, gpu: bool) -> str:
    """``given`` (the user's ``--apptainer-args``) with what segflow's jobs need added.

    Args:
        given: the arguments Snakemake was given; kept first and as they are.
        paths: files and folders the jobs read or write (relative to ``cwd`` or absolute);
            each outside ``cwd`` and not already bound is bound at the same path, as given
            and, where that differs, with its symbolic links resolved.
        cwd: the working directory of the jobs, which Snakemake mounts itself.
        gpu: add ``--nv`` (the host's NVIDIA driver and GPUs) unless given has it.

    Running the result through this function again adds nothing, so a job that Snakemake
    starts with these arguments (on a cluster node) does not repeat them.
    """
    tokens = shlex.split(given)
    added: list[str] = []
    if gpu and not {"--nv", "--nvccli"} & set(tokens):
        added.append("--nv")
    mounted = [_normal(cwd), cwd.resolve()]
    bound = [_normal(p) for p in _bound_sources(tokens)]
    candidates: list[Path] = []
    for path in paths:
        absolute = _normal(cwd / path)
        for candidate in (absolute, absolute.resolve()):
            if candidate not in candidates:
                candidates.append(candidate)
    # Parents first, so a folder inside another one bound is not bound again; then bound in
    # the order given.
    chosen = []
    for candidate in sorted(candidates, key=lambda p: len(p.parts)):
        if not (_within(candidate, mounted) or _within(candidate, bound)):
            chosen.append(candidate)
            bound.append(candidate)
    # Apptainer reads ':' in a bind as source:destination and ',' as a list: such a folder
    # cannot be mounted at its own path.
    unbindable = [Problem(str(c), "holds ':' or ','") for c in chosen if {":", ","} & set(str(c))]
    if unbindable:
        raise SegflowError(
            "apptainer cannot mount these folders (--bind takes ':' and ',' as separators); "
            "rename them, or link them under names without these characters",
            unbindable,
        )
    for candidate in candidates:
        if candidate in chosen:
            added += ["--bind", str(candidate)]
    return " ".join(part for part in (given.strip(), shlex.join(added)) if part)
