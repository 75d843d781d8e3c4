"""Atomic writes: an artifact appears under its final name complete, or not at all.

Every file is first written to a temporary name in the same folder (so the final rename
stays on one file system and is atomic) and renamed into place only after it was flushed
to disk. A job killed halfway leaves at most a ``.tmp-*`` file, which no rule accepts.

A write that fails because the file system is full (or the user's quota is spent) ends in
one :class:`DiskFullError` naming the file, whatever the writer raised: ``OSError`` with
``ENOSPC`` from Python, but also blosc2's, ITK's and PyTorch's ``RuntimeError``, which name
neither the file nor the cause (:func:`disk_full_error` then looks at the free space left).
The temporary file is removed, so the same command completes once space is freed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segflow.errors import DiskFullError, Problem, SegflowError, printable
from segflow.io.names import NAME_MAX

__all__ = [
    "FULL_DISK_MARGIN",
    "atomic_path",
    "check_output_file",
    "disk_full_error",
    "read_json",
    "temporary_prefix",
    "write_json",
    "write_text",
]

#: A write that failed with less than this much space left on its file system is taken to
#: have failed for want of space (blosc2, ITK and PyTorch say only that writing failed).
FULL_DISK_MARGIN = 1 << 20
#: The errors a file system gives when it is full (ENOSPC) or the user's quota is spent.
_NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}


def _mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged write can still use on ``folder``'s file system (None: unknown,
    also for a file system that reports no size). Also 0 when no inode is left, since no file
    can then be made."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    if stat.f_blocks == 0:  # a file system that reports no size (some FUSE mounts): unknown
        return None
    if stat.f_files and stat.f_favail == 0:
        return 0
    return stat.f_bavail * stat.f_frsize


def disk_full_error(target: str | os.PathLike[str], err: BaseException) -> DiskFullError | None:
    """The one-line error for a write of ``target`` that failed with ``err`` because its file
    system is full; None when something else made it fail.

    ``OSError`` tells by its ``errno`` (``ENOSPC``, ``EDQUOT``); the other ``OSError`` and
    ``RuntimeError`` of writers that swallow it (blosc2, ITK and PyTorch raise
    ``RuntimeError``) count when less than :data:`FULL_DISK_MARGIN` is left on the file
    system. Any other exception is never the disk's.
    """
    target = Path(target)
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        cause = _NO_SPACE[err.errno]
    elif not isinstance(err, OSError | RuntimeError):
        return None  # a mistake of the caller's, an interruption, a user error: not the disk's
    else:
        free = _free_bytes(target.parent)
        if free is None or free >= FULL_DISK_MARGIN:
            return None
        cause = "the disk is full"
    free = _free_bytes(target.parent)
    left = "" if free is None else f", {free:,} bytes free"
    return DiskFullError(
        f"cannot write {printable(str(target))}: {cause} (file system at "
        f"{printable(str(_mount_point(target.parent)))}{left}); free some space and run the "
        "same command again: what is already written is kept"
    )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The caller writes the temporary path however it likes (numpy, SimpleITK, torch...).
    On any exception the temporary file is removed and ``target`` is left untouched.

    Raises:
        DiskFullError: the write failed because the file system is full (see
            :func:`disk_full_error`), whatever the writer raised.
    """
    target = check_output_file(target)
    try:
        # Keep the real suffix last: some writers (SimpleITK) choose the format by it.
        fd, tmp_name = tempfile.mkstemp(
            prefix=temporary_prefix(target), suffix=_suffixes(target), dir=target.parent
        )
    except OSError as err:
        full = disk_full_error(target, err)
        if full is not None:
            raise full from None
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; artifacts get the permissions any new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        # Judged before the partial file is removed: that frees the space it took.
        full = disk_full_error(target, err)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if full is not None:
            raise full from None
        raise


#: Bytes ``tempfile.mkstemp`` puts between the prefix and the suffix.
_RANDOM_PART = 8


def _suffixes(target: Path) -> str:
    """The target's suffixes, which writers choose the format by (``.nii.gz``); the last two
    only when a dotted name makes them long (``sub.01.ses.02...``)."""
    suffixes = "".join(target.suffixes)
    return (
        suffixes if len(os.fsencode(suffixes)) <= NAME_MAX // 4 else "".join(target.suffixes[-2:])
    )


def temporary_prefix(target: str | os.PathLike[str]) -> str:
    """How the temporary files of :func:`atomic_path` for ``target`` begin:
    ``.tmp-<target stem>-``, the stem shortened so that the temporary name stays within
    :data:`NAME_MAX` bytes whenever the target's name does (a case id of 240 bytes)."""
    target = Path(target)
    budget = NAME_MAX - len(".tmp--") - _RANDOM_PART - len(os.fsencode(_suffixes(target)))
    # Cut in bytes; a character cut in two is kept as its bytes (surrogate escapes).
    return f".tmp-{os.fsdecode(os.fsencode(target.stem)[: max(budget, 1)])}-"


def check_output_file(target: str | os.PathLike[str]) -> Path:
    """Check that ``target`` can be written as a file, and create its folder.

    Called before any work by commands that write one file, so that a wrong output path
    fails at once with a clear message instead of a traceback at the end.

    Raises:
        SegflowError: ``target`` is a folder, or its folder cannot be made (a file of that
            name is in the way, no permission).
    """
    target = Path(target)
    if target.is_dir():
        raise SegflowError(
            f"cannot write {target}",
            [Problem(str(target), "is a folder; expected the name of a file to write")],
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        full = disk_full_error(target, err)
        if full is not None:
            raise full from None
        raise SegflowError(
            f"cannot write {target}",
            [Problem(str(target.parent), f"cannot be made a folder ({err.strerror or err})")],
        ) from None
    return target


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``target`` atomically."""
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`write_json` (or any JSON file)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
