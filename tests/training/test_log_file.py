"""A fold's training.log: segflow's INFO records go to the file inside the block only, whatever
level the caller set, and the package logger is left as it was."""

from __future__ import annotations

import logging

from segflow.training.log_file import logging_to_file


def test_info_records_reach_the_file_inside_the_block_only(tmp_path):
    package = logging.getLogger("segflow")
    original = package.level
    package.setLevel(logging.WARNING)
    handlers = list(package.handlers)
    log = logging.getLogger("segflow.training.trainer")
    path = tmp_path / "training.log"
    try:
        log.info("before")
        with logging_to_file(path):
            log.info("epoch %d: train loss %.4f", 3, 0.25)
            log.debug("not at DEBUG")
        log.info("after")
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        assert lines[0].endswith("INFO epoch 3: train loss 0.2500")
        assert package.level == logging.WARNING
        assert package.handlers == handlers
    finally:
        package.setLevel(original)
