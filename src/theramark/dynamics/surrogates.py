"""Null models for dynamic FC: stationary surrogates, surrogate p-values, motion checks.

A stationary linear Gaussian process can produce apparent "states" by sampling variability alone
(Liégeois et al. 2017). Statistics of dFC are therefore compared with the same statistic on
surrogates that keep the series' linear properties but are stationary by construction:

- phase randomisation (Prichard & Theiler 1994): the Fourier amplitudes of every ROI are kept and
  the *same* random phase is added to every ROI at each frequency, so the power spectra and all
  (circular) auto- and cross-covariances — zero lag included — are preserved exactly;
- multivariate autoregressive (MVAR) surrogates: a VAR(p) fitted by least squares, simulated with
  Gaussian innovations of the residual covariance.

Window-wise framewise displacement (FD) tests whether a state tracks head motion.

References
----------
Prichard D, Theiler J (1994). Generating surrogate data for time series with several simultaneously
measured variables. Physical Review Letters 73:951–954.
Liégeois R, Laumann TO, Snyder AZ, Zhou J, Yeo BTT (2017). Interpreting temporal fluctuations in
resting-state functional connectivity MRI. NeuroImage 163:437–455.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError
from theramark.group.inference import fdr_bh

__all__ = [
    "SurrogateTest",
    "fit_var",
    "motion_state_association",
    "mvar_surrogates",
    "phase_randomize",
    "surrogate_pvalue",
    "surrogate_test",
    "window_fd",
]


def _as_series(series: np.ndarray, name: str = "series", min_volumes: int = 4) -> np.ndarray:
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 2:
        raise BadInputError(f"{name}: shape {x.shape}; expected (n_volumes, n_rois)")
    if x.shape[0] < min_volumes:
        raise BadInputError(f"{name}: {x.shape[0]} volumes; at least {min_volumes} are needed")
    if not np.isfinite(x).all():
        raise BadInputError(f"{name}: holds NaN or infinite values")
    return x


def phase_randomize(
    series: np.ndarray, n_surrogates: int = 1, random_state: int | None = 0
) -> np.ndarray:
    """Multivariate phase-randomised surrogates (same random phases for every ROI).

    Parameters
    ----------
    series : ndarray, shape (n_volumes, n_rois)
    n_surrogates : int
    random_state : int or None

    Returns
    -------
    ndarray, shape (n_surrogates, n_volumes, n_rois)
        Same mean, Fourier amplitudes and circular cross-covariance at every lag as ``series``.

    Notes
    -----
    The zero-frequency term, and the Nyquist term of an even-length series, keep their phase so
    that the surrogate stays real.
    """
    x = _as_series(series)
    n = x.shape[0]
    rng = np.random.default_rng(random_state)
    spectrum = np.fft.rfft(x, axis=0)
    n_freq = spectrum.shape[0]
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(int(n_surrogates), n_freq))
    phases[:, 0] = 0.0
    if n % 2 == 0:
        phases[:, -1] = 0.0
    rotated = spectrum[None, :, :] * np.exp(1j * phases)[:, :, None]
    return np.fft.irfft(rotated, n=n, axis=1)


def fit_var(series: np.ndarray, order: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares VAR(p): ``x_t = c + Σ_l A_l x_{t−l} + e_t``.

    Returns
    -------
    intercept : ndarray (n_rois,)
    coefficients : ndarray (order, n_rois, n_rois)
        ``coefficients[l − 1] = A_l`` (row: equation, column: predictor).
    residual_cov : ndarray (n_rois, n_rois)
        Residual covariance with the degrees of freedom ``n − p − n_rois·p − 1`` (as statsmodels'
        ``VAR(...).fit(p).sigma_u``).
    """
    x = _as_series(series)
    n, r = x.shape
    p = int(order)
    if p < 1:
        raise BadInputError(f"order={order}: expected ≥ 1")
    dof = n - p - r * p - 1
    if dof < 1:
        raise BadInputError(
            f"VAR({p}) of {r} ROIs needs more than {p + r * p + 1} volumes; the series has {n}"
        )
    design = np.hstack([np.ones((n - p, 1))] + [x[p - lag : n - lag] for lag in range(1, p + 1)])
    target = x[p:]
    beta, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ beta
    intercept = beta[0]
    coefficients = beta[1:].reshape(p, r, r).transpose(0, 2, 1)
    return intercept, coefficients, resid.T @ resid / dof


def mvar_surrogates(
    series: np.ndarray,
    order: int = 1,
    n_surrogates: int = 1,
    random_state: int | None = 0,
    burn_in: int = 200,
) -> np.ndarray:
    """Stationary surrogates simulated from a VAR(p) fitted to ``series`` (Liégeois et al. 2017).

    Parameters
    ----------
    series : ndarray, shape (n_volumes, n_rois)
    order : int
        Lag order p.
    n_surrogates : int
    random_state : int or None
    burn_in : int
        Volumes simulated and dropped first, so that the surrogate starts in the stationary regime.

    Returns
    -------
    ndarray, shape (n_surrogates, n_volumes, n_rois)
        Gaussian innovations with the residual covariance; all surrogates advance together (one
        matrix product per volume).
    """
    x = _as_series(series)
    n, r = x.shape
    intercept, coefficients, cov = fit_var(x, order)
    p = coefficients.shape[0]
    rng = np.random.default_rng(random_state)
    m = int(n_surrogates)
    total = n + int(burn_in)
    # A tiny ridge keeps the Cholesky factor defined for a rank-deficient residual covariance.
    chol = np.linalg.cholesky(cov + 1e-12 * np.trace(cov) / r * np.eye(r))
    noise = rng.standard_normal((total, m, r)) @ chol.T + intercept
    out = np.empty((total, m, r))
    out[:p] = x.mean(axis=0)
    stacked = coefficients.transpose(0, 2, 1)  # (p, r_pred, r_eq) for row-vector products
    for t in range(p, total):
        value = noise[t].copy()
        for lag in range(p):
            value += out[t - lag - 1] @ stacked[lag]
        out[t] = value
    return out[int(burn_in):].transpose(1, 0, 2)


def surrogate_pvalue(observed: float, null: np.ndarray, alternative: str = "greater") -> float:
    """Monte-Carlo p-value ``(1 + #{null ≥ observed}) / (1 + n)``.

    ``alternative="less"`` counts ``null ≤ observed``; ``"two-sided"`` compares absolute values.
    """
    null = np.asarray(null, dtype=np.float64).ravel()
    null = null[np.isfinite(null)]
    if null.size == 0:
        raise BadInputError("surrogate_pvalue: no finite surrogate statistic")
    if alternative == "greater":
        hits = np.sum(null >= observed)
    elif alternative == "less":
        hits = np.sum(null <= observed)
    elif alternative == "two-sided":
        hits = np.sum(np.abs(null) >= abs(observed))
    else:
        raise BadInputError(f"alternative={alternative!r}: expected 'greater', 'less' or 'two-sided'")
    return float((1 + hits) / (1 + null.size))


@dataclass(frozen=True)
class SurrogateTest:
    """Observed statistic, its surrogate distribution and Monte-Carlo p-value."""

    observed: float
    null: np.ndarray
    p_value: float
    method: str


def surrogate_test(
    statistic: Callable[[list[np.ndarray]], float],
    series: Sequence[np.ndarray],
    n_surrogates: int = 99,
    method: str = "phase",
    random_state: int | None = 0,
    alternative: str = "greater",
    order: int = 1,
) -> SurrogateTest:
    """A statistic of a set of series against the same statistic on stationary surrogates.

    Parameters
    ----------
    statistic : callable
        ``statistic(list of (n_volumes, n_rois) arrays) -> float`` (e.g. the variance of a state's
        occupancy, or a dFC variability index).
    series : list of ndarray
        The observed series; surrogate set b replaces every series by its own surrogate b.
    n_surrogates : int
    method : {"phase", "mvar"}
        :func:`phase_randomize` or :func:`mvar_surrogates` (VAR of ``order``).
    random_state : int or None
    alternative : {"greater", "less", "two-sided"}

    Returns
    -------
    SurrogateTest
        ``p_value = (1 + #{null ≥ observed}) / (1 + n_surrogates)`` for ``"greater"``.
    """
    xs = [_as_series(s, f"series[{i}]") for i, s in enumerate(series)]
    n_surr = int(n_surrogates)
    if n_surr < 1:
        raise BadInputError(f"n_surrogates={n_surrogates}: expected ≥ 1")
    seeds = np.random.default_rng(random_state).integers(0, 2**63 - 1, size=len(xs))
    if method == "phase":
        surr = [phase_randomize(x, n_surr, int(s)) for x, s in zip(xs, seeds, strict=True)]
    elif method == "mvar":
        surr = [mvar_surrogates(x, order, n_surr, int(s)) for x, s in zip(xs, seeds, strict=True)]
    else:
        raise BadInputError(f"method={method!r}: expected 'phase' or 'mvar'")
    observed = float(statistic(xs))
    null = np.array([statistic([s[b] for s in surr]) for b in range(n_surr)], dtype=np.float64)
    return SurrogateTest(observed, null, surrogate_pvalue(observed, null, alternative), method)


def window_fd(fd: np.ndarray, window: int, step: int = 1) -> np.ndarray:
    """Mean framewise displacement of each sliding window (the windows of ``fit_states``).

    Parameters
    ----------
    fd : ndarray, shape (n_volumes,)
        Framewise displacement in mm (fMRIPrep's first value is n/a: NaNs are skipped).
    window, step : int
        Window length and step in volumes.

    Returns
    -------
    ndarray, shape ((n_volumes − window) // step + 1,)
        Mean of the finite FD values in each window (NaN if none).
    """
    f = np.asarray(fd, dtype=np.float64).ravel()
    window, step = int(window), int(step)
    if window < 1 or window > f.size or step < 1:
        raise BadInputError(f"window={window}, step={step}: expected 1 ≤ window ≤ {f.size} and step ≥ 1")
    finite = np.isfinite(f)
    csum = np.r_[0.0, np.cumsum(np.where(finite, f, 0.0))]
    ccount = np.r_[0, np.cumsum(finite)]
    starts = np.arange(0, f.size - window + 1, step)
    total = csum[starts + window] - csum[starts]
    count = ccount[starts + window] - ccount[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def motion_state_association(
    labels: Sequence[np.ndarray],
    fd_windows: Sequence[np.ndarray],
    n_states: int,
    level: str = "series",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Does a state track head motion? Association of each state with window-wise FD.

    Parameters
    ----------
    labels : list of ndarray of int
        State per window, one array per series (``StateFit.labels``).
    fd_windows : list of ndarray
        Mean FD per window (:func:`window_fd`), same lengths as ``labels``.
    n_states : int
    level : {"series", "window"}
        ``"series"``: Pearson r across series between the state's occupancy and the series' mean
        window FD (series are the independent units). ``"window"``: within each series, the
        point-biserial r between "in state k" and window FD; the Fisher-z mean across series is
        reported and tested against 0 with a one-sample t-test across series (windows within a
        series are autocorrelated, so they are not counted as independent).
    alpha : float
        FDR level (Benjamini–Hochberg across states) for ``flagged``.

    Returns
    -------
    DataFrame with columns ``state, r_with_fd, p, p_fdr, flagged, n`` (``n``: series used).
    """
    k = int(n_states)
    if len(labels) != len(fd_windows):
        raise BadInputError(f"labels: {len(labels)} series; fd_windows: {len(fd_windows)}")
    labs = [np.asarray(lab, dtype=np.int64) for lab in labels]
    fds = [np.asarray(f, dtype=np.float64) for f in fd_windows]
    bad = [f"series[{i}]: {a.size} labels, {b.size} FD windows" for i, (a, b) in
           enumerate(zip(labs, fds, strict=True)) if a.size != b.size]
    if bad:
        raise BadInputError("labels and fd_windows differ in length", bad)
    rows = []
    if level == "series":
        occupancy = np.array([np.bincount(a, minlength=k)[:k] / a.size for a in labs])
        mean_fd = np.array([np.nanmean(f) for f in fds])
        for state in range(k):
            x = occupancy[:, state]
            if len(labs) < 3 or np.ptp(x) == 0 or np.ptp(mean_fd) == 0:
                r, p = np.nan, np.nan
            else:
                r, p = stats.pearsonr(x, mean_fd)
            rows.append((state, float(r), float(p), len(labs)))
    elif level == "window":
        for state in range(k):
            zs = []
            for a, f in zip(labs, fds, strict=True):
                ok = np.isfinite(f)
                x, y = (a[ok] == state).astype(float), f[ok]
                if ok.sum() > 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                    zs.append(np.arctanh(np.clip(np.corrcoef(x, y)[0, 1], -0.999999, 0.999999)))
            zs = np.asarray(zs)
            if zs.size < 3:
                r, p = np.nan, np.nan
            else:
                r, p = np.tanh(zs.mean()), stats.ttest_1samp(zs, 0.0).pvalue
            rows.append((state, float(r), float(p), int(zs.size)))
    else:
        raise BadInputError(f"level={level!r}: expected 'series' or 'window'")
    table = pd.DataFrame(rows, columns=["state", "r_with_fd", "p", "n"])
    table.insert(3, "p_fdr", fdr_bh(table["p"].to_numpy()))
    table.insert(4, "flagged", (table["p_fdr"] < alpha).to_numpy())
    return table
