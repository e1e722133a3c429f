"""Polychoric correlations of ordinal items (two-step maximum likelihood, Olsson 1979).

Step 1: thresholds of each item from its marginal cumulative proportions, ``τ_k = Φ⁻¹(P(X ≤ k))``.
Step 2: for each pair, the latent correlation ρ maximizing the multinomial likelihood of the
contingency table, cell probabilities being rectangles of the standard bivariate normal.

This is the estimator lavaan's ``lavCor`` uses (and so qgraph's ``cor_auto``); no continuity
correction is applied to empty cells (psych's ``polychoric`` adds 0.5 by default, which shifts
estimates slightly on sparse tables).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special

from theramark.errors import BadInputError

__all__ = ["bivariate_normal_cdf", "polychoric", "polychoric_matrix"]

_MAX_LEVELS = 20
_BOUND = 8.0  # Φ(8) = 1 - 6e-16: thresholds at ±∞ are evaluated here
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(48)


def _phi(x: np.ndarray) -> np.ndarray:
    return special.ndtr(x)


def bivariate_normal_cdf(h: np.ndarray, k: np.ndarray, rho: float) -> np.ndarray:
    """P(Z₁ ≤ h, Z₂ ≤ k) for a standard bivariate normal with correlation ``rho``.

    Uses Sheppard's identity ``Φ₂(h, k; ρ) = Φ(h)Φ(k) + (2π)⁻¹ ∫₀^{asin ρ}
    exp(-(h² + k² - 2hk sin θ) / (2 cos² θ)) dθ`` with 48-point Gauss–Legendre quadrature (smooth
    integrand; absolute error below 1e-10 for |ρ| ≤ 0.99). ``h`` and ``k`` broadcast; infinite limits
    are allowed.
    """
    h = np.clip(np.asarray(h, dtype=float), -_BOUND, _BOUND)
    k = np.clip(np.asarray(k, dtype=float), -_BOUND, _BOUND)
    upper = np.arcsin(np.clip(rho, -1.0, 1.0))
    theta = 0.5 * upper * (_NODES + 1.0)                  # nodes mapped to [0, asin ρ]
    sin_t, cos2_t = np.sin(theta), np.cos(theta) ** 2
    hh = (h * h + k * k)[..., None]
    hk = (h * k)[..., None]
    integrand = np.exp(-(hh - 2.0 * hk * sin_t) / (2.0 * cos2_t))
    integral = 0.5 * upper * (integrand * _WEIGHTS).sum(axis=-1)
    return _phi(h) * _phi(k) + integral / (2.0 * np.pi)


def _codes(column: pd.Series) -> tuple[np.ndarray, int]:
    levels = np.unique(column.to_numpy())
    if levels.size < 2:
        raise BadInputError(f"column {column.name!r}: a polychoric correlation needs at least 2 categories")
    if levels.size > _MAX_LEVELS:
        raise BadInputError(
            f"column {column.name!r}: {levels.size} distinct values; polychoric correlations are for "
            f"ordinal items with at most {_MAX_LEVELS} categories (use corr='pearson' or 'spearman')")
    return np.searchsorted(levels, column.to_numpy()), levels.size


def _thresholds(codes: np.ndarray, n_levels: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_levels)
    cumulative = np.cumsum(counts)[:-1] / counts.sum()
    inner = special.ndtri(cumulative)
    return np.concatenate([[-np.inf], inner, [np.inf]])


def _pair_rho(table: np.ndarray, tau_x: np.ndarray, tau_y: np.ndarray) -> float:
    mask = table > 0
    H, K = np.meshgrid(tau_x, tau_y, indexing="ij")

    def negative_loglik(rho: float) -> float:
        F = bivariate_normal_cdf(H, K, rho)
        cells = F[1:, 1:] - F[:-1, 1:] - F[1:, :-1] + F[:-1, :-1]
        return -float((table[mask] * np.log(np.maximum(cells[mask], 1e-300))).sum())

    result = optimize.minimize_scalar(negative_loglik, bounds=(-0.9999, 0.9999), method="bounded",
                                      options={"xatol": 1e-9})
    return float(result.x)


def polychoric(x: pd.Series | np.ndarray, y: pd.Series | np.ndarray) -> float:
    """Polychoric correlation of two ordinal variables (complete pairs).

    Parameters
    ----------
    x, y : array-like, shape (n,)
        Ordered categories (any sortable codes; at most 20 distinct values each).

    Returns
    -------
    float
        Maximum-likelihood latent correlation given the marginal thresholds.
    """
    frame = pd.DataFrame({"x": np.asarray(x), "y": np.asarray(y)})
    return float(polychoric_matrix(frame).iloc[0, 1])


def polychoric_matrix(data: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """Polychoric correlation matrix of ordinal items.

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_items)
        Complete ordinal responses (no missing values).

    Returns
    -------
    DataFrame, shape (n_items, n_items)
        Unit diagonal. The matrix is not guaranteed to be positive definite (pairwise estimates);
        the network estimator checks that.
    """
    if isinstance(data, np.ndarray):
        data = pd.DataFrame(data, columns=[f"V{i + 1}" for i in range(data.shape[1])])
    if data.isna().any().any():
        raise BadInputError("polychoric correlations need complete data; drop or impute missing values first")
    coded = [_codes(data[c]) for c in data.columns]
    taus = [_thresholds(codes, levels) for codes, levels in coded]
    p = data.shape[1]
    out = np.eye(p)
    for i in range(p):
        for j in range(i + 1, p):
            (ci, li), (cj, lj) = coded[i], coded[j]
            table = np.zeros((li, lj))
            np.add.at(table, (ci, cj), 1.0)
            out[i, j] = out[j, i] = _pair_rho(table, taus[i], taus[j])
    return pd.DataFrame(out, index=data.columns, columns=data.columns)
