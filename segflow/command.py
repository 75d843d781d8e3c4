"""What a stage declares for the ``segflow`` command line.

Each stage package lists its subcommands in its ``commands`` module (``COMMANDS``); the command
line (:mod:`segflow.cli`) only collects them. A commands module stays cheap to import: it
imports its stage's modules inside ``run``, so that ``segflow <command> --help`` and the light
commands load no more than they need.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """One subcommand: ``segflow <name> ...``.

    Attributes:
        name: the subcommand's name, as the rules and the documentation call it.
        help: one line, shown by ``segflow --help`` and as the subcommand's description.
        add_arguments: declares the subcommand's options on its parser.
        run: does the work; a user mistake raises :class:`~segflow.errors.SegflowError`.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
