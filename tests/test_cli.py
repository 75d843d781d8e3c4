from __future__ import annotations

import subprocess
import sys

import pytest

from segflow.cli import build_parser, main


def test_each_stage_has_a_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"make-demo", "validate-dataset", "fingerprint-case", "fingerprint", "plan"} <= set(
        sub.choices
    )


def test_misspelled_flag_is_an_error_not_ignored(capsys):
    with pytest.raises(SystemExit) as info:
        main(["make-demo", "--out", "x", "--case", "3", "--sed", "1"])
    assert info.value.code == 2
    assert "--sed" in capsys.readouterr().err


def test_user_error_is_one_clear_message_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segflow",
            "validate-dataset",
            "--dataset",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("segflow validate-dataset: error:")
    assert "Traceback" not in proc.stderr
    assert "dataset.json" in proc.stderr
    assert not (tmp_path / "report.json").exists()


def test_log_file_receives_the_log(tmp_path):
    log = tmp_path / "logs" / "demo.log"
    assert (
        main(
            [
                "--log",
                str(log),
                "make-demo",
                "--out",
                str(tmp_path / "d"),
                "--cases",
                "2",
                "--test-cases",
                "0",
            ]
        )
        == 0
    )
    assert "wrote demo dataset with 2 training and 0 test cases" in log.read_text()


def test_an_error_reaches_stderr_once_and_the_log_file(tmp_path):
    log = tmp_path / "validate.log"
    proc = subprocess.run(
        [sys.executable, "-m", "segflow", "--log", str(log), "validate-dataset",
         "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "report.json")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.count("segflow validate-dataset: error:") == 1
    assert "segflow validate-dataset: error:" in log.read_text()


def test_with_a_log_file_the_console_gets_warnings_and_progress_only(tmp_path, capsys):
    import logging

    from segflow.cli import CONSOLE, _configure_logging

    handlers = _configure_logging(False, tmp_path / "job.log")
    try:
        log = logging.getLogger("segflow.test")
        log.info("plain detail")
        log.info("2d fold 0, epoch 3: train loss 0.5", extra={CONSOLE: True})
        log.warning("a warning")
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    err = capsys.readouterr().err
    assert "epoch 3: train loss 0.5" in err and "a warning" in err
    assert "plain detail" not in err
    text = (tmp_path / "job.log").read_text()
    assert all(m in text for m in ("plain detail", "epoch 3", "a warning"))


@pytest.mark.parametrize("verbose", [False, True])
def test_main_leaves_the_root_logger_as_it_found_it(tmp_path, verbose):
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.WARNING)
    try:
        flags = ["-v"] if verbose else []
        demo = ["make-demo", "--out", str(tmp_path / "d"), "--cases", "2", "--test-cases", "0"]
        assert main([*flags, *demo]) == 0
        assert root.level == logging.WARNING
        # An error before the command runs (the log file cannot be made) restores it too.
        (tmp_path / "file").write_text("")
        assert main([*flags, "--log", str(tmp_path / "file" / "x.log"), *demo]) == 1
        assert root.level == logging.WARNING
        assert root.handlers == handlers
    finally:
        root.setLevel(level)
