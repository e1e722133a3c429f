"""Input checks and regression equations shared by the psychosocial analyses.

Every analysis takes a DataFrame and column names. These helpers select the columns, drop incomplete
rows (listwise deletion, reported back so the output can state it), code a two-level text column as
0/1 (stated too), and reject what would otherwise end in a silent NaN: missing columns, non-numeric
codes, constant or perfectly collinear predictors, too few rows. Every equation of mediation,
moderation and breakpoint regression is then fitted by :func:`fit_ols` (through
:func:`theramark.stats.ols`) and tabulated by :func:`coefficient_tables`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError
from theramark.stats import ols
from theramark.tables import check_columns


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
    check_columns(data, columns, what)
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


@dataclass
class OLSFit:
    """Full-sample OLS fit of one equation."""

    coef: np.ndarray  # (p,) with the intercept first
    cov: np.ndarray  # (p, p)
    df_resid: int
    rss: float
    names: list[str]  # "(intercept)" then the predictors


def fit_ols(design: np.ndarray, outcome: np.ndarray, names: list[str], what: str) -> OLSFit:
    """OLS with the classical covariance ``s² (X'X)^-1``; ``design`` (n, p) includes the intercept.

    Parameters
    ----------
    design : ndarray (n, p)
        The equation's design, intercept first.
    outcome : ndarray (n,)
    names : list of str
        Names of the design's columns (``"(intercept)"`` first), for the table and messages.
    what : str
        The analysis and equation, for messages.

    Returns
    -------
    OLSFit

    Raises
    ------
    BadInputError
        Collinear predictors (the message names the first redundant one) or no residual degree of
        freedom: in these analyses both come from the columns the user chose.
    """
    n, p = design.shape
    check_full_rank(design, names, what)
    if n <= p:
        raise BadInputError(f"{what}: {n} complete rows for {p} coefficients; need more rows")
    fit = ols(design, outcome, what=what)
    return OLSFit(coef=fit.coef[:, 0], cov=fit.cov(0), df_resid=fit.df_resid,
                  rss=float(fit.rss[0]), names=names)


def coefficient_tables(fits: dict[str, OLSFit], confidence: float) -> pd.DataFrame:
    """Tidy coefficient table of several fits, stacked: one row per equation × term.

    Columns ``equation, term, estimate, se, t, p, ci_low, ci_high, df`` (t-based intervals at level
    ``confidence``).
    """
    names = list(fits)
    est = np.concatenate([fits[k].coef for k in names])
    se = np.concatenate([np.sqrt(np.diag(fits[k].cov)) for k in names])
    df = np.concatenate([np.full(fits[k].coef.size, fits[k].df_resid) for k in names])
    t = est / se
    crit = stats.t.ppf(0.5 + confidence / 2, df)
    return pd.DataFrame({
        "equation": np.repeat(names, [fits[k].coef.size for k in names]),
        "term": [term for k in names for term in fits[k].names],
        "estimate": est, "se": se, "t": t, "p": 2 * stats.t.sf(np.abs(t), df),
        "ci_low": est - crit * se, "ci_high": est + crit * se, "df": df,
    })


def coefficient_table(fit: OLSFit, equation: str, confidence: float) -> pd.DataFrame:
    """:func:`coefficient_tables` of one fit."""
    return coefficient_tables({equation: fit}, confidence)
