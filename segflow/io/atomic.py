"""Atomic writes: an artifact appears under its final name complete, or not at all.

Every file is first written to a temporary name in the same folder (so the final rename
stays on one file system and is atomic) and renamed into place only after it was flushed
to disk. A job killed halfway leaves at most a ``.tmp-*`` file, which no rule accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError

__all__ = ["atomic_path", "check_output_file", "read_json", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The caller writes the temporary path however it likes (numpy, SimpleITK, torch...).
    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target = check_output_file(target)
    # Keep the real suffix last: some writers (SimpleITK) choose the format by it.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".tmp-{target.stem}-", suffix="".join(target.suffixes), dir=target.parent
    )
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


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
