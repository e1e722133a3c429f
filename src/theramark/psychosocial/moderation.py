"""Moderation (PROCESS model 1): simple slopes and the Johnson–Neyman region.

``Y ~ X + W + X·W + C`` by OLS. The conditional effect of X at W = w is ``b_X + b_XW·w`` with
variance ``V_XX + 2w·V_X,XW + w²·V_XW,XW`` (the same numbers as refitting with W centred at w). The
Johnson–Neyman boundaries are the values of W where that effect's t statistic equals the critical
value: the roots of a quadratic in w.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from theramark.psychosocial._data import as_list, coefficient_table, fit_ols, prepare
from theramark.psychosocial.mediation import moderator_values


def moderation(
    data: pd.DataFrame,
    x: str,
    w: str,
    y: str,
    covariates: str | Sequence[str] | None = None,
    *,
    w_values: Sequence[float] | None = None,
    confidence: float = 0.95,
    n_grid: int = 101,
) -> pd.DataFrame:
    """Moderation of X → Y by W (PROCESS model 1) with conditional effects of X.

    Parameters
    ----------
    data : DataFrame
        One row per participant. ``x`` and ``w`` may be two-level text (coded 0/1, stated in
        ``attrs["note"]``).
    x, w, y : str
        Focal predictor, moderator and outcome columns.
    covariates : str or sequence of str, optional
        Added to the model.
    w_values : sequence of float, optional
        Values of W at which to probe; default both levels of a dichotomous W, else the 16th, 50th
        and 84th percentiles (PROCESS).
    confidence : float
        Level of the t-based intervals and of the Johnson–Neyman boundaries.
    n_grid : int
        Points of the conditional-effect curve over the observed range of W (for plots).

    Returns
    -------
    DataFrame
        Indexed by effect: ``x`` (effect of X at W = 0), ``w``, ``interaction`` and one
        ``conditional[W=w]`` per probed value; columns ``estimate, se, t, p, ci_low, ci_high, df,
        w_value, n``. ``attrs``: ``coefficients`` (full table), ``johnson_neyman`` (see
        :func:`johnson_neyman_regions`; only for a continuous W), ``curve`` (W grid with the
        conditional effect and its interval), ``n``, ``n_dropped``, ``note``.
    """
    cov = as_list(covariates)
    prepared = prepare(data, [x, w, y, *cov], binary_ok=[x, w], what="moderation (model 1)",
                       min_rows=5)
    frame = prepared.frame
    inter = f"{x}:{w}"
    frame = frame.assign(**{inter: frame[x] * frame[w]})
    predictors = [x, w, inter, *cov]
    design = np.hstack([np.ones((len(frame), 1)), frame[predictors].to_numpy()])
    fit = fit_ols(design, frame[y].to_numpy(), ["(intercept)", *predictors],
                  "moderation (model 1)")
    b1, b3 = fit.coef[1], fit.coef[3]
    v11, v13, v33 = fit.cov[1, 1], fit.cov[1, 3], fit.cov[3, 3]
    crit = stats.t.ppf(0.5 + confidence / 2, fit.df_resid)

    def conditional(values: np.ndarray) -> pd.DataFrame:
        est = b1 + b3 * values
        se = np.sqrt(v11 + 2 * values * v13 + values**2 * v33)
        t = est / se
        return pd.DataFrame({
            "estimate": est, "se": se, "t": t, "p": 2 * stats.t.sf(np.abs(t), fit.df_resid),
            "ci_low": est - crit * se, "ci_high": est + crit * se, "df": fit.df_resid,
            "w_value": values,
        })

    coefs = coefficient_table(fit, "y ~", confidence).set_index("term")
    rows = []
    for label, term in (("x", x), ("w", w), ("interaction", inter)):
        r = coefs.loc[term]
        rows.append({"effect": label, **{k: r[k] for k in
                     ("estimate", "se", "t", "p", "ci_low", "ci_high", "df")},
                     "w_value": np.nan})
    w_obs = frame[w].to_numpy()
    probe = moderator_values(w_obs, w_values)
    cond = conditional(probe)
    cond.insert(0, "effect", [f"conditional[{w}={v:g}]" for v in probe])
    result = pd.concat([pd.DataFrame(rows), cond], ignore_index=True).set_index("effect")
    result["n"] = prepared.n
    grid = np.linspace(w_obs.min(), w_obs.max(), n_grid)
    result.attrs.update({
        "x": x, "w": w, "y": y, "covariates": cov, "n": prepared.n,
        "n_dropped": prepared.n_dropped, "note": prepared.note(), "codings": prepared.codings,
        "coefficients": coefficient_table(fit, f"{y} ~", confidence),
        "curve": conditional(grid),
        "confidence": confidence,
    })
    if np.unique(w_obs).size > 2:
        result.attrs["johnson_neyman"] = johnson_neyman_regions(
            b1, b3, v11, v13, v33, crit, w_obs
        )
    return result


def johnson_neyman_regions(
    b1: float, b3: float, v11: float, v13: float, v33: float, crit: float, w_observed: np.ndarray
) -> pd.DataFrame:
    """Intervals of W where the conditional effect ``b1 + b3·w`` is / is not significant.

    Parameters
    ----------
    b1, b3 : float
        Coefficients of X and X·W.
    v11, v13, v33 : float
        Their variances and covariance.
    crit : float
        Critical t value.
    w_observed : ndarray (n,)
        Observed moderator values (to report which part of the sample each region holds).

    Returns
    -------
    DataFrame
        One row per interval between consecutive boundaries: ``w_low, w_high`` (±inf at the ends),
        ``significant`` (bool), ``proportion_of_sample`` (share of observed W inside), and
        ``boundary_in_range`` telling whether ``w_high`` is a boundary inside the observed range.
    """
    qa = b3**2 - crit**2 * v33
    qb = 2 * (b1 * b3 - crit**2 * v13)
    qc = b1**2 - crit**2 * v11
    if abs(qa) < 1e-15:
        roots = np.array([-qc / qb]) if abs(qb) > 1e-15 else np.array([])
    else:
        disc = qb**2 - 4 * qa * qc
        roots = (np.sort([(-qb - np.sqrt(disc)) / (2 * qa), (-qb + np.sqrt(disc)) / (2 * qa)])
                 if disc >= 0 else np.array([]))
    edges = np.concatenate([[-np.inf], roots, [np.inf]])
    rows = []
    for lo, hi in itertools.pairwise(edges):
        if np.isinf(lo) and np.isinf(hi):
            mid = 0.0
        elif np.isinf(lo):
            mid = hi - 1.0
        elif np.isinf(hi):
            mid = lo + 1.0
        else:
            mid = (lo + hi) / 2
        est = b1 + b3 * mid
        se = np.sqrt(v11 + 2 * mid * v13 + mid**2 * v33)
        inside = (w_observed >= lo) & (w_observed < hi)
        rows.append({
            "w_low": lo, "w_high": hi, "significant": bool(abs(est / se) > crit),
            "proportion_of_sample": float(inside.mean()),
            "boundary_in_range": bool(np.isfinite(hi) and w_observed.min() <= hi
                                      <= w_observed.max()),
        })
    return pd.DataFrame(rows)

