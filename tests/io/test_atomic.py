from __future__ import annotations

import json
import os
import stat

import pytest

from segflow.io.atomic import atomic_path, read_json, write_json


def test_write_json_round_trip_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "plans.json"
    write_json(target, {"a": [1, 2.5], "b": "x"})
    assert read_json(target) == {"a": [1, 2.5], "b": "x"}
    assert [p.name for p in target.parent.iterdir()] == ["plans.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "fingerprint.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"version": 2, "trunc')
        raise RuntimeError("killed halfway")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["fingerprint.json"]


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"mean": float("nan")})
    assert not list(tmp_path.iterdir())


def test_temporary_keeps_the_suffix_and_final_file_has_normal_permissions(tmp_path):
    with atomic_path(tmp_path / "case.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".tmp-")
        tmp.write_bytes(b"x")
    mode = stat.S_IMODE((tmp_path / "case.nii.gz").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
