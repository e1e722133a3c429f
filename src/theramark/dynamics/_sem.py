"""Maximum-likelihood machinery for mean-and-covariance structure models with missing data.

A model is anything with ``n_params``, ``start(mean, cov)`` and ``moments(theta) -> (mu, Sigma)``
where ``moments`` is written with plain array operations so that it also accepts a complex
``theta``: the Jacobian of the implied moments is then taken by the complex step, exact to machine
precision and free of any step-size choice. The data enter only through the sufficient statistics
of each missing-data pattern (count, mean, scatter), so one log-likelihood costs one Cholesky per
pattern, whatever the number of participants.

The fit is full-information maximum likelihood (FIML; the casewise likelihood of every observed
value, as lavaan's ``missing = "ml"``) by Fisher scoring with step halving; standard errors come
from the observed information, the numerically differentiated analytic gradient (lavaan's default
for ``missing = "ml"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from theramark.errors import AnalysisError

_LOG_2PI = float(np.log(2.0 * np.pi))
_COMPLEX_STEP = 1e-30


class MomentModel(Protocol):
    """A mean-and-covariance structure: ``theta`` (n_params,) → implied mean (p,), covariance (p, p)."""

    n_params: int

    def moments(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def start(self, mean: np.ndarray, cov: np.ndarray) -> np.ndarray: ...


@dataclass
class Patterns:
    """Sufficient statistics of each missing-data pattern of an (n, p) data matrix.

    Attributes
    ----------
    observed : list of int arrays
        Indices of the variables observed in each pattern.
    count : (n_patterns,) int array
        Rows with that pattern.
    mean : list of arrays
        Mean of the observed variables over the pattern's rows.
    scatter : list of arrays
        Sum over the pattern's rows of the outer products of deviations from that mean.
    n_rows, n_vars : int
    """

    observed: list[np.ndarray]
    count: np.ndarray
    mean: list[np.ndarray]
    scatter: list[np.ndarray]
    n_rows: int
    n_vars: int

    @property
    def complete(self) -> bool:
        return len(self.observed) == 1 and len(self.observed[0]) == self.n_vars


def missing_patterns(data: np.ndarray) -> Patterns:
    """Group the rows of ``data`` (n, p; NaN = missing) by pattern; rows with nothing observed are dropped."""
    data = np.asarray(data, dtype=float)
    seen = ~np.isnan(data)
    keep = seen.any(axis=1)
    data, seen = data[keep], seen[keep]
    keys, inverse = np.unique(seen, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    observed, count, means, scatters = [], [], [], []
    for k, key in enumerate(keys):
        rows = data[inverse == k][:, key]
        centred = rows - rows.mean(axis=0)
        observed.append(np.flatnonzero(key))
        count.append(rows.shape[0])
        means.append(rows.mean(axis=0))
        scatters.append(centred.T @ centred)
    return Patterns(observed, np.asarray(count), means, scatters, int(data.shape[0]), int(data.shape[1]))


def _pattern_terms(mu: np.ndarray, sigma: np.ndarray, pats: Patterns):
    """Per pattern: (index, observed idx, Sigma_oo^-1, log det Sigma_oo, mean deviation); None if not PD."""
    out = []
    for k, obs in enumerate(pats.observed):
        s_oo = sigma[np.ix_(obs, obs)]
        try:
            chol = np.linalg.cholesky(s_oo)
        except np.linalg.LinAlgError:
            return None
        diag = np.diag(chol)
        if not np.all(np.isfinite(chol)) or np.any(diag <= 0):
            return None
        inv_chol = np.linalg.inv(chol)
        out.append((k, obs, inv_chol.T @ inv_chol, 2.0 * np.log(diag).sum(), pats.mean[k] - mu[obs]))
    return out


def loglik(mu: np.ndarray, sigma: np.ndarray, pats: Patterns) -> float:
    """FIML log-likelihood (sum over rows); ``-inf`` when a pattern's covariance is not positive definite."""
    terms = _pattern_terms(mu, sigma, pats)
    if terms is None:
        return -np.inf
    total = 0.0
    for k, obs, inv, logdet, dev in terms:
        n = pats.count[k]
        quad = np.sum(inv * pats.scatter[k]) + n * dev @ inv @ dev
        total -= 0.5 * (n * (len(obs) * _LOG_2PI + logdet) + quad)
    return float(total)


def moment_jacobian(model: MomentModel, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of the implied moments by the complex step, for ``theta`` of shape (..., k).

    Returns (..., p, k) for the mean and (..., p, p, k) for Sigma; ``model.moments`` is called once
    on the whole batch of perturbed parameter vectors.
    """
    k = model.n_params
    mus, sigmas = model.moments(theta[..., None, :] + 1j * _COMPLEX_STEP * np.eye(k))
    return (np.swapaxes(mus.imag, -1, -2) / _COMPLEX_STEP,
            np.moveaxis(sigmas.imag, -3, -1) / _COMPLEX_STEP)


def batch_gradient(model: MomentModel, thetas: np.ndarray, pats: Patterns) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihoods (b,) and gradients (b, k) at a batch of parameter vectors (b, k).

    A parameter vector whose implied covariance is not positive definite for some pattern gets
    ``-inf`` and a NaN gradient.
    """
    thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
    b, p = thetas.shape[0], pats.n_vars
    mu, sigma = model.moments(thetas)
    ll = np.zeros(b)
    g_mu, g_sigma = np.zeros((b, p)), np.zeros((b, p, p))
    ok = np.ones(b, dtype=bool)
    for k, obs in enumerate(pats.observed):
        n, size = pats.count[k], len(obs)
        s_oo = sigma[:, obs][:, :, obs]
        pd_here = np.linalg.eigvalsh(s_oo)[:, 0] > 0
        ok &= pd_here
        # the non-PD ones are discarded; replacing them keeps every product below finite
        s_oo = np.where(pd_here[:, None, None], s_oo, np.eye(size))
        logdet = np.linalg.slogdet(s_oo)[1]
        inv = np.linalg.inv(s_oo)
        dev = pats.mean[k] - mu[:, obs]
        scatter = pats.scatter[k] + n * dev[:, :, None] * dev[:, None, :]
        ll -= 0.5 * (n * (size * _LOG_2PI + logdet) + np.einsum("bij,bji->b", inv, scatter))
        g_mu[:, obs] += n * np.einsum("bij,bj->bi", inv, dev)
        g_sigma[:, obs[:, None], obs[None, :]] += 0.5 * (inv @ scatter @ inv - n * inv)
    j_mu, j_sigma = moment_jacobian(model, thetas)
    grad = np.einsum("bp,bpk->bk", g_mu, j_mu) + np.einsum("bij,bijk->bk", g_sigma, j_sigma)
    ll[~ok] = -np.inf
    grad[~ok] = np.nan
    return ll, grad


def gradient(model: MomentModel, theta: np.ndarray, pats: Patterns) -> tuple[float, np.ndarray | None]:
    """Log-likelihood and its gradient in ``theta``; (-inf, None) when Sigma is not positive definite."""
    ll, grad = batch_gradient(model, theta[None, :], pats)
    if not np.isfinite(ll[0]):
        return -np.inf, None
    return float(ll[0]), grad[0]


def expected_information(model: MomentModel, theta: np.ndarray, pats: Patterns) -> np.ndarray | None:
    """Fisher information of the FIML likelihood (k, k), summed over rows."""
    mu, sigma = model.moments(theta)
    terms = _pattern_terms(mu, sigma, pats)
    if terms is None:
        return None
    j_mu, j_sigma = moment_jacobian(model, theta)
    info = np.zeros((model.n_params, model.n_params))
    for k, obs, inv, _, _ in terms:
        n = pats.count[k]
        jm = j_mu[obs]
        a = np.einsum("ij,jlk->ilk", inv, j_sigma[np.ix_(obs, obs)])
        info += n * (jm.T @ inv @ jm + 0.5 * np.einsum("ijk,jil->kl", a, a))
    return info


@dataclass
class Optimum:
    theta: np.ndarray
    loglik: float
    converged: bool
    n_iter: int
    max_gradient: float


def fisher_scoring(model: MomentModel, theta: np.ndarray, pats: Patterns, max_iter: int = 500,
                   tol: float = 1e-9) -> Optimum:
    """Maximize the FIML likelihood by Fisher scoring, halving steps that lower it or leave Sigma not PD.

    Converged when the largest gradient entry per row (``|d loglik / d theta| / n``) is below ``tol``.
    """
    theta = np.asarray(theta, dtype=float).copy()
    ll, grad = gradient(model, theta, pats)
    if grad is None:
        raise AnalysisError("the starting values of the model give an implied covariance that is not "
                            "positive definite; the data may be degenerate (constant or collinear variables)")
    n, it = pats.n_rows, 0
    while it < max_iter:
        if np.max(np.abs(grad)) / n < tol:
            return Optimum(theta, ll, True, it, float(np.max(np.abs(grad)) / n))
        it += 1
        info = expected_information(model, theta, pats)
        step = np.linalg.lstsq(info, grad, rcond=None)[0]
        scale, improved = 1.0, False
        for _ in range(40):
            trial = theta + scale * step
            ll_trial, grad_trial = gradient(model, trial, pats)
            if grad_trial is not None and ll_trial >= ll - 1e-12 * abs(ll):
                improved = True
                break
            scale /= 2.0
        if not improved:
            break
        theta, ll, grad = trial, ll_trial, grad_trial
    max_grad = float(np.max(np.abs(grad)) / n)
    return Optimum(theta, ll, max_grad < tol * 100, it, max_grad)


def observed_information(model: MomentModel, theta: np.ndarray, pats: Patterns,
                         h: float = 1e-5) -> np.ndarray:
    """Minus the Hessian of the log-likelihood (k, k): central differences of the analytic gradient.

    All 2k gradients are evaluated as one batch. NaN when a step leaves the PD region.
    """
    k = model.n_params
    steps = np.diag(h * np.maximum(1.0, np.abs(theta)))
    _, grads = batch_gradient(model, np.concatenate([theta + steps, theta - steps]), pats)
    hess = ((grads[:k] - grads[k:]) / (2.0 * np.diag(steps))[:, None]).T
    return -0.5 * (hess + hess.T)


class SaturatedModel:
    """The unrestricted model (free mean and covariance) that the chi-square test compares against."""

    def __init__(self, p: int):
        self.p = p
        self.rows, self.cols = np.tril_indices(p)
        self.n_params = p + len(self.rows)

    def moments(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.asarray(theta)
        p = self.p
        sigma = np.zeros(theta.shape[:-1] + (p, p), dtype=theta.dtype)
        sigma[..., self.rows, self.cols] = theta[..., p:]
        sigma[..., self.cols, self.rows] = theta[..., p:]
        return theta[..., :p], sigma

    def start(self, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
        return np.concatenate([mean, cov[self.rows, self.cols]])


def saturated_fit(pats: Patterns, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """ML mean and covariance under missing data (closed form when complete) and their log-likelihood."""
    if pats.complete:
        mean, cov = pats.mean[0], pats.scatter[0] / pats.count[0]
        return mean, cov, loglik(mean, cov, pats), True
    mean = np.nanmean(data, axis=0)
    model = SaturatedModel(pats.n_vars)
    opt = fisher_scoring(model, model.start(mean, np.diag(np.nanvar(data, axis=0))), pats, tol=1e-11)
    mean, cov = model.moments(opt.theta)
    return mean, cov, opt.loglik, opt.converged


def independence_loglik(data: np.ndarray) -> float:
    """Log-likelihood of the baseline model (free means and variances, no covariances) by FIML.

    The variables are independent under this model, so the FIML fit is each variable's own ML
    mean and variance over the rows where it is observed.
    """
    total = 0.0
    for column in np.asarray(data, dtype=float).T:
        v = column[~np.isnan(column)]
        var = v.var()
        total -= 0.5 * len(v) * (_LOG_2PI + np.log(var) + 1.0)
    return float(total)
