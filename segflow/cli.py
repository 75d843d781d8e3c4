"""The ``segflow`` command line: one subcommand per stage of the workflow.

Every Snakemake rule calls one of these with explicit paths. Each stage package declares its
subcommands, their options and what they run (``<package>/commands.py``, see
:class:`~segflow.command.Command`); this module collects them, sets up logging, and turns
errors into exit statuses: a user mistake (bad input, bad arguments) ends with one clear line
per problem and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from segflow import __version__
from segflow.command import Command
from segflow.errors import Interrupted, SegflowError

__all__ = ["build_parser", "commands", "main"]

logger = logging.getLogger("segflow")

#: The modules that declare commands (``COMMANDS``); cheap to import, each imports its stage
#: when it runs.
COMMAND_MODULES = (
    "segflow.dataset_commands",
    "segflow.validation.commands",
    "segflow.fingerprint.commands",
    "segflow.planning.commands",
    "segflow.preprocessing.commands",
    "segflow.training.commands",
    "segflow.crossval.commands",
    "segflow.inference.commands",
    "segflow.ensembling.commands",
    "segflow.postprocessing.commands",
    "segflow.evaluation.commands",
    "segflow.export.commands",
    "segflow.report.commands",
    "segflow.interop.commands",
)

#: The order ``segflow --help`` lists the commands in: the workflow's, roughly.
ORDER = (
    "make-demo",
    "convert-msd",
    "convert-nnunet-v1",
    "validate-dataset",
    "fingerprint-batch",
    "fingerprint-case",
    "fingerprint",
    "plan",
    "move-plans",
    "preprocess",
    "split",
    "holdout",
    "pretrain",
    "train",
    "validate-fold",
    "previous-stage",
    "predict",
    "select",
    "postprocess",
    "apply-postprocessing",
    "evaluate",
    "export",
    "import-model",
    "import-nnunet",
    "export-nnunet",
    "report-pages",
    "crossval",
)


def commands() -> dict[str, Command]:
    """Every stage's commands by name, in :data:`ORDER`."""
    found: dict[str, Command] = {}
    for module in COMMAND_MODULES:
        for command in importlib.import_module(module).COMMANDS:
            if command.name in found:
                raise RuntimeError(f"command {command.name!r} declared twice ({module})")
            found[command.name] = command
    if set(found) != set(ORDER):
        raise RuntimeError(f"commands not in ORDER or missing: {sorted(set(found) ^ set(ORDER))}")
    return {name: found[name] for name in ORDER}


#: A log record's attribute (``extra={CONSOLE: True}``) that sends it to stderr even when a
#: log file takes the rest: a training job's epochs in the workflow's console.
CONSOLE = "console"


def _on_console(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or bool(getattr(record, CONSOLE, False))


class _LogFile(logging.FileHandler):
    """The ``--log`` file; it stops writing, without a traceback, once the disk is full (the
    error that follows names the file the stage was writing)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            self.setLevel(logging.CRITICAL + 1)
            return
        super().handleError(record)

    def write_line(self, line: str) -> None:
        """Append ``line``, unless the file can no longer be written."""
        if self.level > logging.CRITICAL or self.stream is None:
            return
        try:
            self.stream.write(line + "\n")
            self.flush()
        except OSError:
            self.setLevel(logging.CRITICAL + 1)

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # what was buffered cannot be flushed onto a full disk
            self.stream = None


def _configure_logging(verbose: bool, log_file: Path | None) -> list[logging.Handler]:
    """INFO to stderr, or with a log file: everything to the file and to stderr warnings and
    the records marked :data:`CONSOLE` (progress).

    Returns the handlers added, the log file's first, so that :func:`main` can remove them.

    Raises:
        SegflowError: the log file cannot be made.
    """
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(sys.stderr)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(_LogFile(log_file, mode="w", encoding="utf-8"))
        except OSError as err:
            raise SegflowError(f"cannot write the log file {log_file}: {_os_reason(err)}") from None
        console.addFilter(_on_console)
    handlers.append(console)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    return handlers


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; misspelled flags are errors (no ``parse_known_args``)."""
    parser = argparse.ArgumentParser(
        prog="segflow",
        description="segflow: the nnU-Net method as a reproducible Snakemake workflow.",
    )
    parser.add_argument("--version", action="version", version=f"segflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="also write the log to this file (errors and warnings still reach stderr)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands().values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


#: The errors of a file system without room: full (ENOSPC) or the quota spent (EDQUOT).
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    if err.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return err.strerror or str(err)


def _disk_full_line(err: OSError) -> str:
    """One line for a full disk met outside :mod:`segflow.io.atomic`'s writes."""
    where = f"cannot write {err.filename}" if err.filename else "cannot write its output"
    return (
        f"{where}: {_os_reason(err)}; free some space and run the same command again: what "
        "is already written is kept"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    The root logger is left as it was found (its level and handlers), so that a caller in the
    same process (a test) keeps its own logging.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    root_level = logging.getLogger().level
    try:
        handlers = _configure_logging(args.verbose, args.log)
    except SegflowError as err:
        logging.getLogger().setLevel(root_level)
        print(f"segflow {args.command}: error: {err.render()}", file=sys.stderr)
        return 1
    log_file = handlers[0] if isinstance(handlers[0], _LogFile) else None

    def report(message: str) -> None:
        print(message, file=sys.stderr)
        if log_file is not None:  # into the log file too, without a second copy on stderr
            log_file.write_line(message)

    try:
        args.func(args)
    except SegflowError as err:
        report(f"segflow {args.command}: error: {err.render()}")
        return 1
    except OSError as err:
        if err.errno not in _NO_SPACE:
            raise
        report(f"segflow {args.command}: error: {_disk_full_line(err)}")
        return 1
    except Interrupted as err:
        report(f"segflow {args.command}: {err}")
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"segflow {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        logging.getLogger().setLevel(root_level)
    return 0
