"""Unpacking an exported model's zip safely.

A zip from elsewhere is untrusted, its manifest included. What may land is decided by the
layout of an exported model (:func:`~segflow.export.bundle.bundle_files`: the top-level
files and ``<configuration>/fold_<k>/checkpoint_final.pt`` of the configurations and folds
the manifest names, and the optional ``<configuration>/plans.json`` of
:func:`~segflow.export.bundle.optional_bundle_files`), not by the manifest's own file list:
the manifest must list every required file and may list the optional ones, and the zip must
hold exactly the listed files and the manifest.

Before anything is written, every entry is checked and every bad one is reported at once: a
file an exported model does not have (listed in the manifest or not), a name that would land
outside the output folder (absolute, drive letter, ``..``, backslash), a name not marked as
UTF-8, two names that differ only by case or Unicode normalization (one file on macOS and
Windows), a symbolic link or other special file, a duplicate name, an encrypted entry or a
compression other than deflate or none, a file the manifest lists that the zip lacks, and
sizes beyond the caps:

* :data:`MAX_UNPACKED_BYTES` (32 GiB) for the total size the entries declare; a model of
  three configurations of five folds, each checkpoint a few hundred MB, is under 10 GB;
* :data:`MAX_COMPRESSION_RATIO` (100:1) for each entry larger than 1 MiB: checkpoints (float
  weights) compress about 1.1:1, while a zip bomb's entries declare hundreds to thousands of
  times their compressed size.

The files are then extracted into a temporary folder beside the output folder; each is
streamed through sha256 and stops as soon as it yields more bytes than it declares (declared
sizes can lie). Every file's hash is compared with the manifest, the folder checked as a
bundle, and only then renamed into place: a bad zip leaves the output folder as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import unicodedata
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.export.bundle import (
    MANIFEST_NAME,
    bundle_files,
    load_bundle,
    make_folder_beside,
    manifest_problems,
    optional_bundle_files,
    unsafe_name_reason,
)
from segflow.io.paths import access_reason, output_folder_problems, readable_path

__all__ = ["MAX_COMPRESSION_RATIO", "MAX_UNPACKED_BYTES", "import_model"]

#: A manifest lists file names and digests; anything larger is not one.
MAX_MANIFEST_BYTES = 16 << 20
#: The most bytes the files of a zip may declare in all.
MAX_UNPACKED_BYTES = 32 << 30
#: The most an entry larger than :data:`_RATIO_FREE_BYTES` may declare per compressed byte.
MAX_COMPRESSION_RATIO = 100
_RATIO_FREE_BYTES = 1 << 20
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_CHUNK = 1 << 20
#: Reading an entry fails with these when the zip is damaged or lies.
_READ_ERRORS = (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, ValueError)


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
    if info.compress_type not in _COMPRESSIONS:
        reasons.append(
            f"is compressed with method {info.compress_type}; an exported model uses deflate "
            "or none"
        )
    if not info.filename.isascii() and not info.flag_bits & 0x800:
        reasons.append("has a name not marked as UTF-8 (read as code page 437)")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_FREE_BYTES and ratio > MAX_COMPRESSION_RATIO:
        reasons.append(
            f"declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
            f"({ratio:.0f}:1, more than {MAX_COMPRESSION_RATIO}:1): a zip bomb, not a model file"
        )
    return reasons


def _collision_problems(names: list[str]) -> list[Problem]:
    """Names that differ only by case or Unicode normalization: one file on macOS and
    Windows, so one could silently replace the other."""
    groups: dict[str, set[str]] = defaultdict(set)
    for name in names:
        groups[unicodedata.normalize("NFC", name.removesuffix("/")).casefold()].add(name)
    return [
        Problem(name, f"differs from {', '.join(repr(o) for o in sorted(group - {name}))} "
                "only by case or Unicode normalization")
        for group in groups.values()
        if len(group) > 1
        for name in sorted(group)
    ]  # fmt: skip


def _size_problems(entries: list[zipfile.ZipInfo], source: str) -> list[Problem]:
    total = sum(i.file_size for i in entries if not i.is_dir())
    if total > MAX_UNPACKED_BYTES:
        return [
            Problem(source, f"its files declare {total:,} bytes in all, more than the "
                    f"{MAX_UNPACKED_BYTES:,} an exported model may unpack to")
        ]  # fmt: skip
    return []


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
    except (*_READ_ERRORS, RecursionError) as err:
        problems.append(Problem(where, f"is not readable JSON: {err}"))
        return None
    found = manifest_problems(manifest, where)
    problems += found
    return None if found else manifest


def _check_archive(
    archive: zipfile.ZipFile, source: str
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The manifest and every problem with the zip's entries, before anything is written."""
    problems: list[Problem] = []
    entries = archive.infolist()
    counts = Counter(info.filename for info in entries)
    problems += [
        Problem(name, f"appears {n} times in the zip") for name, n in counts.items() if n > 1
    ]
    problems += _collision_problems(list(counts))
    for info in entries:
        problems += [Problem(info.filename, reason) for reason in _entry_problems(info)]
    problems += _size_problems(entries, source)
    manifest_info = next((i for i in entries if i.filename == MANIFEST_NAME), None)
    if manifest_info is None:
        problems.append(Problem(MANIFEST_NAME, "is missing: not an exported segflow model"))
        return None, problems
    if _entry_problems(manifest_info) or counts[MANIFEST_NAME] > 1:
        return None, problems  # reported above; its content cannot be trusted to be JSON
    manifest = _read_manifest(archive, manifest_info, MANIFEST_NAME, problems)
    if manifest is None:
        return None, problems
    listed = set(manifest["files"])
    configurations = {k: tuple(v) for k, v in manifest["configurations"].items()}
    previous_stages = {k: tuple(v) for k, v in manifest.get("previous_stages", {}).items()}
    required = set(bundle_files(configurations, previous_stages))
    expected = required | set(optional_bundle_files({**configurations, **previous_stages}))
    folders = {parent for name in expected for parent in _parents(name)}
    files = {i.filename for i in entries if not i.is_dir()}
    problems += [
        Problem(name, "is listed in manifest.json but is no file of an exported model")
        for name in sorted(listed - expected)
    ]
    problems += [
        Problem(name, "is needed by an exported model but manifest.json does not list it")
        for name in sorted(required - listed)
    ]
    problems += [
        Problem(name, "is not a file of an exported model, nor listed in manifest.json")
        for name in sorted(files - expected - listed - {MANIFEST_NAME})
    ]
    problems += [
        Problem(info.filename, "is a folder an exported model does not have")
        for info in entries
        if info.is_dir() and info.filename.removesuffix("/") not in folders
    ]
    problems += [
        Problem(name, "is listed in manifest.json but not in the zip")
        for name in sorted((listed & expected) - files)
    ]
    return manifest, problems


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _check_output(output: Path) -> list[Problem]:
    where = readable_path(output)
    if output.is_symlink():  # it would be replaced, not filled
        return [Problem(where, "is a symbolic link; import into a new or empty folder itself")]
    problems = output_folder_problems(output, "the model", for_images=False)
    if not problems and output.is_dir() and any(output.iterdir()):
        problems.append(Problem(where, "is not empty; import into a new or empty folder"))
    return problems


def _check_source(source: Path) -> list[Problem]:
    reason = access_reason(source)
    if reason is None and not source.is_file():
        reason = "is not a file; give the model's zip (segflow export --zip)"
    return [] if reason is None else [Problem(readable_path(source), reason)]


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
        except _READ_ERRORS as err:
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

    Only the files of an exported model's layout may land (see the module's docstring);
    the declared sizes are capped at :data:`MAX_UNPACKED_BYTES` (32 GiB) in all and
    :data:`MAX_COMPRESSION_RATIO` (100:1) per entry above 1 MiB.

    Raises:
        SegflowError: every bad entry at once (nothing is written then), or files that do
            not match the manifest (the partly extracted copy is removed); an ``output_dir``
            that is a file, a link, not empty or not writable.
    """
    source, output = Path(zip_path), Path(output_dir)
    title = f"cannot import {readable_path(source)}"
    problems = _check_output(output)
    source_problems = _check_source(source)
    if source_problems:
        raise SegflowError(title, [*problems, *source_problems])
    try:
        archive = zipfile.ZipFile(source)
    except UnicodeDecodeError:
        raise SegflowError(title, [*problems, Problem(readable_path(source),
                           "an entry's name is marked UTF-8 but is not")]) from None  # fmt: skip
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as err:
        raise SegflowError(
            title, [*problems, Problem(readable_path(source), f"not a zip file: {err}")]
        ) from None
    with archive:
        manifest, entry_problems = _check_archive(archive, readable_path(source))
        problems += entry_problems
        if not problems:
            existing = next(
                p for p in (output.absolute(), *output.absolute().parents) if p.exists()
            )
            problems += _check_space(archive, existing)
        if problems or manifest is None:
            raise SegflowError(title, problems)
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
