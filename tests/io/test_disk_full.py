"""A full disk ends a write in one line naming the file, whatever the writer raised; the
temporary file goes, the old artifact stays, and the same write succeeds once space is freed.

Most tests simulate the full file system (``ENOSPC`` from Python, or a writer's bare
``RuntimeError`` with ``os.statvfs`` reporting no space left); those marked ``tmpfs`` fill a
real one mounted for the test (root only; skipped where mounting is not permitted).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from segflow.cli import main
from segflow.errors import DiskFullError, Interrupted, SegflowError
from segflow.io.atomic import (
    FULL_DISK_MARGIN,
    atomic_path,
    disk_full_error,
    temporary_prefix,
    write_json,
)
from tests.small_disk import fill, mounted_tmpfs

REPO = Path(__file__).resolve().parents[2]


class _Statvfs:
    """What ``os.statvfs`` says of a file system with ``free`` bytes left."""

    def __init__(self, free: int, blocks: int = 1000) -> None:
        self.f_frsize, self.f_bavail, self.f_blocks = 4096, free // 4096, blocks
        self.f_files, self.f_favail = 1000, 10


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enospc_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "fingerprint.json"
    write_json(target, {"old": True})
    monkeypatch.setattr(Path, "write_text", _no_space)
    with pytest.raises(DiskFullError) as info:
        write_json(target, {"new": True})
    message = info.value.render()
    assert "\n" not in message
    assert message.startswith(f"cannot write {target}: the disk is full (file system at ")
    assert message.endswith(
        "free some space and run the same command again: what is already written is kept"
    )
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fingerprint.json"]
    assert target.read_text() == '{\n  "old": true\n}\n'


def test_a_writers_bare_runtime_error_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """blosc2 ("Error while creating the NDArray"), ITK and torch.save name neither the file
    nor the cause; the free space left tells."""
    target = tmp_path / "case_000.data.b2nd"

    def blosc2_like(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("Error while creating the NDArray")

    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(FULL_DISK_MARGIN // 2))
    full = pytest.raises(DiskFullError, match=r"cannot write .*case_000\.data\.b2nd: the disk is")
    with full, atomic_path(target) as tmp:
        blosc2_like(tmp)
    assert list(tmp_path.iterdir()) == []
    # With space left the same error is not the disk's: it passes through as it is.
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(10 * FULL_DISK_MARGIN))
    other = pytest.raises(RuntimeError, match=r"^Error while creating the NDArray$")
    with other, atomic_path(target) as tmp:
        blosc2_like(tmp)


def test_quota_and_no_inode_left(tmp_path, monkeypatch):
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert "the disk quota is exceeded" in str(disk_full_error(tmp_path / "a.json", quota))

    def no_inode(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("tempfile.mkstemp", no_inode)
    with pytest.raises(DiskFullError, match=r"cannot write .*plans\.json: the disk is full"):
        write_json(tmp_path / "plans.json", {})


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    assert disk_full_error(tmp_path / "a", OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_error(tmp_path / "a", RuntimeError("boom")) is None  # space is left
    # On a full disk, only what a writer raises counts: not a caller's mistake, not a signal.
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(0))
    assert disk_full_error(tmp_path / "a", RuntimeError("boom")) is not None
    assert disk_full_error(tmp_path / "a", ValueError("a bad value")) is None
    assert disk_full_error(tmp_path / "a", SegflowError("a user mistake")) is None
    assert disk_full_error(tmp_path / "a", Interrupted("saved", 15)) is None
    assert disk_full_error(tmp_path / "a", KeyboardInterrupt()) is None
    # A file system that reports no size at all (some FUSE mounts) says nothing.
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(0, blocks=0))
    assert disk_full_error(tmp_path / "a", RuntimeError("boom")) is None


def test_a_long_name_gets_a_temporary_name_within_the_limit(tmp_path):
    target = tmp_path / ("é" * 120 + ".props.json")  # 251 bytes
    assert len(os.fsencode(target.name)) == 251
    prefix = temporary_prefix(target)
    assert len(os.fsencode(prefix)) + 8 + len(".props.json") <= 255
    assert prefix.startswith(".tmp-éé")
    write_json(target, {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_command_line_ends_in_one_line_for_enospc_anywhere(tmp_path, capsys, monkeypatch):
    import segflow.validation.validate

    def full(*args, **kwargs):  # a write outside atomic_path (a library's own file)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.tmp"))

    monkeypatch.setattr(segflow.validation.validate, "validate_dataset", full)
    # The package's lazy export may already hold the function.
    monkeypatch.setattr(segflow.validation, "validate_dataset", full, raising=False)
    status = main(["validate-dataset", "--dataset", "d", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert status == 1
    assert err == (
        f"segflow validate-dataset: error: cannot write {tmp_path / 'x.tmp'}: the disk is "
        "full; free some space and run the same command again: what is already written is "
        "kept\n"
    )


# --- a real, small file system -------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs mounted for the test (root only), unmounted after it."""
    with mounted_tmpfs(tmp_path / "tmpfs", "512k") as mount:
        yield mount


def test_blosc2_on_a_full_tmpfs_names_the_file_and_recovers(tmpfs):
    from segflow.preprocessing.storage import open_case, save_case

    rng = np.random.default_rng(0)
    data = rng.normal(size=(1, 16, 64, 64)).astype(np.float32)  # 256 KiB, barely compressible
    seg = np.zeros((1, 16, 64, 64), np.int8)
    filler = fill(tmpfs, 64 * 1024)
    out = tmpfs / "preprocessed"
    with pytest.raises(DiskFullError) as info:
        save_case(out, "case_000", data, seg, {"case_id": "case_000"}, (16, 32, 32))
    assert str(info.value).startswith(f"cannot write {out / 'case_000.data.b2nd'}: the disk")
    assert sorted(p.name for p in out.iterdir()) == []  # no partial or temporary file
    filler.unlink()
    save_case(out, "case_000", data, seg, {"case_id": "case_000"}, (16, 32, 32))
    np.testing.assert_array_equal(open_case(out, "case_000").data[...], data)


def test_a_stage_on_a_full_tmpfs_ends_in_one_line_without_a_traceback(tmpfs, tmp_path):
    """The stage's --log file is on the full disk too: it stops without 'Logging error'."""
    from segflow.demo import make_demo_dataset

    dataset = make_demo_dataset(tmp_path / "raw", num_training=2, num_test=0, seed=1)
    out = tmpfs / "results" / "fingerprint" / "batches" / "batch_0000.json"
    log = tmpfs / "results" / "logs" / "fingerprint.log"
    report = tmp_path / "dataset_report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "segflow"]
    subprocess.run([*command, "validate-dataset", "--dataset", dataset, "--out", report],
                   check=True, env=env, capture_output=True)  # fmt: skip
    filler = fill(tmpfs, 8 * 1024)
    fingerprint = [*command, f"--log={log}", "fingerprint-batch",
                   f"--dataset-json={dataset / 'dataset.json'}", f"--dataset-report={report}",
                   "--batch=batch_0000", "--cases-per-job=50", f"--out={out}"]  # fmt: skip
    run = subprocess.run(fingerprint, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "Logging error" not in run.stderr
    assert run.stderr.splitlines()[-1].startswith(
        f"segflow fingerprint-batch: error: cannot write {out}: the disk is full (file system "
        f"at {tmpfs}, "
    )
    assert not out.exists()
    filler.unlink()
    rerun = subprocess.run(fingerprint, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert out.is_file()


def test_a_dotted_name_keeps_the_ending_its_writer_chooses_the_format_by(tmp_path):
    from segflow.io.image import read_image, write_image

    target = tmp_path / (".".join(["sub"] * 30) + ".nii.gz")  # suffixes of 123 bytes
    write_image(target, np.ones((2, 3, 4), np.float32), (1.0, 1.0, 1.0))
    assert read_image(target).shape == (2, 3, 4)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
