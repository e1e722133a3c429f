"""Brain–symptom links: (partial) correlation of feature change with symptom change.

For every feature, the Pearson (or Spearman) correlation between the participant's change in the
feature and change in a symptom score (HAMD, SHAPS, BDI), optionally partialling out covariates
(age, sex, baseline severity, site...). Partial correlation is computed as the correlation of the
residuals of both variables on ``[1, covariates]``; its t statistic
``r sqrt(df / (1 - r**2))`` with ``df = n - 2 - k`` is identical to the t of the symptom slope in
``feature ~ symptom + covariates``, so the permutation test is the max-T test of that slope
(:func:`theramark.group.inference.max_t_permutation`, Freedman–Lane for the covariates): one
vectorized engine gives the uncorrected and family-wise (max-T) permutation p-values. Spearman ranks
every variable first (pingouin's ``partial_corr(method="spearman")``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError
from theramark.stats import Projection

__all__ = ["brain_symptom_links", "change_scores", "partial_correlations"]


def _design(covariates: pd.DataFrame | None, index: pd.Index) -> np.ndarray:
    if covariates is None or covariates.shape[1] == 0:
        return np.ones((len(index), 1))
    covs = covariates.loc[index]
    blocks = [np.ones((len(index), 1))]
    for column in covs.columns:
        values = covs[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            blocks.append(values.to_numpy(float)[:, None])
        else:
            levels = sorted(values.astype(str).unique())
            blocks.extend((values.astype(str) == lev).to_numpy(float)[:, None]
                          for lev in levels[1:])
    return np.hstack(blocks)


def partial_correlations(
    x: np.ndarray, y: np.ndarray, covariates: np.ndarray | None = None, method: str = "pearson"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Vectorized (partial) correlation of every column of ``x`` with ``y``.

    Parameters
    ----------
    x : ndarray (n, n_features)
    y : ndarray (n,)
    covariates : ndarray (n, k), optional
        Without an intercept column (one is added).
    method : {"pearson", "spearman"}

    Returns
    -------
    r, t, p : ndarray (n_features,)
        Correlation, its t statistic and two-sided parametric p-value (t with ``n - 2 - k`` df).
    df : int
    """
    if method not in ("pearson", "spearman"):
        raise BadInputError(f"method must be 'pearson' or 'spearman', got {method!r}")
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = x.shape[0]
    covariates = np.zeros((n, 0)) if covariates is None else np.asarray(covariates, float)
    if method == "spearman":
        x = stats.rankdata(x, axis=0)
        y = stats.rankdata(y)
        covariates = stats.rankdata(covariates, axis=0) if covariates.size else covariates
    covariate_space = Projection(np.hstack([np.ones((n, 1)), covariates]))
    rank = covariate_space.rank
    rx = covariate_space.residualize(x)
    ry = covariate_space.residualize(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry[:, None]).sum(axis=0) / np.sqrt((rx**2).sum(axis=0) * (ry**2).sum())
        df = n - rank - 1
        t = r * np.sqrt(df / (1 - r**2))
    p = 2 * stats.t.sf(np.abs(t), df)
    return r, t, p, df


def brain_symptom_links(
    feature_change: pd.DataFrame,
    symptom_change: pd.Series,
    covariates: pd.DataFrame | None = None,
    *,
    method: str = "pearson",
    n_permutations: int = 5000,
    random_state: int | None = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Correlate every feature's change with symptom change, with permutation and FWE p-values.

    Parameters
    ----------
    feature_change : DataFrame (participants × features)
        Change (endpoint - baseline) of each feature; index = participant id.
    symptom_change : Series
        Change of the symptom score, indexed by participant id.
    covariates : DataFrame, optional
        Covariates to partial out (numeric or categorical), indexed by participant id.
    method : {"pearson", "spearman"}
    n_permutations : int
        Permutations for the max-T test (0 skips it).
    random_state : int, optional
    confidence : float
        Level of the Fisher-z confidence interval of ``r``.

    Returns
    -------
    DataFrame
        One row per feature: ``feature, n, r, ci_low, ci_high, statistic, df, p, q_fdr,
        p_permutation, p_fwe``. Participants missing the symptom change or a covariate are left
        out; features with missing values among the others are fitted on their complete
        participants without the permutation test (NaN permutation p-values).
    """
    from theramark.group.inference import fdr_bh, max_t_permutation

    if not isinstance(feature_change, pd.DataFrame):
        raise BadInputError("brain_symptom_links: feature_change must be a DataFrame")
    symptom = pd.Series(symptom_change, dtype=float).dropna()
    # participants without any imaging feature (every run excluded) carry no information
    has_features = feature_change.notna().any(axis=1)
    participants = feature_change.index[has_features.to_numpy()].intersection(symptom.index)
    if covariates is not None:
        missing_ids = participants.difference(covariates.index)
        if len(missing_ids):
            raise BadInputError(f"brain_symptom_links: covariates lack participants "
                                f"{list(missing_ids[:5])}")
        complete = covariates.loc[participants].notna().all(axis=1)
        participants = participants[complete.to_numpy()]
    n_covariates = 0 if covariates is None else _design(covariates, participants).shape[1] - 1
    if len(participants) < n_covariates + 4:
        raise BadInputError(f"brain_symptom_links: {len(participants)} participants with feature "
                            "and symptom change; too few for the model")
    x_all = feature_change.loc[participants].to_numpy(float)
    y = symptom.loc[participants].to_numpy(float)
    covs = None if covariates is None else _design(covariates, participants)[:, 1:]
    features = list(map(str, feature_change.columns))
    complete_cols = np.isfinite(x_all).all(axis=0)

    n_feat = len(features)
    out = {k: np.full(n_feat, np.nan) for k in ("r", "statistic", "df", "p", "p_permutation",
                                                "p_fwe")}
    n_used = np.zeros(n_feat, int)
    if complete_cols.any():
        r, t, p, df = partial_correlations(x_all[:, complete_cols], y, covs, method)
        out["r"][complete_cols], out["statistic"][complete_cols] = r, t
        out["p"][complete_cols], out["df"][complete_cols] = p, df
        n_used[complete_cols] = len(y)
        if n_permutations:
            data = x_all[:, complete_cols]
            design_y = y
            nuisance = covs
            if method == "spearman":
                data = stats.rankdata(data, axis=0)
                design_y = stats.rankdata(y)
                nuisance = None if covs is None else stats.rankdata(covs, axis=0)
            intercept = np.ones((len(y), 1))
            nuisance = intercept if nuisance is None else np.hstack([intercept, nuisance])
            result = max_t_permutation(
                data, design_y[:, None], np.array([1.0]), n_permutations=n_permutations,
                nuisance=nuisance, random_state=random_state)
            out["p_permutation"][complete_cols] = result.p_uncorrected
            out["p_fwe"][complete_cols] = result.p_fwe
    for j in np.flatnonzero(~complete_cols):
        rows = np.isfinite(x_all[:, j])
        if rows.sum() < n_covariates + 4:
            continue
        r, t, p, df = partial_correlations(x_all[rows, j:j + 1], y[rows],
                                           None if covs is None else covs[rows], method)
        out["r"][j], out["statistic"][j], out["p"][j], out["df"][j] = r[0], t[0], p[0], df
        n_used[j] = rows.sum()
    z = np.arctanh(np.clip(out["r"], -1 + 1e-15, 1 - 1e-15))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.norm.ppf(0.5 + confidence / 2) / np.sqrt(n_used - 3 - n_covariates)
    return pd.DataFrame({
        "feature": features, "n": n_used, "r": out["r"], "ci_low": np.tanh(z - half),
        "ci_high": np.tanh(z + half), "statistic": out["statistic"], "df": out["df"],
        "p": out["p"], "q_fdr": fdr_bh(out["p"]), "p_permutation": out["p_permutation"],
        "p_fwe": out["p_fwe"],
    })


def change_scores(wide: pd.DataFrame, columns: Sequence[str], baseline: str, endpoint: str,
                  session_level: str = "session") -> pd.DataFrame:
    """Endpoint minus baseline for ``columns`` of a (participant, session)-indexed wide table."""
    sessions = wide.index.get_level_values(session_level).astype(str)
    for label in (baseline, endpoint):
        if label not in set(sessions):
            raise BadInputError(f"change_scores: session '{label}' not found "
                                f"(sessions: {sorted(set(sessions))})")
    pre = wide[sessions == baseline][list(columns)].droplevel(session_level)
    post = wide[sessions == endpoint][list(columns)].droplevel(session_level)
    index = pre.index.union(post.index)
    return post.reindex(index) - pre.reindex(index)
