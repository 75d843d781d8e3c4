from __future__ import annotations

import subprocess
import sys
import textwrap

import segflow.workflow_locks as workflow_locks
from segflow.workflow_locks import RUN_LOCK, SNAKEMAKE_LOCKS, claim_working_directory


def _stale_locks(workdir):
    locks = workdir / SNAKEMAKE_LOCKS
    locks.mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("/some/file\n")
    return locks


def test_locks_of_a_run_that_no_longer_runs_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(workflow_locks, "_held", None)
    locks = _stale_locks(tmp_path)
    removed = claim_working_directory(tmp_path)
    assert [p.name for p in removed] == ["0.input.lock", "0.output.lock"]
    assert not locks.exists()
    assert (tmp_path / RUN_LOCK).is_file()
    workflow_locks._held.close()


def test_the_locks_of_a_live_run_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(workflow_locks, "_held", None)
    locks = _stale_locks(tmp_path)
    # Another process (a live run) holds the run lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from segflow.workflow_locks import claim_working_directory
            claim_working_directory({str(tmp_path)!r})
            print("held", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not locks.exists()  # the holder found them stale and removed them
        _stale_locks(tmp_path)  # the live run's own locks
        assert claim_working_directory(tmp_path) == []
        assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock"]
    finally:
        holder.communicate("")
    # Its lock went with it: the locks are stale now.
    assert len(claim_working_directory(tmp_path)) == 2
    workflow_locks._held.close()
