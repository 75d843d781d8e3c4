"""import_model unpacks an exported zip and refuses any unsafe or damaged one whole."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
import struct
import zipfile

import pytest

from segflow.errors import SegflowError
from segflow.export import export_model, import_model, load_bundle, run_import


@pytest.fixture(scope="module")
def exported(experiment, tmp_path_factory):
    """(model folder, its zip)."""
    root = tmp_path_factory.mktemp("exported")
    folder = export_model(
        **experiment.export_arguments(output_dir=root / "model", zip_path=root / "model.zip")
    )
    return folder, root / "model.zip"


def _entries(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _tampered(source, target, *, replace=None, drop=(), extra=(), list_extra=False):
    """A copy of the zip ``source`` with entries replaced, dropped or added.

    ``extra`` holds (ZipInfo or name, bytes); with ``list_extra`` they are also added to the
    manifest with their true sha256, so that only what is wrong with the entry itself shows.
    """
    entries = _entries(source)
    manifest = json.loads(entries["manifest.json"])
    for info, data in extra:
        name = info.filename if isinstance(info, zipfile.ZipInfo) else info
        if list_extra:
            manifest["files"][name] = hashlib.sha256(data).hexdigest()
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            if name not in drop:
                archive.writestr(name, (replace or {}).get(name, data))
        for info, data in extra:
            archive.writestr(info, data)
    return target


def _symlink(name, target):
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def test_a_zip_round_trip_gives_identical_files(exported, tmp_path):
    folder, zip_path = exported
    names = list(_entries(zip_path))
    assert names[0] == "manifest.json"
    assert set(names) == set(_files(folder))  # relative names, no top-level folder
    with zipfile.ZipFile(zip_path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    output = import_model(zip_path, tmp_path / "imported")
    assert output == tmp_path / "imported"
    assert _files(output) == _files(folder)
    assert load_bundle(output).configurations == {"2d": (0, 1), "3d_fullres": (0, 1)}
    assert [p.name for p in tmp_path.iterdir()] == ["imported"]


def _without_metadata(data: bytes) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    return model.SerializeToString()


def test_the_zip_is_reproducible(experiment, exported, tmp_path):
    again = tmp_path / "again.zip"
    export_model(**experiment.export_arguments(output_dir=tmp_path / "model", zip_path=again))
    first = _entries(exported[1])
    # torch.save embeds a random serialization id, so checkpoints (and their digests) differ,
    # and with them the checkpoint sha256 each ONNX network records; the networks do not.
    for name, data in _entries(again).items():
        if name.endswith(".onnx"):
            assert _without_metadata(data) == _without_metadata(first[name]), name
        elif not name.endswith(".pt") and name != "manifest.json":
            assert data == first[name], name
    with zipfile.ZipFile(again) as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_an_empty_output_folder_is_accepted_and_the_import_logged(exported, tmp_path, caplog):
    (tmp_path / "imported").mkdir()
    with caplog.at_level(logging.INFO, logger="segflow.export"):
        run_import(exported[1], tmp_path / "imported")
    assert (tmp_path / "imported" / "manifest.json").is_file()
    assert "TinyExport" in caplog.text and "3d_fullres folds [0, 1]" in caplog.text


def _bad_zip_cases(tmp_path):
    escape = tmp_path / "escaped.txt"
    return {
        "absolute": ([(str(escape), b"x")], True, str(escape), "is an absolute path"),
        "parent": ([("../escaped.txt", b"x")], True, "../escaped.txt", "climbs out"),
        "nested parent": (
            [("2d/../../escaped.txt", b"x")],
            True,
            "2d/../../escaped.txt",
            "climbs out",
        ),
        "backslash": ([("..\\escaped.txt", b"x")], True, "..\\escaped.txt", "backslash"),
        "drive": ([("C:/escaped.txt", b"x")], True, "C:/escaped.txt", "drive letter"),
        "symlink": ([_symlink("link", str(escape))], True, "link", "is a symbolic link"),
        "unlisted": (
            [("notes/extra.txt", b"x")],
            False,
            "notes/extra.txt",
            "is not a file of an exported model, nor listed in manifest.json",
        ),
        "duplicate": ([("plans.json", b"{}")], False, "plans.json", "appears 2 times"),
    }


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    "case",
    [
        "absolute",
        "parent",
        "nested parent",
        "backslash",
        "drive",
        "symlink",
        "unlisted",
        "duplicate",
    ],
)
def test_an_unsafe_entry_is_refused_before_anything_is_written(exported, tmp_path, case):
    extra, listed, entry, reason = _bad_zip_cases(tmp_path)[case]
    bad = _tampered(exported[1], tmp_path / "bad.zip", extra=extra, list_extra=listed)
    with pytest.raises(SegflowError) as err:
        import_model(bad, tmp_path / "out" / "imported")
    problems = [p for p in err.value.problems if p.where == entry]
    assert problems and reason in problems[0].message, str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]  # not even out/


def test_every_bad_entry_is_listed_at_once(exported, tmp_path):
    extra = [("../a", b"x"), ("/b", b"x"), _symlink("c", "/etc/passwd"), ("d", b"x")]
    bad = _tampered(exported[1], tmp_path / "bad.zip", extra=extra, drop=("plans.json",))
    with pytest.raises(SegflowError) as err:
        import_model(bad, tmp_path / "imported")
    wheres = {p.where for p in err.value.problems}
    assert {"../a", "/b", "c", "d", "plans.json"} <= wheres
    assert "plans.json: is listed in manifest.json but not in the zip" in str(err.value)
    assert not (tmp_path / "imported").exists()


def test_a_changed_file_is_named_and_the_extracted_copy_removed(exported, tmp_path):
    bad = _tampered(exported[1], tmp_path / "bad.zip", replace={"plans.json": b"{}"})
    with pytest.raises(SegflowError) as err:
        import_model(bad, tmp_path / "imported")
    assert "plans.json: its sha256 differs from manifest.json" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def _with_declared_size(source, target, name, change):
    """A copy of ``source`` whose central directory declares ``name`` ``change`` bytes larger."""
    data = bytearray(source.read_bytes())
    start = data.rfind(name.encode()) - 46  # the name follows the 46-byte central header
    assert data[start : start + 4] == b"PK\x01\x02"
    (size,) = struct.unpack_from("<I", data, start + 24)
    struct.pack_into("<I", data, start + 24, size + change)
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(
    ("change", "reason"),
    [(-5, "cannot be extracted: Bad CRC-32"), (100, "bytes, not the")],  # short: zipfile sees it
)
def test_a_file_of_another_size_than_declared_is_refused(exported, tmp_path, change, reason):
    bad = _with_declared_size(exported[1], tmp_path / "bad.zip", "plans.json", change)
    with pytest.raises(SegflowError) as err:
        import_model(bad, tmp_path / "imported")
    [problem] = err.value.problems
    assert problem.where == "plans.json" and reason in problem.message, problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_a_zip_without_a_manifest_is_refused(exported, tmp_path):
    bad = _tampered(exported[1], tmp_path / "bad.zip", drop=("manifest.json",))
    with pytest.raises(SegflowError, match=r"manifest\.json: is missing"):
        import_model(bad, tmp_path / "imported")
    assert not (tmp_path / "imported").exists()


def test_a_non_empty_output_folder_is_refused_and_left_alone(exported, tmp_path):
    output = tmp_path / "imported"
    output.mkdir()
    (output / "mine.txt").write_text("keep me")
    with pytest.raises(SegflowError) as err:
        import_model(exported[1], output)
    assert f"{output}: is not empty" in str(err.value)
    assert [p.name for p in output.iterdir()] == ["mine.txt"]
    assert (output / "mine.txt").read_text() == "keep me"


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    (tmp_path / "model.zip").write_text("not a zip")
    with pytest.raises(SegflowError, match="not a zip file"):
        import_model(tmp_path / "model.zip", tmp_path / "imported")
    assert not (tmp_path / "imported").exists()
