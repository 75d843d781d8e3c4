"""Errors that reach the user as clear messages instead of tracebacks."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DatasetError",
    "DiskFullError",
    "Interrupted",
    "Problem",
    "SegflowError",
    "printable",
]


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name shown as ``\\xNN`` escapes.

    Python keeps the bytes of a name that is not valid UTF-8 as lone surrogates
    (``surrogateescape``); they cannot be printed, logged or written to JSON as they are.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name produced (e.g. JSON "\\ud800")
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class Problem:
    """One thing wrong with the input: where it is and what was expected.

    Args:
        where: the file (or key) the problem is in.
        message: what is wrong and what was expected instead.
    """

    __slots__ = ("message", "where")

    def __init__(self, where: str, message: str) -> None:
        self.where = printable(str(where))
        self.message = printable(message)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.where!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and (self.where, self.message) == (
            other.where,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.where, self.message))

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


class SegflowError(Exception):
    """A user-facing error; the command line prints it without a traceback.

    It can carry several problems so that a user sees every one at once.
    """

    def __init__(self, summary: str, problems: Iterable[Problem] = ()) -> None:
        self.summary = printable(summary)
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.summary]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class DatasetError(SegflowError):
    """The raw dataset breaks the layout or contents segflow needs."""


class DiskFullError(SegflowError):
    """A file could not be written because its file system is full (or the quota spent).

    Its summary is one line naming the file; rerunning the command once space is freed
    completes the work (see :mod:`segflow.io.atomic`).
    """


class Interrupted(Exception):
    """A long job stopped on a signal after saving its state; rerunning it resumes.

    Args:
        message: what was saved and how to resume.
        signum: the signal; the command exits with ``128 + signum`` as a killed process would.
    """

    def __init__(self, message: str, signum: int) -> None:
        self.signum = signum
        super().__init__(message)
