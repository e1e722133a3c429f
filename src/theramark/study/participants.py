"""participants.tsv and phenotype/ tables."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from theramark._io import read_tsv
from theramark.errors import BadInputError
from theramark.study.entities import with_sub_prefix, without_ses_prefix

_SESSION_COLUMN = re.compile(r"^(?P<measure>.+)_ses-(?P<session>[a-zA-Z0-9]+)$")


def load_participants(bids_dir: str | Path) -> pd.DataFrame:
    """``participants.tsv`` of a BIDS dataset, checked.

    ``participant_id`` values get the ``sub-`` prefix when it is missing; ``n/a`` is missing.

    Raises
    ------
    BadInputError
        When the file is missing or malformed, has no ``participant_id`` column, or repeats an ID
        (every duplicate is listed).
    """
    path = Path(bids_dir) / "participants.tsv"
    table = read_tsv(path, dtype={"participant_id": str})
    return check_participants(table, path)


def check_participants(table: pd.DataFrame, path: str | Path = "participants.tsv") -> pd.DataFrame:
    """Validate a participants table (see :func:`load_participants`)."""
    if "participant_id" not in table.columns:
        raise BadInputError(
            f"{path}: no 'participant_id' column (columns are {', '.join(map(str, table.columns))})"
        )
    table = table.copy()
    missing = table["participant_id"].isna()
    if missing.any():
        rows = ", ".join(str(i + 2) for i in table.index[missing])
        raise BadInputError(f"{path}: empty participant_id on line(s) {rows}")
    table["participant_id"] = with_sub_prefix(table["participant_id"])
    duplicated = table["participant_id"][table["participant_id"].duplicated(keep=False)]
    if len(duplicated):
        raise BadInputError(
            f"{path}: duplicate participant IDs",
            [f"{pid} appears {n} times" for pid, n in duplicated.value_counts().sort_index().items()],
        )
    return table


def session_columns_to_long(table: pd.DataFrame) -> pd.DataFrame:
    """Wide ``<measure>_ses-<label>`` columns → one row per participant × session.

    Some datasets (OpenNeuro ds003007, for one) keep repeated measures as columns of
    participants.tsv (``BDI_ses-pre``, ``BDI_ses-post``). Columns without a session stay as
    participant-level columns repeated on every row.

    Returns
    -------
    DataFrame
        ``participant_id, session, <participant columns...>, <measures...>``.
    """
    session_cols = {c: _SESSION_COLUMN.match(c) for c in table.columns}
    session_cols = {c: m for c, m in session_cols.items() if m}
    static = [c for c in table.columns if c not in session_cols]
    if not session_cols:
        raise BadInputError("no '<measure>_ses-<label>' columns to reshape")
    sessions = list(dict.fromkeys(m["session"] for m in session_cols.values()))
    frames = []
    for session in sessions:
        columns = {c: m["measure"] for c, m in session_cols.items() if m["session"] == session}
        frame = table[static + list(columns)].rename(columns=columns)
        frame.insert(1, "session", session)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_phenotype_table(path: str | Path) -> pd.DataFrame:
    """One phenotype TSV with theramark's identifiers.

    ``participant_id`` gets the ``sub-`` prefix when missing; a ``session`` (or BIDS
    ``session_id``) column is normalized to labels without ``ses-``.

    Raises
    ------
    BadInputError
        When the file is unreadable or has no ``participant_id`` column.
    """
    table = read_tsv(path, dtype={"participant_id": str, "session": str, "session_id": str})
    if "participant_id" not in table.columns:
        raise BadInputError(
            f"{path}: no 'participant_id' column (columns are {', '.join(map(str, table.columns))})")
    table["participant_id"] = with_sub_prefix(table["participant_id"])
    if "session_id" in table.columns and "session" not in table.columns:
        table = table.rename(columns={"session_id": "session"})
    if "session" in table.columns:
        table["session"] = without_ses_prefix(table["session"])
    return table


def load_phenotype(bids_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every ``phenotype/<measure>.tsv`` (see :func:`read_phenotype_table`), keyed by measure."""
    folder = Path(bids_dir) / "phenotype"
    if not folder.is_dir():
        return {}
    return {path.stem: read_phenotype_table(path) for path in sorted(folder.glob("*.tsv"))}
