"""The files input functions read, parsed once per file version.

Snakemake calls a rule's input functions once per job: building the DAG of a 1,000-case
dataset would read and index the dataset report a thousand times. Each reader here is keyed by
the file's path and modification time, so a file is parsed once per version and a rewritten
file (a rerun checkpoint) is read again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from segflow.batches import case_batches
from segflow.io.atomic import read_json
from segflow.layout import model_name
from segflow.preprocessing.sharing import preprocessed_owners

__all__ = [
    "FileVersion",
    "clear",
    "file_version",
    "json_content",
    "preprocessed_folders",
    "report_batches",
    "report_index",
]

#: ``(path, modification time in ns)``: a file's version.
FileVersion = tuple[str, int]


def file_version(path: str | os.PathLike[str]) -> FileVersion:
    """The version of ``path`` now."""
    return str(path), os.stat(path).st_mtime_ns


@functools.lru_cache(maxsize=16)
def _json(path: str, mtime_ns: int) -> Any:
    return read_json(path)


def json_content(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of ``path`` (do not modify: shared by every caller of this version)."""
    return _json(*file_version(path))


@functools.lru_cache(maxsize=4)
def _report_index(path: str, mtime_ns: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    content = _json(path, mtime_ns)
    return content, {case["case_id"]: case for case in content["training_cases"]}


def report_index(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A dataset report (``validate_dataset``'s) and its training cases by id."""
    return _report_index(*file_version(path))


@functools.lru_cache(maxsize=8)
def _batches(path: str, mtime_ns: int, size: int) -> dict[str, list[str]]:
    # The same split as `segflow fingerprint-batch` finds a batch's cases with.
    return case_batches(tuple(_report_index(path, mtime_ns)[1]), size)


def report_batches(path: str | os.PathLike[str], size: int) -> dict[str, list[str]]:
    """Batch name -> training case ids of a dataset report, in chunks of ``size``."""
    return _batches(*file_version(path), size)


@functools.lru_cache(maxsize=4)
def _owners(
    versions: tuple[tuple[str | None, str, int], ...],
) -> dict[tuple[str | None, str], str]:
    owners = preprocessed_owners(
        {plans: _json(path, mtime_ns) for plans, path, mtime_ns in versions}
    )
    return {key: model_name(conf, plans) for key, (plans, conf) in owners.items()}


def preprocessed_folders(
    plans_files: Sequence[tuple[str | None, str | os.PathLike[str]]],
) -> dict[tuple[str | None, str], str]:
    """``(plans name, configuration)`` -> the name of the preprocessed folder it trains on
    (:func:`segflow.preprocessing.sharing.preprocessed_owners`), for the plans files given as
    ``(plans name, path)``; None names ``plans.json``."""
    return _owners(tuple((plans, *file_version(path)) for plans, path in plans_files))


def clear() -> None:
    """Forget every parsed file (tests)."""
    for cached in (_json, _report_index, _batches, _owners):
        cached.cache_clear()
