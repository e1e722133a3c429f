"""Checks on the tables users give: one place that says which columns are missing.

Every stage that reads a table by column name (a participants file, a scores table, a feature
table handed to a group analysis) checks it with :func:`check_columns`, so the error always names
the table, lists every missing column at once and suggests the close names that are there (a
different case, a typo, ``session_id`` for ``session``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

import pandas as pd

from theramark.errors import BadInputError

__all__ = ["check_columns"]

_SHOWN_COLUMNS = 30


def check_columns(table: pd.DataFrame, columns: Iterable[str], source: str | os.PathLike) -> None:
    """Raise unless every name in ``columns`` is a column of ``table``.

    Parameters
    ----------
    table : DataFrame
        The table to check.
    columns : iterable of str
        Column names the caller needs.
    source : str or path-like
        What the table is, for the message: its file, or the analysis that reads it
        (e.g. ``"participants.tsv"``, ``"group_time_effects"``).

    Raises
    ------
    BadInputError
        ``"<source>: column(s) not found: a, b (not in the table, whose columns are ...)"``, with one
        line per missing column naming the closest columns present (case-insensitive).

    Examples
    --------
    >>> import pandas as pd
    >>> from theramark.tables import check_columns
    >>> check_columns(pd.DataFrame({"participant_id": [], "BDI": []}), ["participant_id", "bdi"],
    ...               "scores.tsv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    theramark.errors.BadInputError: scores.tsv: column(s) not found: bdi (not in the table, whose ...)
      - 'bdi': did you mean 'BDI'?
    """
    available = [str(c) for c in table.columns]
    present = set(table.columns)
    missing = [c for c in dict.fromkeys(columns) if c not in present]
    if not missing:
        return
    lowered: dict[str, str] = {}
    for name in available:
        lowered.setdefault(name.lower(), name)
    problems = []
    for name in missing:
        close = difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.6)
        if close:
            problems.append(f"'{name}': did you mean {' or '.join(repr(lowered[c]) for c in close)}?")
    shown = ", ".join(available[:_SHOWN_COLUMNS])
    if len(available) > _SHOWN_COLUMNS:
        shown += f", ... ({len(available) - _SHOWN_COLUMNS} more)"
    raise BadInputError(
        f"{source}: column(s) not found: "
        f"{', '.join(map(str, missing))} (not in the table, whose columns are {shown or 'none'})",
        problems,
    )
