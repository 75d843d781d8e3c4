"""segflow import-model against a corpus of hostile zips: each is refused with a clear
message naming the entry, and the output folder stays absent (nothing lands, no temporary
folder is left beside it).

What may land is decided by the layout of an exported model, not by the zip's own manifest;
sizes are capped before extraction and checked while streaming.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segflow.errors import SegflowError
from segflow.export import export_model, import_model, importing


@pytest.fixture(scope="module")
def exported(experiment, tmp_path_factory) -> Path:
    """The zip of the tiny experiment's exported model."""
    root = tmp_path_factory.mktemp("hostile_export")
    export_model(**experiment.export_arguments(output_dir=root / "model",
                                               zip_path=root / "model.zip"))  # fmt: skip
    return root / "model.zip"


def _entries(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def _rezip(
    source: Path,
    target: Path,
    *,
    replace: dict[str, bytes] | None = None,
    extra: list[tuple[zipfile.ZipInfo | str, bytes]] = (),
    listed: dict[str, bytes] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A copy of ``source`` with entries replaced or added; ``listed`` files are also added to
    the manifest with their true sha256 (so the manifest vouches for them)."""
    entries = {**_entries(source), **(replace or {})}
    manifest = json.loads(entries["manifest.json"])
    for name, data in (listed or {}).items():
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
        entries[name] = data
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for info, data in extra:
            archive.writestr(info, data)
    return target


def _refused(zip_path: Path, output: Path) -> str:
    with pytest.raises(SegflowError) as err:
        import_model(zip_path, output)
    assert not output.exists() and not output.is_symlink()
    if output.parent.exists():
        assert not [p for p in output.parent.iterdir() if p.name.startswith(".tmp-")]
    return str(err.value)


def _patch_central_size(data: bytearray, name: bytes, size: int) -> None:
    start = data.rfind(name) - 46  # the name follows the 46-byte central header
    assert data[start : start + 4] == b"PK\x01\x02"
    struct.pack_into("<I", data, start + 24, size)


def test_a_listed_extra_file_does_not_land(exported, tmp_path):
    """The manifest vouches for them with the right sha256, yet no exported model has them."""
    bad = _rezip(exported, tmp_path / "bad.zip",
                 listed={"run_me.sh": b"#!/bin/sh\nrm -rf ~\n",
                         "2d/fold_0/extra.pt": b"not a checkpoint"})  # fmt: skip
    text = _refused(bad, tmp_path / "out" / "model")
    assert "run_me.sh: is listed in manifest.json but is no file of an exported model" in text
    assert "2d/fold_0/extra.pt: is listed in manifest.json but is no file" in text


def test_an_unlisted_required_file_and_a_stray_folder(exported, tmp_path):
    entries = _entries(exported)
    manifest = json.loads(entries["manifest.json"])
    del manifest["files"]["plans.json"]
    folder = zipfile.ZipInfo("tools/")
    bad = _rezip(exported, tmp_path / "bad.zip",
                 replace={"manifest.json": json.dumps(manifest).encode()},
                 extra=[(folder, b"")])  # fmt: skip
    text = _refused(bad, tmp_path / "model")
    assert "plans.json: is needed by an exported model but manifest.json does not list it" in text
    assert "tools/: is a folder an exported model does not have" in text


def test_a_zip_bomb_is_refused_before_extraction(exported, tmp_path):
    """64 MiB of zeros deflate to about 64 KB: a ratio of about 1000:1."""
    bomb = bytes(64 << 20)
    bad = _rezip(exported, tmp_path / "bad.zip", replace={"2d/fold_0/checkpoint_final.pt": bomb})
    assert bad.stat().st_size < 1 << 20
    text = _refused(bad, tmp_path / "model")
    assert f"2d/fold_0/checkpoint_final.pt: declares {64 << 20:,} bytes from" in text
    assert f"more than {importing.MAX_COMPRESSION_RATIO}:1): a zip bomb" in text


def test_the_total_declared_size_is_capped(exported, tmp_path, monkeypatch):
    with zipfile.ZipFile(exported) as archive:
        total = sum(i.file_size for i in archive.infolist())
    monkeypatch.setattr(importing, "MAX_UNPACKED_BYTES", total - 1)
    text = _refused(exported, tmp_path / "model")
    assert f"its files declare {total:,} bytes in all, more than the {total - 1:,}" in text


def test_a_lying_declared_size_stops_the_stream(exported, tmp_path):
    """An entry that declares 1000 bytes (no ratio to see) but inflates to 64 MiB: reading
    stops at what it declares, and the mismatch refuses the zip."""
    bad = _rezip(exported, tmp_path / "bad.zip",
                 replace={"2d/fold_0/checkpoint_final.pt": bytes(64 << 20)})  # fmt: skip
    data = bytearray(bad.read_bytes())
    _patch_central_size(data, b"2d/fold_0/checkpoint_final.pt", 1000)
    bad.write_bytes(bytes(data))
    text = _refused(bad, tmp_path / "model")
    assert "2d/fold_0/checkpoint_final.pt: cannot be extracted: Bad CRC-32" in text


def test_links_traversal_and_special_files(exported, tmp_path):
    link = zipfile.ZipInfo("README.md")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("fingerprint.json")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    entries = _entries(exported)
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        for name, data in entries.items():
            if name not in ("README.md", "fingerprint.json"):
                archive.writestr(name, data)
        archive.writestr(link, "/etc/passwd")
        archive.writestr(fifo, "{}")
        archive.writestr("2d/../../escaped.txt", b"x")
        archive.writestr("/etc/cron.d/x", b"x")
    text = _refused(tmp_path / "bad.zip", tmp_path / "model")
    assert "README.md: is a symbolic link" in text
    assert "fingerprint.json: is not a regular file or folder" in text
    assert "2d/../../escaped.txt: climbs out of the folder" in text
    assert "/etc/cron.d/x: is an absolute path" in text
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_names_that_collide_or_are_not_utf8(exported, tmp_path):
    extra = [("PLANS.json", b"{}"), ("caf\u00e9", b"x"), ("cafe\u0301", b"x")]
    bad = _rezip(exported, tmp_path / "bad.zip", extra=extra)
    text = _refused(bad, tmp_path / "model")
    assert "PLANS.json: differs from 'plans.json' only by case or Unicode normalization" in text
    assert "caf\u00e9: differs from 'cafe\u0301' only by case or Unicode normalization" in text
    # A name of bytes that are not UTF-8: once without the UTF-8 flag (zipfile reads it as
    # code page 437), once with it (zipfile cannot read the zip's directory at all).
    for flag, expected in [(0, "has a name not marked as UTF-8"),
                           (0x800, "an entry's name is marked UTF-8 but is not")]:  # fmt: skip
        source = _rezip(exported, tmp_path / f"src{flag}.zip", extra=[("cafX", b"x")])
        with zipfile.ZipFile(source) as archive:
            local = archive.getinfo("cafX").header_offset
        data = bytearray(source.read_bytes())
        central = data.rfind(b"cafX") - 46
        for start, offset in ((local, 6), (central, 8)):  # the flag bits of both headers
            (bits,) = struct.unpack_from("<H", data, start + offset)
            struct.pack_into("<H", data, start + offset, bits | flag)
        data = bytearray(bytes(data).replace(b"cafX", b"caf\xe9"))
        bad = tmp_path / f"bad{flag}.zip"
        bad.write_bytes(bytes(data))
        assert expected in _refused(bad, tmp_path / "model")


def test_a_manifest_nested_too_deep_is_refused(exported, tmp_path):
    entries = {**_entries(exported), "manifest.json": b"[" * 100_000}
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    text = _refused(bad, tmp_path / "model")
    assert "manifest.json: is not readable JSON: maximum recursion depth" in text


def test_other_compressions_are_refused(exported, tmp_path):
    bad = _rezip(exported, tmp_path / "bad.zip", compression=zipfile.ZIP_BZIP2)
    text = _refused(bad, tmp_path / "model")
    assert "plans.json: is compressed with method 12; an exported model uses deflate" in text


def test_a_wrong_hash_leaves_nothing(exported, tmp_path):
    bad = _rezip(exported, tmp_path / "bad.zip", replace={"plans.json": b"{}"})
    text = _refused(bad, tmp_path / "out" / "model")
    assert "plans.json: its sha256 differs from manifest.json" in text
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_outputs_and_sources_that_cannot_be(exported, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    for output, expected in [
        (tmp_path / "file", "exists and is not a folder"),
        (tmp_path / "file" / "model", f"cannot be created: {tmp_path / 'file'} is not a folder"),
        (tmp_path / "link", "is a symbolic link; import into a new or empty folder itself"),
    ]:
        with pytest.raises(SegflowError) as err:
            import_model(exported, output)
        assert f"{output}: {expected}" in str(err.value)
    assert [p.name for p in (tmp_path / "empty").iterdir()] == []
    with pytest.raises(SegflowError) as err:
        import_model(tmp_path / "empty", tmp_path / "model")
    assert f"{tmp_path / 'empty'}: is not a file; give the model's zip" in str(err.value)


def test_the_command_line_refuses_without_a_traceback(exported, tmp_path):
    bad = _rezip(exported, tmp_path / "bad.zip", listed={"run_me.sh": b"x"})
    run = subprocess.run(
        [sys.executable, "-m", "segflow", "import-model", str(bad), "-o", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1
    assert "run_me.sh: is listed in manifest.json but is no file of an exported model" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "m").exists()


def test_export_refuses_outputs_and_zips_that_cannot_be(experiment, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.zip").mkdir()
    for overrides, expected in [
        ({"output_dir": tmp_path / "file"}, f"{tmp_path / 'file'}: exists and is not a folder"),
        ({"output_dir": tmp_path / "file" / "model"},
         f"{tmp_path / 'file' / 'model'}: cannot be created: {tmp_path / 'file'} is not a folder"),
        ({"output_dir": tmp_path / "model", "zip_path": tmp_path / "folder.zip"},
         f"{tmp_path / 'folder.zip'}: is a folder; name the zip file to write"),
        ({"output_dir": tmp_path / "model", "zip_path": tmp_path / "file" / "model.zip"},
         f"{tmp_path / 'file' / 'model.zip'}: cannot be written: {tmp_path / 'file'} exists "
         "and is not a folder"),
    ]:  # fmt: skip
        with pytest.raises(SegflowError, match="cannot export the model") as err:
            export_model(**experiment.export_arguments(**overrides))
        assert expected in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.zip"]
