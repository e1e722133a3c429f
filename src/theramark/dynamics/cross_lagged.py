"""Temporal precedence between two repeatedly measured variables: cross-lagged panel models.

Does a change in a brain feature precede a change in symptoms, or the other way round? A
cross-lagged panel model regresses each variable at one session on both variables at the session
before. Two models are fitted by maximum likelihood:

- the **CLPM** (``random_intercepts=False``): the observed scores themselves follow the lagged
  regressions. Stable differences between people leak into the autoregressive and cross-lagged
  paths, which then mix between-person and within-person association.
- the **RI-CLPM** (Hamaker, Kuiper & Grasman, 2015; the default): each variable is a person's
  stable level (a random intercept, ``RIx``/``RIy``, loadings fixed to 1, the two correlated) plus
  within-person deviations ``wx_t``/``wy_t`` that follow the lagged regressions. The lagged paths
  are then within-person effects: a person above their own level of ``x`` at one session tends to
  be above or below their own level of ``y`` at the next.

The parametrization is lavaan's for these models (Mulder & Hamaker, 2021): observed means free;
within components with loadings 1 and observed residual variances 0; lagged paths free for each
pair of sessions; the within components covary at the first session, their residuals at every
later one; the random intercepts covary with each other and not with the first-session within
components. Sessions a participant missed are handled by full-information maximum likelihood
(lavaan's ``missing = "ml"``): every participant with at least one observed value contributes.

Use :func:`cross_lagged` for the table of lagged paths (fit indices in ``.attrs["fit"]``) and
:func:`fit_cross_lagged` for the whole fit (every parameter, the implied moments, the saturated
fit, diagnostics).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from theramark._blas import single_threaded_blas
from theramark.dynamics import _sem
from theramark.errors import BadInputError
from theramark.tables import check_columns

__all__ = ["CrossLaggedResult", "cross_lagged", "fit_cross_lagged"]

_Z975 = float(stats.norm.ppf(0.975))


# ----------------------------------------------------------------------------------------------
# The model: implied mean and covariance of (x_1, y_1, x_2, y_2, ..., x_T, y_T)
# ----------------------------------------------------------------------------------------------
class LaggedPanelModel:
    """The CLPM or RI-CLPM for two variables over ``n_waves`` sessions, as a moment structure.

    The observed vector is ordered by session, ``x`` before ``y`` within one. The within
    components are ``w = (I - B)^-1 zeta`` with ``B`` holding the lagged paths (block
    sub-diagonal) and ``zeta`` the first-session components and later residuals (block-diagonal
    covariance ``Psi``), so ``Sigma = A Psi A' + L Phi L'`` where ``A = (I - B)^-1`` and ``L`` loads
    every ``x`` on ``RIx`` and every ``y`` on ``RIy``.
    """

    def __init__(self, n_waves: int, random_intercepts: bool):
        self.n_waves, self.random_intercepts = n_waves, random_intercepts
        self.p = 2 * n_waves
        labels: list[tuple[str, str, str]] = []
        for t in range(1, n_waves + 1):
            labels += [(f"x{t}", "~1", ""), (f"y{t}", "~1", "")]
        if random_intercepts:
            labels += [("RIx", "~~", "RIx"), ("RIx", "~~", "RIy"), ("RIy", "~~", "RIy")]
        labels += [("wx1", "~~", "wx1"), ("wx1", "~~", "wy1"), ("wy1", "~~", "wy1")]
        for t in range(2, n_waves + 1):
            labels += [(f"wx{t}", "~", f"wx{t - 1}"), (f"wx{t}", "~", f"wy{t - 1}"),
                       (f"wy{t}", "~", f"wx{t - 1}"), (f"wy{t}", "~", f"wy{t - 1}"),
                       (f"wx{t}", "~~", f"wx{t}"), (f"wx{t}", "~~", f"wy{t}"), (f"wy{t}", "~~", f"wy{t}")]
        self.labels = labels
        self.n_params = len(labels)
        self.loadings = np.zeros((self.p, 2))
        self.loadings[0::2, 0] = 1.0
        self.loadings[1::2, 1] = 1.0
        self._place()

    @staticmethod
    def _sym2(a, b, c):
        return np.array([[a, b], [b, c]])

    def _place(self) -> None:
        """Where each parameter goes: index arrays into the lagged-path, Psi and Phi matrices."""
        pos, self._b, self._psi, self._phi = self.p, [], [], []
        sym = ((0, 0), (0, 1), (1, 1))
        if self.random_intercepts:
            self._phi = [(pos + k, i, j) for k, (i, j) in enumerate(sym)]
            pos += 3
        self._psi += [(pos + k, i, j) for k, (i, j) in enumerate(sym)]
        pos += 3
        for t in range(1, self.n_waves):
            self._b += [(pos + 2 * i + j, 2 * t + i, 2 * t - 2 + j) for i in range(2) for j in range(2)]
            self._psi += [(pos + 4 + k, 2 * t + i, 2 * t + j) for k, (i, j) in enumerate(sym)]
            pos += 7
        self._b, self._psi = np.array(self._b).T, np.array(self._psi).T
        self._phi = np.array(self._phi).T if self._phi else None

    def _unpack(self, theta: np.ndarray):
        """(mu, Phi or None, [Psi_1..Psi_T], [B_2..B_T]) from ``theta``."""
        p, pos = self.p, self.p
        phi = None
        if self.random_intercepts:
            phi = self._sym2(*theta[pos:pos + 3])
            pos += 3
        psis, betas = [self._sym2(*theta[pos:pos + 3])], []
        pos += 3
        for _ in range(2, self.n_waves + 1):
            betas.append(theta[pos:pos + 4].reshape(2, 2))
            psis.append(self._sym2(*theta[pos + 4:pos + 7]))
            pos += 7
        return theta[:p], phi, psis, betas

    def moments(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Implied mean (..., p) and covariance (..., p, p) for ``theta`` of shape (..., n_params)."""
        theta = np.asarray(theta)
        batch, p = theta.shape[:-1], self.p
        lagged = np.zeros(batch + (p, p), dtype=theta.dtype)
        psi = np.zeros(batch + (p, p), dtype=theta.dtype)
        k, i, j = self._b
        lagged[..., i, j] = theta[..., k]
        k, i, j = self._psi
        psi[..., i, j] = theta[..., k]
        psi[..., j, i] = theta[..., k]
        a = np.linalg.inv(np.eye(p) - lagged)
        sigma = a @ psi @ np.swapaxes(a, -1, -2)
        if self._phi is not None:
            k, i, j = self._phi
            phi = np.zeros(batch + (2, 2), dtype=theta.dtype)
            phi[..., i, j] = theta[..., k]
            phi[..., j, i] = theta[..., k]
            sigma = sigma + self.loadings @ phi @ self.loadings.T
        return theta[..., :p], sigma

    def unit_change(self, centre: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(factor, shift)`` with ``theta = factor * theta_std + shift`` for ``x = centre[0] +
        scale[0] * x_std`` and ``y = centre[1] + scale[1] * y_std``."""
        def var(name: str) -> int:
            letter = name[2] if name.startswith("RI") else name[1] if name.startswith("w") else name[0]
            return 0 if letter == "x" else 1

        factor, shift = np.empty(self.n_params), np.zeros(self.n_params)
        for k, (lhs, op, rhs) in enumerate(self.labels):
            if op == "~1":
                factor[k], shift[k] = scale[var(lhs)], centre[var(lhs)]
            elif op == "~~":
                factor[k] = scale[var(lhs)] * scale[var(rhs)]
            else:
                factor[k] = scale[var(lhs)] / scale[var(rhs)]
        return factor, shift

    def latent_covariances(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The 2 × 2 covariance matrices the model estimates: ``RI`` (if any), ``w1``, ``residual2``..."""
        _, phi, psis, _ = self._unpack(theta)
        out = {} if phi is None else {"RI": phi}
        out["w1"] = psis[0]
        for t in range(1, self.n_waves):
            out[f"residual{t + 1}"] = psis[t]
        return out

    def start(self, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """Starting values from the saturated mean and covariance.

        The random-intercept covariance starts at half the average covariance between different
        sessions (shrunk until the remaining within covariance is positive definite); the lagged
        paths and residual covariances start at the regression of each session on the one before.
        """
        theta = [mean]
        within = cov.copy()
        if self.random_intercepts:
            x, y = np.arange(0, self.p, 2), np.arange(1, self.p, 2)
            off = ~np.eye(self.n_waves, dtype=bool)
            phi = 0.5 * self._sym2(cov[np.ix_(x, x)][off].mean(),
                                   0.5 * (cov[np.ix_(x, y)][off].mean() + cov[np.ix_(y, x)][off].mean()),
                                   cov[np.ix_(y, y)][off].mean())
            if np.linalg.eigvalsh(phi).min() <= 0:
                phi = np.diag(np.maximum(np.diag(phi), 0.05 * np.diag(cov).min()))
            for _ in range(30):
                within = cov - self.loadings @ phi @ self.loadings.T
                if np.linalg.eigvalsh(within).min() > 0:
                    break
                phi = phi / 2.0
            theta.append(phi[[0, 0, 1], [0, 1, 1]])
        theta.append(within[[0, 0, 1], [0, 1, 1]])
        for t in range(1, self.n_waves):
            now, before = slice(2 * t, 2 * t + 2), slice(2 * t - 2, 2 * t)
            beta = np.linalg.solve(within[before, before], within[before, now]).T
            resid = within[now, now] - beta @ within[before, before] @ beta.T
            theta += [beta.ravel(), resid[[0, 0, 1], [0, 1, 1]]]
        return np.concatenate(theta)


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------
@dataclass
class CrossLaggedResult:
    """Everything :func:`fit_cross_lagged` estimated.

    Attributes
    ----------
    paths : DataFrame
        One row per lagged path (what :func:`cross_lagged` returns); see there.
    parameters : DataFrame
        Every free parameter in lavaan's notation: ``lhs``, ``op`` (``~1`` mean, ``~~``
        (co)variance, ``~`` regression), ``rhs``, ``estimate``, ``se``, ``z``, ``p``, ``ci_low``,
        ``ci_high``. ``x1``/``y1``... are the observed variables at the first, second... session of
        ``order``; ``wx1``/``wy1``... their within-person components; ``RIx``/``RIy`` the random
        intercepts. Variances of later ``w`` are residual variances.
    fit : dict
        ``n_participants``, ``n_params``, ``loglik``, ``loglik_h1`` (saturated model), ``chisq``,
        ``df``, ``pvalue``, ``baseline_chisq``, ``baseline_df`` (independence model), ``cfi``,
        ``tli``, ``rmsea``, ``srmr`` (with means, against the saturated ML moments), ``aic``,
        ``bic``, ``converged``, ``admissible``.
    implied_mean : Series, implied_cov : DataFrame
        Model-implied moments, indexed by ``"<column>[<session>]"``.
    saturated_mean : Series, saturated_cov : DataFrame
        ML (EM-equivalent) estimates of the unrestricted model under missing data.
    vcov : DataFrame
        Sampling covariance of the parameters (inverse observed information).
    latent_covariances : dict of str to (2, 2) arrays
        ``RI`` (random intercepts, RI-CLPM only), ``w1`` and ``residual2``... (within components).
    converged, admissible : bool
        The optimizer met its gradient criterion; every latent and implied covariance is positive
        definite. A warning is issued when either is False.
    warnings : list of str
        The messages of those warnings.
    model : str
        ``"RI-CLPM"`` or ``"CLPM"``.
    x, y : str
    sessions : list
        ``order``.
    n_patterns, n_iterations : int
        Missing-data patterns; Fisher-scoring iterations.
    """

    paths: pd.DataFrame
    parameters: pd.DataFrame
    fit: dict[str, Any]
    implied_mean: pd.Series
    implied_cov: pd.DataFrame
    saturated_mean: pd.Series
    saturated_cov: pd.DataFrame
    vcov: pd.DataFrame
    latent_covariances: dict[str, np.ndarray]
    converged: bool
    admissible: bool
    model: str
    x: str
    y: str
    sessions: list
    n_patterns: int
    n_iterations: int
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------------
def _wide(table: pd.DataFrame, x: str, y: str, participant: str, session: str, order: Sequence,
          random_intercepts: bool) -> tuple[np.ndarray, list]:
    """The (participants, 2 T) array ``x_1, y_1, ..., x_T, y_T`` (NaN where missing), checked."""
    where = "cross_lagged"
    if not isinstance(table, pd.DataFrame):
        raise BadInputError(f"{where}: table must be a pandas DataFrame in long format "
                            f"(one row per participant × session), got {type(table).__name__}")
    check_columns(table, [participant, session, x, y], where)
    if x == y:
        raise BadInputError(f"{where}: x and y are the same column ({x!r}); give two different variables")
    order = list(order)
    if len(set(order)) != len(order):
        dup = sorted({str(s) for s in order if order.count(s) > 1})
        raise BadInputError(f"{where}: order lists a session more than once: {', '.join(dup)}")
    needed = 3 if random_intercepts else 2
    if len(order) < needed:
        model = "the RI-CLPM (random_intercepts=True)" if random_intercepts else "the CLPM"
        hint = " (use random_intercepts=False for two sessions)" if random_intercepts else ""
        raise BadInputError(f"{where}: {model} needs at least {needed} sessions in order, "
                            f"got {len(order)}{hint}")
    stray = [repr(s) for s in table[session].dropna().unique() if s not in set(order)]
    if stray:
        raise BadInputError(f"{where}: column {session!r} has session(s) not in order {order}: "
                            f"{', '.join(stray)}; list every session in order or drop those rows")
    if table[session].isna().any() or table[participant].isna().any():
        raise BadInputError(f"{where}: columns {participant!r} and {session!r} must not be empty "
                            f"({int(table[[participant, session]].isna().any(axis=1).sum())} row(s) are)")
    dup = table.duplicated([participant, session], keep=False)
    if dup.any():
        pairs = table.loc[dup, [participant, session]].drop_duplicates().astype(str)
        shown = [f"{p} at {s}" for p, s in pairs.itertuples(index=False)][:10]
        raise BadInputError(f"{where}: {len(pairs)} participant × session pair(s) have more than one row; "
                            "give one row per participant and session", shown)
    values = {}
    for col in (x, y):
        v = pd.to_numeric(table[col], errors="coerce")
        bad = v.isna() & table[col].notna()
        if bad.any():
            raise BadInputError(f"{where}: column {col!r} must be numeric; {int(bad.sum())} value(s) are "
                                f"not, e.g. {table.loc[bad, col].iloc[0]!r}")
        if not np.isfinite(v.dropna().to_numpy(float)).all():
            raise BadInputError(f"{where}: column {col!r} has infinite values")
        values[col] = v.to_numpy(float)
    people = pd.unique(table[participant])
    rows = pd.Index(people).get_indexer(table[participant])
    wave = pd.Index(order).get_indexer(table[session])
    data = np.full((len(people), 2 * len(order)), np.nan)
    data[rows, 2 * wave] = values[x]
    data[rows, 2 * wave + 1] = values[y]
    empty = np.isnan(data).all(axis=1)
    if empty.any():
        warnings.warn(f"{where}: {int(empty.sum())} participant(s) have no observed {x!r} or {y!r} at any "
                      f"session and are left out (e.g. {people[empty][0]!r})", stacklevel=3)
        data, people = data[~empty], people[~empty]
    n_min = 2 * len(order) + 1
    if len(data) < n_min:
        raise BadInputError(f"{where}: too few participants: {len(data)} with data, need at least {n_min} "
                            f"(more than the {2 * len(order)} observed variables) and far more for stable "
                            "estimates (a few hundred is typical)")
    for j, (col, s) in enumerate((c, s) for s in order for c in (x, y)):
        seen = np.count_nonzero(~np.isnan(data[:, j]))
        if seen < 2 or np.nanvar(data[:, j]) == 0:
            raise BadInputError(f"{where}: {col!r} at session {s!r} is observed for {seen} participant(s) "
                                "with no variance; every variable needs varying values at every session")
    return data, order


# ----------------------------------------------------------------------------------------------
# Fit
# ----------------------------------------------------------------------------------------------
def _srmr(mean_h1, cov_h1, mu, sigma) -> float:
    """Bentler's SRMR with the mean residuals, both standardized by the saturated variances."""
    sd = np.sqrt(np.diag(cov_h1))
    resid = (cov_h1 - sigma) / np.outer(sd, sd)
    lower = resid[np.tril_indices(len(sd))]
    means = (mean_h1 - mu) / sd
    return float(np.sqrt(np.mean(np.concatenate([lower, means]) ** 2)))


def _fit_indices(opt_ll, ll_h1, ll_base, n, p, k, mean_h1, cov_h1, mu, sigma) -> dict[str, Any]:
    df = p + p * (p + 1) // 2 - k
    chisq = max(2.0 * (ll_h1 - opt_ll), 0.0)
    base_chisq = 2.0 * (ll_h1 - ll_base)
    base_df = p * (p - 1) // 2
    denom = max(base_chisq - base_df, chisq - df, 0.0)
    cfi = 1.0 - max(chisq - df, 0.0) / denom if denom > 0 else 1.0
    # a saturated model (df = 0) fits perfectly: TLI 1 and RMSEA 0, as lavaan reports
    tli = ((base_chisq / base_df - chisq / df) / (base_chisq / base_df - 1.0)) if df > 0 else 1.0
    rmsea = float(np.sqrt(max((chisq - df) / (n * df), 0.0))) if df > 0 else 0.0
    values = {
        "loglik": opt_ll, "loglik_h1": ll_h1, "chisq": chisq,
        "pvalue": stats.chi2.sf(chisq, df) if df > 0 else np.nan,
        "baseline_chisq": base_chisq, "cfi": cfi, "tli": tli, "rmsea": rmsea,
        "srmr": _srmr(mean_h1, cov_h1, mu, sigma),
        "aic": -2.0 * opt_ll + 2.0 * k, "bic": -2.0 * opt_ll + k * np.log(n),
    }
    return {"n_participants": int(n), "n_params": int(k), "df": int(df), "baseline_df": int(base_df),
            **{key: float(v) for key, v in values.items()}}


def fit_cross_lagged(table: pd.DataFrame, x: str, y: str, participant: str = "participant_id",
                     session: str = "session", order: Sequence | None = None,
                     random_intercepts: bool = True) -> CrossLaggedResult:
    """Fit a (random-intercept) cross-lagged panel model by FIML; the full result.

    Parameters
    ----------
    table, x, y, participant, session, order, random_intercepts
        As for :func:`cross_lagged`.

    Returns
    -------
    CrossLaggedResult
        ``paths`` (what :func:`cross_lagged` returns), ``parameters`` (every free parameter in
        lavaan's notation), ``fit`` (chi-square, CFI, TLI, RMSEA, SRMR, AIC, BIC...), the implied
        and saturated moments, ``vcov``, ``latent_covariances``, ``converged``, ``admissible`` and
        ``warnings``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from theramark.dynamics.cross_lagged import fit_cross_lagged
    >>> rng = np.random.default_rng(3)
    >>> n, sessions = 300, [1, 2, 3, 4]
    >>> levels = rng.normal(size=(n, 2))  # stable person levels, variance 1
    >>> table = pd.DataFrame([{"participant_id": i, "session": s, "x": levels[i, 0] + rng.normal(),
    ...                        "y": levels[i, 1] + rng.normal()} for i in range(n) for s in sessions])
    >>> result = fit_cross_lagged(table, "x", "y", order=sessions)
    >>> result.model, result.fit["df"], result.converged, result.admissible
    ('RI-CLPM', 9, True, True)
    >>> ri = result.parameters.query("lhs == 'RIx' and op == '~~' and rhs == 'RIx'")
    >>> ri[["estimate", "se"]].round(2).to_numpy().tolist()
    [[1.0, 0.11]]
    """
    if order is None:
        raise BadInputError("cross_lagged: give order, the sessions in time order "
                            "(e.g. ['pre', 'mid', 'post'])")
    data, order = _wide(table, x, y, participant, session, order, random_intercepts)
    # thousands of products of 6 x 6 matrices: threads only add overhead
    with single_threaded_blas():
        return _fit(data, x, y, order, random_intercepts)


def _fit(data: np.ndarray, x: str, y: str, order: list, random_intercepts: bool) -> CrossLaggedResult:
    n, p = data.shape
    model = LaggedPanelModel(len(order), random_intercepts)
    # Fit in standard units (one centre and scale per variable, shared by its sessions so that the
    # unit loadings of the random intercepts still hold): a brain feature in 1e-3 units next to a
    # symptom score in tens would otherwise leave the information matrix too ill-conditioned to
    # converge or invert. The model is equivariant, so the estimates map back exactly.
    centre = np.tile([np.nanmean(data[:, 0::2]), np.nanmean(data[:, 1::2])], len(order))
    spread = np.tile([np.nanstd(data[:, 0::2]), np.nanstd(data[:, 1::2])], len(order))
    std_data = (data - centre) / spread
    log_jacobian = -float(np.sum(~np.isnan(data) * np.log(spread)))
    pats = _sem.missing_patterns(std_data)
    mean_h1, cov_h1, ll_h1, h1_converged = _sem.saturated_fit(pats, std_data)
    opt = _sem.fisher_scoring(model, model.start(mean_h1, cov_h1), pats)
    info = _sem.observed_information(model, opt.theta, pats)
    factor, shift = model.unit_change(centre[:2], spread[:2])
    theta = factor * opt.theta + shift
    mu, sigma = model.moments(theta)
    mean_h1, cov_h1 = spread * mean_h1 + centre, cov_h1 * np.outer(spread, spread)
    messages: list[str] = []
    name = "RI-CLPM" if random_intercepts else "CLPM"
    if not opt.converged or not h1_converged:
        what = "the model" if not opt.converged else "the saturated model (chi-square and fit indices)"
        messages.append(f"cross_lagged: the {name} fit did not converge ({what}; largest gradient per "
                        f"participant {opt.max_gradient:.2g}); estimates are not trustworthy")
    latent = model.latent_covariances(theta)
    not_pd = [k for k, m in latent.items() if np.linalg.eigvalsh(m).min() <= 0]
    if np.linalg.eigvalsh(sigma).min() <= 0:
        not_pd.append("implied covariance of the observed variables")
    if not_pd:
        parts = [_describe_block(k, order) for k in not_pd]
        messages.append(f"cross_lagged: the {name} solution is not admissible (Heywood case): covariance "
                        f"not positive definite for {'; '.join(parts)}")
    try:
        vcov = np.linalg.inv(info)
        if not np.all(np.isfinite(vcov)) or np.any(np.diag(vcov) <= 0):
            raise np.linalg.LinAlgError
        vcov = factor[:, None] * vcov * factor[None, :]
    except np.linalg.LinAlgError:
        vcov = np.full_like(info, np.nan)
        messages.append(f"cross_lagged: the observed information of the {name} is singular or not "
                        "positive definite; standard errors are not available (the model may not be "
                        "identified)")
    for message in messages:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    se = np.sqrt(np.where(np.diag(vcov) > 0, np.diag(vcov), np.nan))
    z = theta / se
    params = pd.DataFrame(model.labels, columns=["lhs", "op", "rhs"])
    params["estimate"], params["se"], params["z"] = theta, se, z
    params["p"] = 2.0 * stats.norm.sf(np.abs(z))
    params["ci_low"], params["ci_high"] = theta - _Z975 * se, theta + _Z975 * se
    paths = _paths(params, x, y, order)
    fit = _fit_indices(opt.loglik + log_jacobian, ll_h1 + log_jacobian,
                       _sem.independence_loglik(std_data) + log_jacobian, n, p, model.n_params,
                       mean_h1, cov_h1, mu, sigma)
    fit.update(converged=bool(opt.converged and h1_converged), admissible=not not_pd, model=name)
    names = [f"{c}[{s}]" for s in order for c in (x, y)]
    paths.attrs["fit"] = dict(fit)
    return CrossLaggedResult(
        paths=paths, parameters=params, fit=fit,
        implied_mean=pd.Series(mu, index=names), implied_cov=pd.DataFrame(sigma, names, names),
        saturated_mean=pd.Series(mean_h1, index=names), saturated_cov=pd.DataFrame(cov_h1, names, names),
        vcov=pd.DataFrame(vcov, params["lhs"] + params["op"] + params["rhs"],
                          params["lhs"] + params["op"] + params["rhs"]),
        latent_covariances=latent, converged=fit["converged"], admissible=fit["admissible"], model=name,
        x=x, y=y, sessions=list(order), n_patterns=len(pats.count), n_iterations=opt.n_iter,
        warnings=messages)


def _describe_block(key: str, order: list) -> str:
    if key == "RI":
        return ("random intercepts (e.g. a negative variance: little stable between-person difference; "
                "consider random_intercepts=False)")
    if key == "w1":
        return f"within components at session {order[0]!r}"
    if key.startswith("residual"):
        return f"within residuals at session {order[int(key[len('residual'):]) - 1]!r}"
    return key


def _paths(params: pd.DataFrame, x: str, y: str, order: list) -> pd.DataFrame:
    """The lagged regressions of ``params`` as the user-facing table, four per pair of sessions."""
    row_of = {(lhs, rhs): i for i, (lhs, op, rhs) in
              enumerate(zip(params["lhs"], params["op"], params["rhs"], strict=True)) if op == "~"}
    column = {"x": x, "y": y}
    picks, rows = [], []
    for t in range(2, len(order) + 1):
        for src, dst in (("x", "x"), ("y", "y"), ("x", "y"), ("y", "x")):
            picks.append(row_of[(f"w{dst}{t}", f"w{src}{t - 1}")])
            rows.append({"kind": "autoregressive" if src == dst else "cross-lagged", "source": column[src],
                         "target": column[dst], "from_session": order[t - 2], "to_session": order[t - 1]})
    values = params.iloc[picks][["estimate", "se", "ci_low", "ci_high", "p"]].reset_index(drop=True)
    return pd.concat([pd.DataFrame(rows), values], axis=1)


def cross_lagged(table: pd.DataFrame, x: str, y: str, participant: str = "participant_id",
                 session: str = "session", order: Sequence | None = None,
                 random_intercepts: bool = True) -> pd.DataFrame:
    """Autoregressive and cross-lagged paths between two variables measured at several sessions.

    Fits the random-intercept cross-lagged panel model (RI-CLPM; Hamaker et al., 2015) or the
    classic CLPM by full-information maximum likelihood, with lavaan's parametrization, from a long
    table. ``x`` leading ``y`` shows as a cross-lagged path ``x → y`` that is larger than
    ``y → x``.

    Parameters
    ----------
    table : DataFrame
        Long format: one row per participant × session, with columns ``participant``, ``session``,
        ``x`` and ``y``. A missed session is an absent row (or NaN values); every participant with
        at least one observed value is used (FIML).
    x, y : str
        The two variables (e.g. a brain feature and a symptom score), in any units; estimates are
        in those units (unstandardized).
    participant, session : str
        Columns identifying the participant and the session.
    order : sequence
        Every session of ``session`` in time order (e.g. ``["pre", "mid", "post"]``); at least 3
        for the RI-CLPM, 2 for the CLPM.
    random_intercepts : bool, default True
        True for the RI-CLPM (within-person lagged paths), False for the CLPM.

    Returns
    -------
    DataFrame
        One row per lagged path and pair of consecutive sessions, four per pair (``x → x``,
        ``y → y``, ``x → y``, ``y → x``): ``kind`` (``"autoregressive"`` or ``"cross-lagged"``),
        ``source`` and ``target`` (the column names ``x``/``y``), ``from_session``,
        ``to_session``, ``estimate`` (unstandardized regression weight; within-person for the
        RI-CLPM), ``se``, ``ci_low``/``ci_high`` (95% Wald) and ``p`` (two-sided Wald z).
        ``.attrs["fit"]`` holds the fit: ``chisq``, ``df``, ``pvalue``, ``cfi``, ``tli``,
        ``rmsea``, ``srmr``, ``loglik``, ``aic``, ``bic``, ``converged``, ``admissible`` and more
        (see :class:`CrossLaggedResult`).

    Raises
    ------
    BadInputError
        Missing columns, a participant with two rows for one session, sessions not in ``order``,
        too few sessions or participants, non-numeric values.

    Warns
    -----
    RuntimeWarning
        When the optimizer does not converge or the solution is not admissible (a latent or
        implied covariance not positive definite, e.g. a negative random-intercept variance).

    Notes
    -----
    The paths are free at every pair of sessions (no equality constraints), so with unequal
    intervals they are not comparable across pairs. Standard errors come from the observed
    information (the numerical Hessian of the FIML log-likelihood at the optimum), as lavaan's
    default for ``missing = "ml"``. The chi-square test compares the model with the unrestricted
    (saturated) model fitted by FIML; CFI and TLI compare against the independence model (free
    means and variances). For the RI-CLPM with 3 sessions the model has 1 degree of freedom.

    Estimates agree with lavaan 0.6 (``lavaan(..., missing = "ml", meanstructure = TRUE)`` with
    the syntax of Mulder & Hamaker, 2021) to 1e-3 or better; the script that checks it is
    ``tests/dynamics/r/make_lavaan_reference.R``.

    References
    ----------
    Hamaker, E. L., Kuiper, R. M., & Grasman, R. P. P. P. (2015). A critique of the cross-lagged
    panel model. Psychological Methods, 20(1), 102–116.

    Mulder, J. D., & Hamaker, E. L. (2021). Three extensions of the random intercept cross-lagged
    panel model. Structural Equation Modeling, 28(4), 638–648.

    Arbuckle, J. L. (1996). Full information estimation in the presence of incomplete data. In
    Marcoulides & Schumacker (Eds.), Advanced Structural Equation Modeling. Erlbaum.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from theramark.dynamics.cross_lagged import cross_lagged
    >>> rng = np.random.default_rng(0)
    >>> n, sessions = 300, ["pre", "mid", "post"]
    >>> bx, by = rng.normal(size=(2, n))           # stable person levels
    >>> wx, wy = rng.normal(size=(2, n))
    >>> rows = []
    >>> for s in sessions:
    ...     rows += [{"participant_id": i, "session": s, "brain": bx[i] + wx[i],
    ...               "symptom": by[i] + wy[i]} for i in range(n)]
    ...     wx, wy = 0.3 * wx + rng.normal(size=n), 0.3 * wy + 0.4 * wx + rng.normal(size=n)
    >>> paths = cross_lagged(pd.DataFrame(rows), "brain", "symptom", order=sessions)
    >>> paths.query("kind == 'cross-lagged'")[["source", "target", "to_session"]].shape
    (4, 3)
    """
    return fit_cross_lagged(table, x, y, participant, session, order, random_intercepts).paths
