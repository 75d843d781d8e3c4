"""Checks of the paths a user gives to ``segflow predict``, ``segflow export`` and
``segflow import-model``.

Each returns why a path cannot serve (a short phrase for a
:class:`~segflow.errors.Problem`), so that callers list every bad path at once before any
work. A name that is not valid UTF-8 is refused: SimpleITK aborts the whole process on one.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from segflow.errors import Problem

__all__ = ["access_reason", "name_reason", "output_folder_problems", "readable_path"]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def readable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text for a message, on one line: bytes that are not UTF-8 and control
    characters (a newline in a name) appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace").translate(_CONTROL)


def name_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be handed to the image readers and writers, or None."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return (
            "its name is not valid UTF-8 (the bytes shown as \\x escapes); the image readers "
            "cannot open it: rename it"
        )
    return None


def access_reason(path: Path) -> str | None:
    """Why ``path`` cannot be followed (missing, a broken or looping link, no permission),
    or None when it exists."""
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if err.errno == errno.ENOENT and path.is_symlink():
            return f"is a symbolic link to {readable_path(os.readlink(path))}, which does not exist"
        if err.errno == errno.ENOENT:
            return "does not exist"
        if err.errno == errno.ENOTDIR:
            return "does not exist (a part of the path is a file, not a folder)"
        if err.errno == errno.EACCES:
            return "cannot be accessed: permission denied"
        return f"cannot be accessed: {err.strerror or err}"
    return None


def _nearest_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())


def output_folder_problems(
    output: Path, what: str = "the output folder", *, for_images: bool = True
) -> list[Problem]:
    """Why ``output`` cannot be (or become) a folder to write into: every problem.

    An existing folder, or a link to one, is fine; so is a new path whose nearest existing
    parent is a writable folder. ``for_images``: the image writers will write there, so its
    name must be UTF-8.
    """
    where = readable_path(output)
    reason = name_reason(output) if for_images else None
    if reason is not None:
        return [Problem(where, reason)]
    absolute = output.absolute()
    if output.exists():
        if not output.is_dir():
            return [Problem(where, f"exists and is not a folder; {what} must be a folder")]
        if not os.access(output, os.W_OK | os.X_OK):
            return [Problem(where, "is not writable")]
        return []
    if output.is_symlink():
        return [Problem(where, access_reason(output) or "is a broken symbolic link")]
    existing = _nearest_existing(absolute)
    reason = access_reason(existing)
    if reason is not None:  # a link on the way that leads nowhere
        return [Problem(where, f"cannot be created: {readable_path(existing)} {reason}")]
    if not existing.is_dir():
        return [Problem(where, f"cannot be created: {readable_path(existing)} is not a folder")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem(where, f"cannot be created: {readable_path(existing)} is not writable")]
    return []
