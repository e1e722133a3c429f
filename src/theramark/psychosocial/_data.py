"""Input checks shared by the psychosocial analyses.

Every analysis takes a DataFrame and column names. These helpers select the columns, drop incomplete
rows (listwise deletion, reported back so the output can state it), code a two-level text column as
0/1 (stated too), and reject what would otherwise end in a silent NaN: missing columns, non-numeric
codes, constant or perfectly collinear predictors, too few rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from theramark.errors import BadInputError


@dataclass
class Prepared:
    """Complete-case numeric data for one analysis.

    Attributes
    ----------
    frame : DataFrame
        The selected columns, complete cases only, all float.
    n_dropped : int
        Rows removed because a selected column was missing.
    codings : dict
        For each text column coded 0/1: ``{column: {level: code}}``.
    """

    frame: pd.DataFrame
    n_dropped: int
    codings: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.frame)

    def note(self) -> str:
        """One sentence stating the listwise deletion and codings (for attrs and reports)."""
        parts = [f"n = {self.n} complete cases ({self.n_dropped} dropped by listwise deletion)"]
        for column, levels in self.codings.items():
            coded = ", ".join(f"{level} = {code}" for level, code in levels.items())
            parts.append(f"{column} coded {coded}")
        return "; ".join(parts)


def as_list(names: str | Sequence[str] | None) -> list[str]:
    """``None`` → ``[]``, a string → ``[string]``, a sequence → list."""
    if names is None:
        return []
    if isinstance(names, str):
        return [names]
    return list(names)


def prepare(
    data: pd.DataFrame,
    columns: Sequence[str],
    *,
    binary_ok: Sequence[str] = (),
    min_rows: int = 3,
    what: str = "analysis",
) -> Prepared:
    """Select ``columns`` from ``data``, drop incomplete rows and check the values.

    Parameters
    ----------
    data : DataFrame
        The input table.
    columns : sequence of str
        Columns used by the analysis (duplicates are an error: a variable cannot play two roles).
    binary_ok : sequence of str
        Columns that may hold exactly two text levels (e.g. sex ``F``/``M``); they are coded 0/1 in
        sorted order of the levels and the coding is returned.
    min_rows : int
        Fewest complete rows accepted.
    what : str
        Name of the analysis, for messages.

    Raises
    ------
    BadInputError
        Missing or duplicated column, non-numeric codes, constant column, too few complete rows.
    """
    if not isinstance(data, pd.DataFrame):
        raise BadInputError(f"{what}: data must be a pandas DataFrame, got {type(data).__name__}")
    columns = list(columns)
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise BadInputError(
            f"{what}: column(s) {', '.join(duplicated)} given in more than one role "
            "(x, m, y, w and covariates must be distinct)"
        )
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise BadInputError(
            f"{what}: column(s) not found: {', '.join(map(str, missing))}; "
            f"available columns are {', '.join(map(str, data.columns))}"
        )
    frame = data[columns].copy()
    codings: dict[str, dict[str, int]] = {}
    problems = []
    for column in columns:
        series = frame[column]
        if pd.api.types.is_bool_dtype(series):
            frame[column] = series.astype(float)
            continue
        if pd.api.types.is_numeric_dtype(series):
            continue
        numeric = pd.to_numeric(series, errors="coerce")
        bad = series.notna() & numeric.isna()
        if not bad.any():
            frame[column] = numeric
            continue
        levels = sorted(series.dropna().astype(str).unique())
        if column in binary_ok and len(levels) == 2:
            codes = {level: code for code, level in enumerate(levels)}
            frame[column] = series.astype(str).map(codes).where(series.notna())
            codings[column] = codes
            continue
        if column in binary_ok and len(levels) == 1:
            problems.append(
                f"column '{column}' has a single level {levels[0]!r}; it needs two levels to "
                "compare (a moderator or predictor with one level cannot have an effect)"
            )
            continue
        examples = ", ".join(repr(v) for v in series[bad].astype(str).unique()[:5])
        expected = (
            "numbers or exactly two levels" if column in binary_ok else "numbers"
        )
        problems.append(f"column '{column}': non-numeric value(s) {examples}; expected {expected}")
    if problems:
        raise BadInputError(f"{what}: non-numeric codes", problems)
    n_total = len(frame)
    frame = frame.dropna().astype(float)
    if not np.isfinite(frame.to_numpy()).all():
        raise BadInputError(f"{what}: infinite values in {', '.join(columns)}")
    if len(frame) < min_rows:
        raise BadInputError(
            f"{what}: {len(frame)} complete row(s) in {', '.join(columns)} "
            f"(of {n_total}); at least {min_rows} needed"
        )
    values = frame.to_numpy()
    constant = [c for c, spread in zip(columns, np.ptp(values, axis=0), strict=True)
                if spread == 0]
    if constant:
        raise BadInputError(
            f"{what}: column(s) {', '.join(constant)} constant over the {len(frame)} complete "
            "row(s); a variable must vary to be analysed"
        )
    return Prepared(frame=frame, n_dropped=n_total - len(frame), codings=codings)


def check_full_rank(design: np.ndarray, names: Sequence[str], what: str) -> None:
    """Raise if the columns of ``design`` (n, p) are linearly dependent, naming them."""
    rank = np.linalg.matrix_rank(design)
    if rank < design.shape[1]:
        # Name the first column that adds nothing to those before it.
        for k in range(1, design.shape[1] + 1):
            if np.linalg.matrix_rank(design[:, :k]) < k:
                raise BadInputError(
                    f"{what}: predictors are collinear: '{names[k - 1]}' is a linear combination "
                    f"of {', '.join(repr(n) for n in names[: k - 1])}"
                )
