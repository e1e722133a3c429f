"""One compact layout for tables of arm-versus-reference effects (estimate, CI, p, g, n)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _interval(estimate: pd.Series, low: pd.Series, high: pd.Series, digits: int) -> pd.Series:
    text = [f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            if np.isfinite([e, lo, hi]).all() else "–"
            for e, lo, hi in zip(estimate, low, high, strict=True)]
    return pd.Series(text, index=estimate.index)


def effects_table(frame: pd.DataFrame, labels: list[str], digits: int = 2) -> pd.DataFrame:
    """``labels`` columns, then estimate [95% CI], p, q, FWE p, Hedges' g [95% CI] and n.

    Parameters
    ----------
    frame : DataFrame
        Rows of :func:`theramark.group.longitudinal.group_time_effects` (with ``q_fdr`` and,
        optionally, ``p_fwe``).
    labels : list of str
        Columns that say what each row is (``feature``, ``arm``, ``session``...).
    """
    table = frame[labels].copy()
    table["estimate [95% CI]"] = _interval(frame["estimate"], frame["ci_low"], frame["ci_high"],
                                           digits)
    for column, name in (("p", "p"), ("q_fdr", "q (FDR)"), ("p_fwe", "p (FWE)")):
        if column in frame.columns and frame[column].notna().any():
            table[name] = frame[column]
    if "hedges_g" in frame.columns:
        table["Hedges' g [95% CI]"] = _interval(frame["hedges_g"], frame["hedges_g_ci_low"],
                                                frame["hedges_g_ci_high"], digits)
    if {"n_arm", "n_reference"} <= set(frame.columns):
        table["n arm / ref"] = [f"{a:.0f} / {r:.0f}" if np.isfinite([a, r]).all() else "–"
                                for a, r in zip(frame["n_arm"], frame["n_reference"], strict=True)]
    return table
