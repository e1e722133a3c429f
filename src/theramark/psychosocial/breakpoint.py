"""Threshold effects: segmented (broken-line) regression with one breakpoint, and Davies' test.

Model: ``y = b0 + b1·x + b2·(x − ψ)₊ + C·g``; the slope is ``b1`` left of ψ and ``b1 + b2`` right of
it. For a fixed ψ the model is linear, so the residual sum of squares is profiled over ψ in closed
form for a whole grid at once, then refined by a bounded scalar search around the best grid point:
this finds the global least-squares optimum, where iterative fits started from one value can stop at
a local one.

The standard error of ψ follows R's ``segmented`` (Muggeo 2003): at the estimate, refit with the
extra regressor ``V = −I(x > ψ)``; with ``γ`` its coefficient and ``β = b2``, ψ = ψ̂ + γ/β and the
delta method gives ``SE(ψ) = SE(γ)/|β|``. Davies' (1987) upper bound on the p value of "no change in slope" is
computed as ``segmented::davies.test`` does (k evaluation points between the second smallest and
second largest x; a t statistic and the Student-t bound for n ≤ 300, a Wald z and the normal bound
above).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from theramark.errors import BadInputError
from theramark.psychosocial._data import as_list, check_full_rank, fit_ols, prepare
from theramark.stats import Projection, ols

_MIN_ROWS = 10


def _profile_rss(psi: np.ndarray, x: np.ndarray, r_y: np.ndarray, base: Projection,
                 rss0: float) -> np.ndarray:
    """RSS of the broken-line model at each ψ in ``psi`` (G,), all at once.

    ``base`` projects onto the null model's design and ``r_y`` are the outcome's residuals on it:
    by Frisch–Waugh–Lovell, adding the hinge lowers the RSS by ``(r_h'r_y)² / r_h'r_h``.
    """
    hinge = np.maximum(x[:, None] - psi[None, :], 0.0)
    r_h = base.residualize(hinge)
    num = r_h.T @ r_y
    den = np.einsum("ng,ng->g", r_h, r_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(den > 1e-12 * len(x), num**2 / den, 0.0)
    return rss0 - gain


def davies_test(
    x: np.ndarray, y: np.ndarray, base: np.ndarray, k: int = 10
) -> tuple[float, pd.DataFrame]:
    """Davies' test for a change in slope, as ``segmented::davies.test`` (two-sided).

    Parameters
    ----------
    x : ndarray (n,)
        The segmented variable.
    y : ndarray (n,)
        Outcome.
    base : ndarray (n, p)
        The null model's design (intercept, x, covariates).
    k : int
        Evaluation points, evenly spaced from the second smallest to the second largest x.

    Returns
    -------
    p : float
        Upper bound on the p value (capped at 1).
    process : DataFrame
        ``psi`` and ``statistic`` at each evaluation point.
    """
    n = len(x)
    order = np.sort(x)
    values = np.linspace(order[1], order[n - 2], k)
    stats_at = np.full(k, np.nan)
    angle = np.full(k, np.nan)
    df_res = n - base.shape[1] - 1
    for i, psi in enumerate(values):  # k is ~10: a loop over evaluation points, not resamples
        design = np.column_stack([np.maximum(x - psi, 0.0), base])
        fit = ols(design, y, rank_deficient="minimum_norm", what="breakpoint (Davies' test)")
        if fit.rank < design.shape[1]:
            continue
        dev = float(fit.rss[0])
        stats_at[i] = fit.coef[0, 0] / fit.se[0, 0]
        z = fit.coef[0, 0] / np.sqrt(fit.cov_unscaled[0, 0])
        angle[i] = np.arcsin(np.sqrt(z**2 / (z**2 + dev)))
    keep = np.isfinite(stats_at)
    if keep.sum() < 2:
        raise BadInputError("breakpoint: Davies' test could not be evaluated (too few distinct x)")
    t = stats_at[keep]
    m = np.max(np.abs(t))
    if n <= 300:
        variation = np.sum(np.abs(np.diff(angle[keep])))
        u = m**2 / (df_res + m**2)
        log_term = ((df_res - 1) / 2 * np.log1p(-u) + special.gammaln(df_res / 2 + 0.5)
                    - special.gammaln(df_res / 2))
        approx = variation * np.exp(log_term) / (2 * np.sqrt(np.pi))
        p_naive = stats.t.sf(m, df_res)
    else:
        variation = np.sum(np.abs(np.diff(t)))
        approx = variation * np.exp(-(m**2) / 2) / np.sqrt(8 * np.pi)
        p_naive = stats.norm.sf(m)
    p = min(2 * (p_naive + approx), 1.0)
    return float(p), pd.DataFrame({"psi": values, "statistic": stats_at})


def breakpoint(
    data: pd.DataFrame,
    x: str,
    y: str,
    covariates: str | Sequence[str] | None = None,
    *,
    confidence: float = 0.95,
    n_grid: int = 200,
    davies_k: int = 10,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Segmented regression of ``y`` on ``x`` with one estimated breakpoint.

    Parameters
    ----------
    data : DataFrame
        One row per participant (complete cases are used; the count dropped is reported).
    x, y : str
        Segmented predictor (e.g. financial strain) and outcome (e.g. SHAPS total).
    covariates : str or sequence of str, optional
        Linear covariates.
    confidence : float
        Level of the breakpoint and slope intervals (t-based, as ``confint.segmented``).
    n_grid : int
        Grid points for the profile search (all distinct x values are searched as well).
    davies_k : int
        Evaluation points of Davies' test (``segmented``'s default is 10).
    bounds : (float, float), optional
        Search ψ only in this interval (e.g. to reproduce a local optimum another program reported,
        or to state a range of interest); default: between the second smallest and second largest
        distinct x.

    Returns
    -------
    DataFrame
        One row: ``breakpoint, breakpoint_se, ci_low, ci_high, slope_left, slope_left_se,
        slope_right, slope_right_se, slope_change, slope_change_se, slope_change_p, davies_p,
        rss, rss_linear, n, n_dropped``. ``attrs``: ``profile`` (ψ grid and RSS), ``davies``
        (evaluation points and statistics), ``coefficients``, ``note``.

    Raises
    ------
    BadInputError
        Fewer than 10 complete rows, fewer than 4 distinct x values, constant or non-numeric columns.
    """
    cov = as_list(covariates)
    prepared = prepare(data, [x, y, *cov], what="breakpoint", min_rows=_MIN_ROWS)
    frame = prepared.frame
    xv = frame[x].to_numpy()
    yv = frame[y].to_numpy()
    distinct = np.unique(xv)
    if distinct.size < 4:
        raise BadInputError(
            f"breakpoint: '{x}' has {distinct.size} distinct value(s); a breakpoint needs at "
            "least 4 so that each segment has a slope"
        )
    n = len(xv)
    base = np.column_stack([np.ones(n), xv, frame[cov].to_numpy()]) if cov else \
        np.column_stack([np.ones(n), xv])
    check_full_rank(base, ["(intercept)", x, *cov], "breakpoint")
    null_model = Projection(base)
    r_y = null_model.residualize(yv)
    rss0 = float(r_y @ r_y)

    # ψ must leave at least two distinct x on each side (x < ψ and x ≥ ψ, the convention of the
    # SE below) for both slopes and the linearization to be estimable.
    lo, hi = distinct[1] + 1e-6 * (distinct[2] - distinct[1]), distinct[-2]
    if bounds is not None:
        if not (bounds[0] < bounds[1]):
            raise BadInputError(f"breakpoint: bounds must be (low, high) with low < high, got {bounds}")
        lo, hi = max(lo, float(bounds[0])), min(hi, float(bounds[1]))
        if not lo < hi:
            raise BadInputError(
                f"breakpoint: bounds {bounds} leave no room inside the range of '{x}' "
                f"({distinct[1]:g} to {distinct[-2]:g} keeps two distinct values on each side)"
            )
    candidates = np.unique(np.concatenate([np.linspace(lo, hi, n_grid),
                                           distinct[(distinct >= lo) & (distinct <= hi)]]))
    profile = _profile_rss(candidates, xv, r_y, null_model, rss0)
    best = int(np.argmin(profile))
    left = candidates[max(best - 1, 0)]
    right = candidates[min(best + 1, candidates.size - 1)]
    psi_hat, rss_hat = candidates[best], profile[best]
    for a, b in ((left, candidates[best]), (candidates[best], right)):
        if b > a:
            opt = optimize.minimize_scalar(
                lambda p: _profile_rss(np.array([p]), xv, r_y, null_model, rss0)[0],
                bounds=(a, b), method="bounded", options={"xatol": 1e-10 * max(1, abs(b))},
            )
            if opt.fun < rss_hat:
                psi_hat, rss_hat = float(opt.x), float(opt.fun)

    hinge = np.maximum(xv - psi_hat, 0.0)
    names = ["(intercept)", x, f"U({x})", *cov]
    design = np.column_stack([base[:, :2], hinge, base[:, 2:]])
    fit = fit_ols(design, yv, names, "breakpoint")
    b1, b2 = fit.coef[1], fit.coef[2]
    # Muggeo's linearization, as segmented reports it: refit with V·β, V = −I(x ≥ ψ̂); the
    # coefficient of V·β is the step γ/β of the next iteration (≈ 0 at the optimum) and its OLS SE,
    # SE(γ)/|β|, is the SE of ψ̂. V takes x ≥ ψ̂ so that a breakpoint sitting on a data value (common
    # with integer x such as age) counts that value on the right, as segmented's iterations (which
    # approach such a point from below) do.
    v_term = -(xv >= psi_hat).astype(float) * b2
    fit_v = fit_ols(np.column_stack([design, v_term]), yv, [*names, f"V({x})"], "breakpoint")
    psi_se = float(np.sqrt(fit_v.cov[-1, -1]))
    crit = stats.t.ppf(0.5 + confidence / 2, fit_v.df_resid)

    se_left = float(np.sqrt(fit.cov[1, 1]))
    se_right = float(np.sqrt(fit.cov[1, 1] + fit.cov[2, 2] + 2 * fit.cov[1, 2]))
    se_change = float(np.sqrt(fit.cov[2, 2]))
    davies_p, process = davies_test(xv, yv, base, k=davies_k)
    row = {
        "x": x, "y": y, "breakpoint": psi_hat, "breakpoint_se": psi_se,
        "ci_low": psi_hat - crit * psi_se, "ci_high": psi_hat + crit * psi_se,
        "slope_left": b1, "slope_left_se": se_left,
        "slope_right": b1 + b2, "slope_right_se": se_right,
        "slope_change": b2, "slope_change_se": se_change,
        "slope_change_p": float(2 * stats.t.sf(abs(b2 / se_change), fit.df_resid)),
        "davies_p": davies_p, "rss": float(rss_hat), "rss_linear": rss0,
        "n": prepared.n, "n_dropped": prepared.n_dropped,
    }
    result = pd.DataFrame([row])
    result.attrs.update({
        "profile": pd.DataFrame({"psi": candidates, "rss": profile}),
        "davies": process,
        "coefficients": pd.DataFrame({"term": names, "estimate": fit.coef,
                                      "se": np.sqrt(np.diag(fit.cov))}),
        "note": prepared.note() + "; slope_change_p is conditional on the estimated breakpoint "
                                  "(use davies_p to test whether there is a change at all)",
    })
    return result
