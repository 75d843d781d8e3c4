"""Unpacking an exported model's zip safely.

A zip from elsewhere is untrusted. Before anything is written, every entry is checked and
every bad one is reported at once: a name that would land outside the output folder
(absolute, drive letter, ``..``, backslash), a symbolic link or other special file, a
duplicate name, an encrypted entry, or a file the manifest does not list (and a manifest
file the zip lacks). The files are then extracted into a temporary folder beside the output
folder, each checked against the sha256 in the manifest and against its declared size while
it is written, the folder checked as a bundle, and only then renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.export.bundle import (
    MANIFEST_NAME,
    load_bundle,
    make_folder_beside,
    manifest_problems,
    unsafe_name_reason,
)

__all__ = ["import_model"]

#: A manifest lists file names and digests; anything larger is not one.
MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 20


def _entry_problems(info: zipfile.ZipInfo) -> list[str]:
    """Why one entry cannot be extracted, judged from its header alone."""
    reasons = []
    reason = unsafe_name_reason(info.filename)
    if reason is not None:
        reasons.append(reason)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        reasons.append("is a symbolic link")
    elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: type not recorded
        reasons.append("is not a regular file or folder")
    if info.flag_bits & 0x1:
        reasons.append("is encrypted")
    return reasons


def _read_manifest(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, problems: list[Problem]
) -> dict[str, Any] | None:
    if info.file_size > MAX_MANIFEST_BYTES:
        problems.append(
            Problem(where, f"declares {info.file_size} bytes: too large for a manifest")
        )
        return None
    try:
        with archive.open(info) as fh:
            manifest = json.loads(fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        problems.append(Problem(where, f"is not readable JSON: {err}"))
        return None
    found = manifest_problems(manifest, where)
    problems += found
    return None if found else manifest


def _check_archive(archive: zipfile.ZipFile) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The manifest and every problem with the zip's entries, before anything is written."""
    problems: list[Problem] = []
    entries = archive.infolist()
    counts = Counter(info.filename for info in entries)
    problems += [
        Problem(name, f"appears {n} times in the zip") for name, n in counts.items() if n > 1
    ]
    for info in entries:
        problems += [Problem(info.filename, reason) for reason in _entry_problems(info)]
    manifest_info = next((i for i in entries if i.filename == MANIFEST_NAME), None)
    if manifest_info is None:
        problems.append(Problem(MANIFEST_NAME, "is missing: not an exported segflow model"))
        return None, problems
    manifest = _read_manifest(archive, manifest_info, MANIFEST_NAME, problems)
    if manifest is None:
        return None, problems
    listed = manifest["files"]
    files = {i.filename for i in entries if not i.is_dir()}
    problems += [
        Problem(name, "is not listed in manifest.json")
        for name in sorted(files - set(listed) - {MANIFEST_NAME})
    ]
    problems += [
        Problem(name, "is listed in manifest.json but not in the zip")
        for name in sorted(set(listed) - files)
    ]
    return manifest, problems


def _check_output(output: Path) -> list[Problem]:
    if not output.exists() and not output.is_symlink():
        return []
    if not output.is_dir() or output.is_symlink():
        return [Problem(str(output), "exists and is not a folder")]
    if any(output.iterdir()):
        return [Problem(str(output), "is not empty; import into a new or empty folder")]
    return []


def _check_space(archive: zipfile.ZipFile, folder: Path) -> list[Problem]:
    needed = sum(i.file_size for i in archive.infolist() if not i.is_dir())
    free = shutil.disk_usage(folder).free
    if needed > free:
        return [Problem(str(folder), f"the zip unpacks to {needed} bytes but only {free} are free")]
    return []


def _extract(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, folder: Path, digest: str | None
) -> str | None:
    """Write one file under ``folder``, checking its size and (unless None) its sha256;
    why it failed, or None."""
    target = folder / info.filename
    if not target.resolve().is_relative_to(folder.resolve()):
        return "would be written outside the output folder"
    target.parent.mkdir(parents=True, exist_ok=True)
    sha, written = hashlib.sha256(), 0
    with archive.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                return f"holds more than the {info.file_size} bytes it declares"
            sha.update(chunk)
            dst.write(chunk)
    if written != info.file_size:
        return f"holds {written} bytes, not the {info.file_size} it declares"
    if digest is not None and sha.hexdigest() != digest:
        return "its sha256 differs from manifest.json: the file was changed or damaged"
    return None


def _extract_all(
    archive: zipfile.ZipFile, manifest: dict[str, Any], folder: Path, source: Path
) -> None:
    """Extract every file (all checked by :func:`_check_archive`), then report every one
    that does not match the manifest."""
    problems = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        digest = None if info.filename == MANIFEST_NAME else manifest["files"][info.filename]
        try:
            reason = _extract(archive, info, folder, digest)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            reason = f"cannot be extracted: {err or type(err).__name__}"
        if reason is not None:
            problems.append(Problem(info.filename, reason))
    if problems:
        raise SegflowError(f"cannot import {source}: its files do not match its manifest", problems)


def import_model(zip_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> Path:
    """Unpack an exported model's zip into ``output_dir``, checking everything first.

    Args:
        zip_path: a zip written by :func:`~segflow.export.bundle.export_model`.
        output_dir: where the model folder goes; must not exist, or be an empty folder.

    Returns:
        ``output_dir``.

    Raises:
        SegflowError: every bad entry at once (nothing is written then), or files that do
            not match the manifest (the partly extracted copy is removed).
    """
    source, output = Path(zip_path), Path(output_dir)
    problems = _check_output(output)
    if not source.is_file():
        raise SegflowError(
            f"cannot import {source}", [*problems, Problem(str(source), "does not exist")]
        )
    try:
        archive = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as err:
        raise SegflowError(
            f"cannot import {source}", [*problems, Problem(str(source), f"not a zip file: {err}")]
        ) from None
    with archive:
        manifest, entry_problems = _check_archive(archive)
        problems += entry_problems
        if not problems:
            existing = next(
                p for p in (output.absolute(), *output.absolute().parents) if p.exists()
            )
            problems += _check_space(archive, existing)
        if problems or manifest is None:
            raise SegflowError(f"cannot import {source}", problems)
        folder = make_folder_beside(output, ".tmp-")
        try:
            _extract_all(archive, manifest, folder, source)
            try:
                load_bundle(folder, verify=False)  # every file's sha256 was checked above
            except SegflowError as err:
                raise SegflowError(
                    err.summary.replace(str(folder), str(source)),
                    [
                        Problem(p.where.replace(str(folder), str(source)), p.message)
                        for p in err.problems
                    ],
                ) from None
            if output.exists():
                output.rmdir()  # empty, checked above
            os.replace(folder, output)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
            raise
    return output
