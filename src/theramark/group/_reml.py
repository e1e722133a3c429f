"""Restricted maximum likelihood for the random-intercept linear mixed model, vectorized over features.

The model is ``y = X beta + Z b + e`` with one random intercept per cluster (participant),
``b ~ N(0, tau2)``, ``e ~ N(0, sigma2)``. Writing ``gamma = tau2 / sigma2`` (lme4's ``theta**2``),
the marginal covariance of a cluster of size ``n_i`` is ``sigma2 * (I + gamma J)``, whose inverse is
``(I - c_i J) / sigma2`` with ``c_i = gamma / (1 + n_i gamma)``. Every quantity of the REML criterion
then reduces to cluster sums of ``X`` and ``y`` (sufficient statistics). Since ``c_i`` depends on the
cluster only through its size, those sums are totalled once per distinct size (``K`` of them, at
most the number of sessions), and evaluating the criterion costs ``O(K * p**2)`` per feature whatever
the number of observations or participants. The same design can be fitted to thousands of features
at once: the one-dimensional profile over ``theta`` is searched for all features together (a grid,
then golden-section refinement). Each feature's numbers are summed in a fixed order (``einsum``,
not BLAS, for the products over observations), so fitting the features in column blocks gives the
same numbers as fitting them together.

The criterion is lme4's ``REMLcrit``: ``log|H| + log|X'H^-1 X| + (N - p)(1 + log(2 pi s2))`` with
``s2 = r'H^-1 r / (N - p)``, profiled over ``sigma2`` (Bates et al. 2015, J Stat Softw 67(1), eq. 41).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass
class _Stats:
    """Sufficient statistics of a design shared by ``n_features`` responses."""

    xtx: np.ndarray  # (p, p)
    xty: np.ndarray  # (p, F)
    yty: np.ndarray  # (F,)
    sx: np.ndarray  # (m, p) cluster sums of X
    sy: np.ndarray  # (m, F) cluster sums of y
    sizes: np.ndarray  # (m,)
    n_obs: int
    n_params: int
    x: np.ndarray  # (n, p)
    y: np.ndarray  # (n, F), centred when the design spans the constant
    codes: np.ndarray  # (n,) cluster index of each observation
    beta_offset: np.ndarray  # (p, F) added back to the coefficients of the centred y
    # the clusters grouped by size k (K distinct sizes): H^-1's weight depends on the size only
    size_values: np.ndarray  # (K,) distinct cluster sizes
    size_counts: np.ndarray  # (K,) clusters of each size
    sxx_k: np.ndarray  # (K, p*p) sum over clusters of size k of vec(sx_i sx_i')
    sxy_k: np.ndarray  # (K, F, p) sum over clusters of size k of sy_i sx_i
    syy_k: np.ndarray  # (K, F) sum over clusters of size k of sy_i**2


def sufficient_stats(x: np.ndarray, y: np.ndarray, clusters: np.ndarray) -> _Stats:
    """Cluster sums for ``x`` (n_obs, p), ``y`` (n_obs, n_features), ``clusters`` integer codes."""
    codes = np.ravel(np.unique(clusters, return_inverse=True)[1])
    m = codes.max() + 1
    ones = np.ones(x.shape[0])
    direction = np.linalg.lstsq(x, ones, rcond=None)[0]
    beta_offset = np.zeros((x.shape[1], y.shape[1]))
    if np.allclose(x @ direction, ones):
        # REML is invariant to y + X d; centring avoids cancellation in the sums of squares
        mean = y.mean(axis=0)
        y = y - mean
        beta_offset = direction[:, None] * mean[None, :]
    # cluster sums by a stable sort and segment sums: O(n) per column, where an (m, n) indicator
    # product costs O(m n) per column (thousands of participants, tens of thousands of features)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    sizes = np.bincount(codes, minlength=m).astype(float)
    sx = np.add.reduceat(x[order], starts, axis=0)
    sy = np.add.reduceat(y[order], starts, axis=0)
    size_values, size_class, size_counts = np.unique(sizes, return_inverse=True, return_counts=True)
    p = x.shape[1]
    sxx_k = np.zeros((len(size_values), p * p))
    sxy_k = np.zeros((len(size_values), y.shape[1], p))
    syy_k = np.zeros((len(size_values), y.shape[1]))
    for k in range(len(size_values)):
        members = size_class == k
        sx_k, sy_k = sx[members], sy[members]
        sxx_k[k] = (sx_k.T @ sx_k).ravel()
        # einsum (not BLAS) sums each column in the same order whatever the number of columns, so
        # fitting features in blocks gives the same numbers as fitting them all at once
        sxy_k[k] = np.einsum("mf,mp->fp", sy_k, sx_k)
        syy_k[k] = np.einsum("mf,mf->f", sy_k, sy_k)
    return _Stats(
        xtx=x.T @ x, xty=np.einsum("np,nf->pf", x, y), yty=np.einsum("nf,nf->f", y, y),
        sx=sx, sy=sy, sizes=sizes, n_obs=x.shape[0], n_params=p, x=x, y=y, codes=codes,
        beta_offset=beta_offset, size_values=size_values, size_counts=size_counts.astype(float),
        sxx_k=sxx_k, sxy_k=sxy_k, syy_k=syy_k,
    )


def _weighted(stats: _Stats, gamma: np.ndarray):
    """A = X'H^-1X (F,p,p), b = X'H^-1y (F,p), yHy (F,), log|H| (F,) for gamma (F,).

    The weight of cluster ``i`` is ``c_i = gamma / (1 + n_i gamma)``, a function of its size only,
    so the cluster sums enter through their totals per distinct size (``_Stats.sxx_k`` ...): one
    evaluation costs ``O(F K p**2)`` for ``K`` distinct sizes (the number of sessions at most),
    whatever the number of participants.
    """
    n_features, p = gamma.shape[0], stats.n_params
    c = gamma[:, None] / (1.0 + stats.size_values[None, :] * gamma[:, None])  # (F, K)
    a = np.broadcast_to(stats.xtx, (n_features, p, p)).copy()
    b = stats.xty.T.copy()
    yhy = stats.yty.copy()
    logdet_h = np.zeros(n_features)
    for k, size in enumerate(stats.size_values):
        # a loop over the few sizes keeps each feature's sum in a fixed order (block invariance)
        a -= (c[:, k, None] * stats.sxx_k[k][None, :]).reshape(n_features, p, p)
        b -= c[:, k, None] * stats.sxy_k[k]
        yhy -= c[:, k] * stats.syy_k[k]
        logdet_h += stats.size_counts[k] * np.log1p(size * gamma)
    return a, b, yhy, logdet_h


def _gls(stats: _Stats, gamma: np.ndarray, precise: bool = False):
    a, b, yhy, logdet_h = _weighted(stats, gamma)
    beta = np.linalg.solve(a, b[..., None])[..., 0]
    if precise:
        # r'H^-1 r from the residuals themselves: no cancellation (used for finite differences)
        resid = stats.y - stats.x @ beta.T  # (n, F)
        cluster_sums = np.zeros((len(stats.sizes), resid.shape[1]))
        np.add.at(cluster_sums, stats.codes, resid)
        c = gamma / (1.0 + stats.sizes[:, None] * gamma[None, :])  # (m, F)
        rhr = np.einsum("nf,nf->f", resid, resid) - np.sum(c * cluster_sums**2, axis=0)
    else:
        rhr = yhy - np.einsum("fp,fp->f", b, beta)
    rhr = np.maximum(rhr, np.finfo(float).tiny)
    return a, beta, rhr, logdet_h


def reml_criterion(stats: _Stats, gamma: np.ndarray) -> np.ndarray:
    """lme4's REML criterion (-2 log restricted likelihood, profiled over sigma2), shape (F,)."""
    a, _, rhr, logdet_h = _gls(stats, gamma)
    dof = stats.n_obs - stats.n_params
    logdet_a = np.linalg.slogdet(a)[1]
    return logdet_h + logdet_a + dof * (1.0 + np.log(2.0 * np.pi * rhr / dof))


def _deviance_varpar(stats: _Stats, sigma2: np.ndarray, tau2: np.ndarray) -> np.ndarray:
    """-2 log restricted likelihood at given (sigma2, tau2), not profiled (for the Hessian)."""
    gamma = np.maximum(tau2, 0.0) / sigma2
    a, _, rhr, logdet_h = _gls(stats, gamma, precise=True)
    p = stats.n_params
    logdet_a = np.linalg.slogdet(a)[1]
    return ((stats.n_obs - p) * np.log(2.0 * np.pi * sigma2) + logdet_h + logdet_a + rhr / sigma2)


@dataclass
class RemlFit:
    """REML estimates for ``F`` features sharing one design."""

    beta: np.ndarray  # (F, p)
    cov_beta: np.ndarray  # (F, p, p)
    sigma2: np.ndarray  # (F,)
    tau2: np.ndarray  # (F,)
    criterion: np.ndarray  # (F,)
    stats: _Stats


def fit_reml(
    stats: _Stats, theta_max: float = 1000.0, n_grid: int = 71, n_golden: int = 70
) -> RemlFit:
    """Maximize the restricted likelihood over ``theta = tau / sigma`` in ``[0, theta_max]``.

    A grid in ``theta`` (dense near zero) locates the best bracket for every feature; golden-section
    search then narrows each bracket to about ``1e-12`` of its width. The boundary ``theta = 0``
    (no between-cluster variance) is a grid point, so boundary fits are found as lme4 finds them.
    """
    n_features = stats.yty.shape[0]
    grid = np.concatenate([[0.0], np.geomspace(1e-3, theta_max, n_grid - 1)])
    crit = np.stack([reml_criterion(stats, np.full(n_features, g**2)) for g in grid], axis=1)
    best = np.argmin(crit, axis=1)
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, len(grid) - 1)]
    x1 = hi - _GOLDEN * (hi - lo)
    x2 = lo + _GOLDEN * (hi - lo)
    f1 = reml_criterion(stats, x1**2)
    f2 = reml_criterion(stats, x2**2)
    for _ in range(n_golden):
        left = f1 < f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        next_x1 = np.where(left, hi - _GOLDEN * (hi - lo), x2)
        next_x2 = np.where(left, x1, lo + _GOLDEN * (hi - lo))
        f_new = reml_criterion(stats, np.where(left, next_x1, next_x2) ** 2)
        f1, f2 = np.where(left, f_new, f2), np.where(left, f1, f_new)
        x1, x2 = next_x1, next_x2
    theta = np.where(f1 < f2, x1, x2)
    f_theta = np.minimum(f1, f2)
    # keep the grid optimum when the bracket search did not beat it (e.g. the boundary theta = 0)
    grid_best = crit[np.arange(n_features), best]
    theta = np.where(grid_best <= f_theta, grid[best], theta)
    gamma = theta**2
    a, beta, rhr, _ = _gls(stats, gamma, precise=True)
    sigma2 = rhr / (stats.n_obs - stats.n_params)
    cov = sigma2[:, None, None] * np.linalg.inv(a)
    return RemlFit(beta=beta + stats.beta_offset.T, cov_beta=cov, sigma2=sigma2, tau2=gamma * sigma2,
                   criterion=reml_criterion(stats, gamma), stats=stats)


def satterthwaite_df(fit: RemlFit, contrasts: np.ndarray, rel_step: float = 2e-4) -> np.ndarray:
    """Satterthwaite degrees of freedom of ``L beta`` for each feature and contrast row.

    Follows lmerTest (Kuznetsova et al. 2017): ``df = 2 f**2 / (g' W g)`` with
    ``f = Var(L beta)``, ``g`` its gradient in the variance parameters ``(sigma2, tau2)`` and ``W``
    their asymptotic covariance ``2 H^-1`` (``H`` the Hessian of the -2 restricted log-likelihood),
    both by central finite differences. Where ``tau2`` is estimated on the boundary (0) it is held
    fixed, which leaves ``sigma2`` alone (as lmerTest does for a singular fit).

    Parameters
    ----------
    fit : RemlFit
    contrasts : ndarray, shape (k, p)

    Returns
    -------
    ndarray, shape (F, k)
    """
    stats = fit.stats
    s2, t2 = fit.sigma2, fit.tau2
    contrasts = np.atleast_2d(contrasts)

    def var_contrast(sig2, tau2):
        gamma = np.maximum(tau2, 0.0) / sig2
        a = _weighted(stats, gamma)[0]
        inv = np.linalg.inv(a)
        return sig2[:, None] * np.einsum("kp,fpq,kq->fk", contrasts, inv, contrasts)

    h1 = rel_step * s2
    scale_t = np.where(t2 > 0, t2, s2)
    h2 = rel_step * scale_t
    dev = lambda a, b: _deviance_varpar(stats, a, b)  # noqa: E731
    f0 = dev(s2, t2)
    h11 = (dev(s2 + h1, t2) - 2 * f0 + dev(s2 - h1, t2)) / h1**2
    h22 = (dev(s2, t2 + h2) - 2 * f0 + dev(s2, t2 - h2)) / h2**2
    h12 = (dev(s2 + h1, t2 + h2) - dev(s2 + h1, t2 - h2) - dev(s2 - h1, t2 + h2)
           + dev(s2 - h1, t2 - h2)) / (4 * h1 * h2)
    g1 = (var_contrast(s2 + h1, t2) - var_contrast(s2 - h1, t2)) / (2 * h1[:, None])
    g2 = (var_contrast(s2, t2 + h2) - var_contrast(s2, t2 - h2)) / (2 * h2[:, None])
    f = var_contrast(s2, t2)
    interior = t2 > 1e-10 * s2
    det = h11 * h22 - h12**2
    with np.errstate(divide="ignore", invalid="ignore"):
        # W = 2 H^-1 (both branches are evaluated; only the selected one is used)
        w11 = np.where(interior, 2 * h22 / det, 2 / h11)
        w22 = np.where(interior, 2 * h11 / det, 0.0)
        w12 = np.where(interior, -2 * h12 / det, 0.0)
        quad = (g1**2 * w11[:, None] + 2 * g1 * g2 * w12[:, None] + g2**2 * w22[:, None])
        return 2 * f**2 / quad
