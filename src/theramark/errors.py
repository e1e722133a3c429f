"""Exceptions shared by every stage, mapped to the CLI's exit codes.

``BadInputError`` (exit status 2) is for problems in what the user gave: a file, a column, an item, a
value. ``AnalysisError`` (exit status 1) is for an analysis that could not be carried out on valid input
(a model that does not converge, too few participants left after exclusions).
"""

from __future__ import annotations

from collections.abc import Iterable


class TheramarkError(Exception):
    """Base class of theramark's own errors."""

    exit_code = 1


class BadInputError(TheramarkError, ValueError):
    """The input is wrong; the message names the file, column or item and what was expected.

    Parameters
    ----------
    message : str
        Summary line.
    problems : iterable of str, optional
        One line per offending thing, so that one error reports every problem at once.
    """

    exit_code = 2

    def __init__(self, message: str, problems: Iterable[str] | None = None):
        self.problems = list(problems or [])
        text = message
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class AnalysisError(TheramarkError, RuntimeError):
    """A valid input on which the analysis could not be carried out."""

    exit_code = 1


def one_line(text: object) -> str:
    """``text`` (an exception, a message) on one line, for a table cell or a log line.

    nibabel's ``OSError`` for a damaged file spans two lines: newlines and runs of spaces become
    one space. A :class:`BadInputError` that lists its problems on lines of their own becomes
    ``"<message>: <problem>; <problem>"``.

    Examples
    --------
    >>> one_line(BadInputError("t.tsv: bad columns", ["a is empty", "b is text"]))
    't.tsv: bad columns: a is empty; b is text'
    >>> one_line(OSError("Expected 8 bytes, got 4 bytes from m.nii\\n - could the file be damaged?"))
    'Expected 8 bytes, got 4 bytes from m.nii - could the file be damaged?'
    """
    if isinstance(text, BadInputError) and text.problems:
        summary = str(text).split("\n", 1)[0]
        return " ".join(f"{summary}: {'; '.join(text.problems)}".split())
    return " ".join(str(text).split())
