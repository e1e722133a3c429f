"""participants.tsv and phenotype/ tables."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from theramark._io import read_tsv
from theramark.errors import BadInputError
from theramark.study.entities import with_sub_prefix, without_ses_prefix
from theramark.tables import check_columns

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
    check_columns(table, ["participant_id"], path)
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


def session_columns_to_long(
    table: pd.DataFrame,
    measures: Sequence[str] | None = None,
    *,
    columns: Mapping[str, Mapping[str, str]] | None = None,
    keep: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Wide per-session columns → one row per participant × session.

    Some datasets keep repeated measures as columns of one row per participant: OpenNeuro ds003007's
    participants.tsv has ``BDI_ses-pre`` and ``BDI_ses-post``, ds003799's CES-D table ``CES-D_1``
    to ``CES-D_3``. This is the one reshaper of such tables (scores tables for
    :func:`theramark.scales.outcomes` are made with it too).

    Parameters
    ----------
    table : DataFrame
        One row per participant, with ``participant_id``.
    measures : sequence of str, optional
        Stems of the ``<measure>_ses-<label>`` columns to reshape; default every such stem.
    columns : mapping of str to mapping of str to str, optional
        For columns named otherwise: ``{measure: {session: column}}``, e.g.
        ``{"total": {"t1": "CES-D_1", "t2": "CES-D_2"}}``. Replaces the matching of
        ``<measure>_ses-<label>`` names (give ``measures`` or ``columns``, not both). A ``ses-``
        prefix of a session label is dropped.
    keep : sequence of str, optional
        Participant-level columns repeated on every row; default every column that is neither
        ``participant_id`` nor a per-session column.

    Returns
    -------
    DataFrame
        ``participant_id, session, <kept columns...>, <measures...>``; sessions in their order of
        first appearance, one block of rows per session. A measure without a column for a session
        is missing (NaN) there.

    Raises
    ------
    BadInputError
        No ``participant_id`` column, a named column or measure not in the table, or no
        ``<measure>_ses-<label>`` column to reshape.

    Examples
    --------
    >>> import pandas as pd
    >>> from theramark.study import session_columns_to_long
    >>> wide = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "group": ["CBT", "WL"],
    ...                      "BDI_ses-pre": [30, 25], "BDI_ses-post": [12, 24]})
    >>> session_columns_to_long(wide)
      participant_id session group  BDI
    0         sub-01     pre   CBT   30
    1         sub-02     pre    WL   25
    2         sub-01    post   CBT   12
    3         sub-02    post    WL   24
    """
    what = "session_columns_to_long"
    check_columns(table, ["participant_id"], what)
    if columns is not None:
        if measures is not None:
            raise BadInputError(f"{what}: give measures (stems of <measure>_ses-<label> columns) "
                                "or columns (an explicit mapping), not both")
        layout = {str(measure): {str(session).removeprefix("ses-"): column
                                 for session, column in by_session.items()}
                  for measure, by_session in columns.items()}
        used = {column for by_session in layout.values() for column in by_session.values()}
        check_columns(table, list(used), what)
    else:
        matched = {c: _SESSION_COLUMN.match(str(c)) for c in table.columns}
        matched = {c: m for c, m in matched.items() if m}
        found = list(dict.fromkeys(m["measure"] for m in matched.values()))
        if not found:
            raise BadInputError(f"{what}: no '<measure>_ses-<label>' columns to reshape")
        wanted = found if measures is None else list(measures)
        unknown = [m for m in wanted if m not in found]
        if unknown:
            raise BadInputError(f"{what}: no '<measure>_ses-<label>' columns for {', '.join(unknown)}"
                                f" (measures with session columns: {', '.join(found)})")
        layout = {measure: {} for measure in wanted}
        for column, match in matched.items():
            if match["measure"] in layout:
                layout[match["measure"]][match["session"]] = column
        used = set(matched)
    if keep is None:
        kept = [c for c in table.columns if c not in used and c != "participant_id"]
    else:
        kept = [c for c in dict.fromkeys(keep) if c != "participant_id"]
        check_columns(table, kept, what)
    clash = [m for m in layout if m in kept or m in ("participant_id", "session")]
    if clash:
        raise BadInputError(f"{what}: measure name(s) {', '.join(clash)} are also participant-level "
                            "columns; rename one or leave it out of keep")
    sessions = list(dict.fromkeys(s for by_session in layout.values() for s in by_session))
    frames = []
    for session in sessions:
        frame = {"participant_id": table["participant_id"], "session": session}
        frame.update({c: table[c] for c in kept})
        frame.update({measure: table[by_session[session]] if session in by_session else np.nan
                      for measure, by_session in layout.items()})
        frames.append(pd.DataFrame(frame, index=table.index))
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
    check_columns(table, ["participant_id"], path)
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
