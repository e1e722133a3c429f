"""Mediation and moderated mediation as in Hayes' PROCESS (models 4, 6, 7, 14 and 58).

Every equation is an OLS regression, as PROCESS and R's ``lm`` fit them; path estimates, their
standard errors and t-based confidence intervals come from the full-sample fits. Indirect effects,
indices of moderated mediation and contrasts between conditional indirect effects get bootstrap
standard errors and percentile or bias-corrected confidence intervals.

The bootstrap is vectorized: a resample is a vector of counts (how often each row was drawn), so the
normal equations of every resample are one matrix product ``counts @ (x_i x_i^T)`` over all
resamples of a chunk, solved in a batch. No Python loop runs over resamples.

Models (X → M → Y, W a moderator, C covariates in every equation)::

    4   M_j ~ X + C                      Y ~ X + M_1..M_k + C          (parallel mediators)
    6   M_j ~ X + M_1..M_{j-1} + C       Y ~ X + M_1..M_k + C          (serial mediators)
    7   M_j ~ X + W + X·W + C            Y ~ X + M_1..M_k + C
    14  M_j ~ X + C                      Y ~ X + M_j + W + M_j·W + C
    58  M_j ~ X + W + X·W + C            Y ~ X + M_j + W + M_j·W + C
    total effect: Y ~ X + C
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from theramark._blas import single_threaded_blas
from theramark.errors import BadInputError
from theramark.psychosocial._data import Prepared, as_list, coefficient_tables, fit_ols, prepare
from theramark.stats import solve_normal_equations

MODELS = (4, 6, 7, 14, 58)
CI_METHODS = ("percentile", "bias-corrected")
_MIN_BOOT_ROWS = 10


# ----------------------------------------------------------------------------------------------
# Equations (fitted by _data.fit_ols) and the vectorized bootstrap
# ----------------------------------------------------------------------------------------------
@dataclass
class Equation:
    """One regression: ``outcome ~ 1 + predictors`` (names of columns of the design table)."""

    name: str
    outcome: str
    predictors: list[str]


def bootstrap_counts(rng: np.random.Generator, n_boot: int, n: int, block: int = 128) -> np.ndarray:
    """(n_boot, n) counts (float64): how many times each row is drawn in each resample.

    Resamples are counted ``block`` at a time: offsetting resample b's row indices by b·n lets
    one bincount count a whole block, and a block's bins stay in cache while they are counted.
    """
    counts = np.empty((n_boot, n))
    offsets = (np.arange(block, dtype=np.intp) * n)[:, None]
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        draws = rng.integers(0, n, size=(size, n), dtype=np.intp)
        draws += offsets[:size]
        counts[start:start + size] = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
    return counts


class MomentBootstrap:
    """All cross-products a set of regressions needs, for many resamples in one matrix product.

    Every Gram matrix ``X'WX`` and moment ``X'Wy`` of every equation, and every variable's mean and
    mean square (for SDs), are entries of ``counts @ (D_i · D_j)`` over pairs ``i ≤ j`` of the
    columns of one table ``D`` (intercept first). One GEMM per chunk of resamples replaces one per
    equation.
    """

    def __init__(self, table: np.ndarray, names: list[str]):
        self.names = names
        self.position = {name: k for k, name in enumerate(names)}
        q = table.shape[1]
        left, right = np.triu_indices(q)
        self.pair = np.zeros((q, q), dtype=int)
        self.pair[left, right] = np.arange(left.size)
        self.pair[right, left] = np.arange(left.size)
        self.products = table[:, left] * table[:, right]  # (n, q(q+1)/2)
        self.n = table.shape[0]

    def moments(self, counts: np.ndarray) -> np.ndarray:
        """(B, K) weighted sums of every cross-product."""
        return counts @ self.products

    def solve(self, moments: np.ndarray, predictors: list[str], outcome: str) -> np.ndarray:
        """(B, p) OLS coefficients of ``outcome ~ predictors`` (predictors include the intercept);
        singular resamples give NaN rows."""
        idx = np.array([self.position[v] for v in predictors])
        gram = moments[:, self.pair[np.ix_(idx, idx)]]
        rhs = moments[:, self.pair[idx, self.position[outcome]]]
        return solve_normal_equations(gram, rhs)

    def sd(self, moments: np.ndarray, variable: str) -> np.ndarray:
        """(B,) sample SD of ``variable`` in each resample."""
        k = self.position[variable]
        mean = moments[:, self.pair[0, k]] / self.n
        mean_sq = moments[:, self.pair[k, k]] / self.n
        return np.sqrt(np.maximum(mean_sq - mean**2, 0.0) * self.n / (self.n - 1))


def bootstrap_interval(
    draws: np.ndarray, estimate: float, confidence: float, method: str
) -> tuple[float, float]:
    """Percentile or bias-corrected (Efron 1987; PROCESS's ``bc``) interval from ``draws`` (B,)."""
    alpha = 1 - confidence
    if method == "percentile":
        lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)
    below = np.mean(draws < estimate)
    # A proportion of 0 or 1 would put z0 at infinity; clamp to one resample's worth.
    below = np.clip(below, 0.5 / draws.size, 1 - 0.5 / draws.size)
    z0 = stats.norm.ppf(below)
    z = stats.norm.ppf([alpha / 2, 1 - alpha / 2])
    lo, hi = np.quantile(draws, stats.norm.cdf(2 * z0 + z))
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------
# Model specification
# ----------------------------------------------------------------------------------------------
@dataclass
class _Effect:
    """A row of the result: a function of the coefficients (works on scalars and (B,) arrays)."""

    name: str
    kind: str  # "path" (OLS inference) or "boot" (bootstrap inference)
    value: Callable[[dict], np.ndarray | float]
    std_scale: tuple[str, str] | None  # (from, to) variables for the standardized effect
    equation: str | None = None
    term: str | None = None


def _interaction(a: str, b: str) -> str:
    return f"{a}:{b}"


def _build_equations(
    model: int, x: str, ms: list[str], y: str, w: str | None, cov: list[str]
) -> list[Equation]:
    equations = []
    for j, m in enumerate(ms):
        preds = [x]
        if model == 6:
            preds += ms[:j]
        if model in (7, 58):
            preds += [w, _interaction(x, w)]
        equations.append(Equation(f"{m} ~", m, preds + cov))
    y_preds = [x] + ms
    if model in (14, 58):
        y_preds += [w] + [_interaction(m, w) for m in ms]
    equations.append(Equation(f"{y} ~", y, y_preds + cov))
    equations.append(Equation(f"{y} ~ (total)", y, [x] + cov))
    return equations


def _label(base: str, m: str, several: bool, extra: str = "") -> str:
    inside = [m] if several else []
    if extra:
        inside.append(extra)
    return f"{base}[{'|'.join(inside)}]" if inside else base


def _format_value(v: float) -> str:
    return f"{v:g}"


def _build_effects(
    model: int, x: str, ms: list[str], y: str, w: str | None, w_values: np.ndarray | None
) -> list[_Effect]:
    several = len(ms) > 1
    y_eq = f"{y} ~"
    effects: list[_Effect] = []

    def coef(eq: str, term: str) -> Callable[[dict], np.ndarray]:
        return lambda c: c[(eq, term)]

    for m in ms:
        effects.append(_Effect(_label("a", m, several), "path", coef(f"{m} ~", x), (x, m),
                               f"{m} ~", x))
        if model in (7, 58):
            effects.append(_Effect(_label("a_interaction", m, several), "path",
                                   coef(f"{m} ~", _interaction(x, w)), None, f"{m} ~",
                                   _interaction(x, w)))
    if model == 6:
        for i, j in itertools.combinations(range(len(ms)), 2):
            effects.append(_Effect(f"d[{ms[i]}->{ms[j]}]", "path", coef(f"{ms[j]} ~", ms[i]),
                                   (ms[i], ms[j]), f"{ms[j]} ~", ms[i]))
    for m in ms:
        effects.append(_Effect(_label("b", m, several), "path", coef(y_eq, m), (m, y), y_eq, m))
        if model in (14, 58):
            effects.append(_Effect(_label("b_interaction", m, several), "path",
                                   coef(y_eq, _interaction(m, w)), None, y_eq,
                                   _interaction(m, w)))
    effects.append(_Effect("total", "path", coef(f"{y} ~ (total)", x), (x, y),
                           f"{y} ~ (total)", x))
    effects.append(_Effect("direct", "path", coef(y_eq, x), (x, y), y_eq, x))

    # Indirect effect of each mediator (each chain for model 6) as a function of w.
    def indirect_of(m: str) -> Callable[[dict, float], np.ndarray]:
        def value(c: dict, wv: float = 0.0) -> np.ndarray:
            a = c[(f"{m} ~", x)]
            b = c[(y_eq, m)]
            if model in (7, 58):
                a = a + c[(f"{m} ~", _interaction(x, w))] * wv
            if model in (14, 58):
                b = b + c[(y_eq, _interaction(m, w))] * wv
            return a * b
        return value

    chains: list[tuple[str, Callable[[dict, float], np.ndarray]]] = []
    if model == 6:
        for size in range(1, len(ms) + 1):
            for chain in itertools.combinations(ms, size):
                def value(c: dict, wv: float = 0.0, chain=chain) -> np.ndarray:
                    out = c[(f"{chain[0]} ~", x)]
                    for prev, nxt in itertools.pairwise(chain):
                        out = out * c[(f"{nxt} ~", prev)]
                    return out * c[(y_eq, chain[-1])]
                chains.append(("->".join(chain), value))
    else:
        chains = [(m, indirect_of(m)) for m in ms]
    several_chains = len(chains) > 1

    for label, fn in chains:
        effects.append(_Effect(_label("indirect", label, several_chains), "boot",
                               lambda c, fn=fn: fn(c, 0.0), (x, y)))
    if several_chains:
        effects.append(_Effect("indirect", "boot",
                               lambda c: sum(fn(c, 0.0) for _, fn in chains), (x, y)))
    if w is not None:
        for wv in w_values:
            tag = f"{w}={_format_value(wv)}"
            for label, fn in chains:
                effects.append(_Effect(_label("indirect", label, several_chains, tag), "boot",
                                       lambda c, fn=fn, wv=wv: fn(c, wv), (x, y)))
        if model in (7, 14):
            for m in ms:
                if model == 7:
                    terms = ((f"{m} ~", _interaction(x, w)), (y_eq, m))
                else:
                    terms = ((f"{m} ~", x), (y_eq, _interaction(m, w)))
                effects.append(_Effect(
                    _label("index_moderated_mediation", m, several), "boot",
                    lambda c, terms=terms: c[terms[0]] * c[terms[1]], None))
        if model == 58 and len(w_values) == 2:
            # The indirect effect is quadratic in W: no single index; contrast the two groups.
            lo, hi = w_values
            tag = f"{w}={_format_value(hi)} vs {_format_value(lo)}"
            for label, fn in chains:
                effects.append(_Effect(_label("contrast", label, several_chains, tag), "boot",
                                       lambda c, fn=fn, lo=lo, hi=hi: fn(c, hi) - fn(c, lo), None))
    return effects


def moderator_values(values: np.ndarray, w_values: Sequence[float] | None) -> np.ndarray:
    """Values of W at which conditional effects are probed.

    Both levels of a two-valued W; otherwise the 16th, 50th and 84th percentiles (PROCESS's default
    for a continuous moderator), unless ``w_values`` are given.
    """
    if w_values is not None:
        return np.asarray(w_values, dtype=float)
    levels = np.unique(values)
    if levels.size == 2:
        return levels.astype(float)
    return np.percentile(values, [16, 50, 84])


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
def mediation(
    data: pd.DataFrame,
    x: str,
    m: str | Sequence[str],
    y: str,
    w: str | None = None,
    model: int = 4,
    covariates: str | Sequence[str] | None = None,
    n_boot: int = 5000,
    random_state: int | np.random.Generator | None = None,
    *,
    ci_method: str = "percentile",
    confidence: float = 0.95,
    w_values: Sequence[float] | None = None,
    chunk_size: int = 1000,
) -> pd.DataFrame:
    """Simple, parallel, serial and moderated mediation (PROCESS models 4, 6, 7, 14, 58).

    Parameters
    ----------
    data : DataFrame
        One row per participant. ``x`` and ``w`` may be two-level text columns (coded 0/1 in sorted
        order, e.g. ``F`` = 0, ``M`` = 1; the coding is stated in ``attrs["note"]``).
    x, y : str
        Predictor and outcome columns.
    m : str or sequence of str
        Mediator(s): several mediators are parallel in model 4 and serial, in the given order, in
        model 6.
    w : str, optional
        Moderator, required by models 7 (X→M), 14 (M→Y) and 58 (both).
    model : {4, 6, 7, 14, 58}
        PROCESS model number.
    covariates : str or sequence of str, optional
        Entered in every equation (as PROCESS does).
    n_boot : int
        Bootstrap resamples for indirect effects (0 skips the bootstrap: no CI for them).
    random_state : int or Generator, optional
        Seed of the bootstrap.
    ci_method : {"percentile", "bias-corrected"}
        Bootstrap interval for indirect effects, indices and contrasts.
    confidence : float
        Confidence level of every interval.
    w_values : sequence of float, optional
        Moderator values to probe; default: both levels of a dichotomous W, else the 16th, 50th and
        84th percentiles.
    chunk_size : int
        Resamples solved per batch (bounds memory: about ``chunk_size × n`` counts).

    Returns
    -------
    DataFrame
        Indexed by effect: ``a``, ``b``, ``total``, ``direct``, ``indirect`` (``a[M]``, ``b[M]``,
        ``indirect[M]`` per mediator when several; ``d[M1->M2]`` and ``indirect[M1->M2]`` for
        serial chains; ``a_interaction``/``b_interaction``, conditional ``indirect[W=w]``,
        ``index_moderated_mediation`` (models 7, 14) and ``contrast[...]`` (model 58 with a
        dichotomous W) for moderated models). Unconditional ``a``, ``b`` and ``indirect`` of a
        moderated model are at W = 0. Columns: ``estimate, se, ci_low, ci_high, p, std_estimate,
        std_ci_low, std_ci_high, ci_method, n``. Path rows use OLS standard errors and t-based
        intervals (as ``lm``); indirect rows use the bootstrap SD and interval, and have no p value
        (judge them by the interval, as Hayes recommends). ``std_estimate`` is the completely
        standardized effect (coefficient × SD(from) / SD(to)); interaction terms and indices have
        none. ``std_ci_*`` are bootstrap intervals of the standardized effect for indirect rows
        (SDs recomputed in each resample) and the rescaled t interval for path rows. ``attrs``
        hold ``coefficients`` (every equation's full table), ``n``, ``n_dropped``, ``note``
        (listwise deletion, codings), ``model``, ``n_boot``, ``n_boot_valid``, ``w_values`` and
        ``ci_method``.

    Raises
    ------
    BadInputError
        Unknown model or CI method, missing moderator, missing/duplicated/non-numeric/constant
        columns, collinear predictors, fewer than 10 complete rows for the bootstrap.
    """
    if model not in MODELS:
        raise BadInputError(f"mediation: model {model!r} is not supported; choose from {MODELS}")
    if ci_method not in CI_METHODS:
        raise BadInputError(f"mediation: ci_method must be one of {CI_METHODS}, got {ci_method!r}")
    if not 0 < confidence < 1:
        raise BadInputError(f"mediation: confidence must be in (0, 1), got {confidence}")
    if n_boot < 0 or int(n_boot) != n_boot:
        raise BadInputError(f"mediation: n_boot must be a non-negative integer, got {n_boot}")
    ms = as_list(m)
    if not ms:
        raise BadInputError("mediation: at least one mediator is needed")
    cov = as_list(covariates)
    moderated = model in (7, 14, 58)
    if moderated and w is None:
        raise BadInputError(f"mediation: PROCESS model {model} needs a moderator (w)")
    if not moderated and w is not None:
        raise BadInputError(
            f"mediation: model {model} has no moderator; use model 7 (W on X→M), 14 (W on M→Y) "
            "or 58 (both) with w"
        )
    columns = [x, *ms, y] + ([w] if w else []) + cov
    prepared = prepare(
        data, columns, binary_ok=[x] + ([w] if w else []), what=f"mediation (model {model})",
        min_rows=_MIN_BOOT_ROWS if n_boot else 3,
    )
    frame = prepared.frame
    if w is not None:
        w_vals = moderator_values(frame[w].to_numpy(), w_values)
        frame = frame.assign(**{_interaction(x, w): frame[x] * frame[w]})
        for med in ms:
            frame = frame.assign(**{_interaction(med, w): frame[med] * frame[w]})
    else:
        w_vals = None

    equations = _build_equations(model, x, ms, y, w, cov)
    what = f"mediation (model {model})"
    fits = {}
    n = len(frame)
    # One float array with the intercept first; equations index its columns (no pandas per fit).
    table = np.column_stack([np.ones(n), frame.to_numpy(dtype=float)])
    column = {name: k + 1 for k, name in enumerate(frame.columns)}
    column["(intercept)"] = 0
    for eq in equations:
        design = table[:, [0] + [column[v] for v in eq.predictors]]
        fits[eq.name] = fit_ols(design, table[:, column[eq.outcome]],
                                ["(intercept)", *eq.predictors], f"{what}, equation {eq.name}")
    point = {(eq.name, t): fits[eq.name].coef[i + 1]
             for eq in equations for i, t in enumerate(eq.predictors)}
    effects = _build_effects(model, x, ms, y, w, w_vals)
    base_vars = [x, *ms, y]
    sd_point = {v: float(np.std(table[:, column[v]], ddof=1)) for v in base_vars}

    boot = {}
    boot_sd = None
    n_valid = 0
    boot_effects = [e for e in effects if e.kind == "boot"]
    if n_boot and boot_effects:
        rng = np.random.default_rng(random_state)
        draws = {e.name: [] for e in boot_effects}
        std_draws = {e.name: [] for e in boot_effects}
        used = list(dict.fromkeys(
            [v for eq in equations for v in (*eq.predictors, eq.outcome)] + base_vars))
        engine = MomentBootstrap(table[:, [0] + [column[v] for v in used]],
                                 ["(intercept)", *used])
        remaining = int(n_boot)
        # The products are small (resamples × rows × a few columns): BLAS threads only add
        # synchronization, and oversubscribe cores when analyses run in parallel.
        with single_threaded_blas():
            while remaining > 0:
                size = min(chunk_size, remaining)
                remaining -= size
                moments = engine.moments(bootstrap_counts(rng, size, n))
                coefs = {}
                for eq in equations:
                    beta = engine.solve(moments, ["(intercept)", *eq.predictors], eq.outcome)
                    for i, t in enumerate(eq.predictors):
                        coefs[(eq.name, t)] = beta[:, i + 1]
                sd_map = {v: engine.sd(moments, v) for v in base_vars}
                for e in boot_effects:
                    val = np.asarray(e.value(coefs), dtype=float)
                    draws[e.name].append(val)
                    if e.std_scale is not None:
                        f, t = e.std_scale
                        std_draws[e.name].append(val * sd_map[f] / sd_map[t])
        boot = {k: np.concatenate(v) for k, v in draws.items()}
        valid = np.all([np.isfinite(v) for v in boot.values()], axis=0)
        n_valid = int(valid.sum())
        if n_valid < n_boot:
            warnings.warn(
                f"{what}: {n_boot - n_valid} of {n_boot} bootstrap resamples had singular "
                "equations (e.g. a constant dummy) and were dropped", RuntimeWarning, stacklevel=2,
            )
        boot = {k: v[valid] for k, v in boot.items()}
        boot_sd = {k: np.concatenate(v)[valid] for k, v in std_draws.items() if v}

    rows = []
    crits: dict[int, float] = {}
    for e in effects:
        est = float(e.value(point))
        std = (est * sd_point[e.std_scale[0]] / sd_point[e.std_scale[1]]
               if e.std_scale is not None else np.nan)
        row = {"effect": e.name, "estimate": est, "std_estimate": std, "n": n}
        if e.kind == "path":
            fit = fits[e.equation]
            k = fit.names.index(e.term)
            se = float(np.sqrt(fit.cov[k, k]))
            crit = crits.setdefault(fit.df_resid, stats.t.ppf(0.5 + confidence / 2,
                                                              fit.df_resid))
            row.update(se=se, ci_low=est - crit * se, ci_high=est + crit * se,
                       p=float(2 * stats.t.sf(abs(est / se), fit.df_resid)),
                       ci_method="ols-t")
            if e.std_scale is not None:
                scale = sd_point[e.std_scale[0]] / sd_point[e.std_scale[1]]
                row.update(std_ci_low=row["ci_low"] * scale, std_ci_high=row["ci_high"] * scale)
        elif boot:
            d = boot[e.name]
            lo, hi = bootstrap_interval(d, est, confidence, ci_method)
            row.update(se=float(np.std(d, ddof=1)), ci_low=lo, ci_high=hi, p=np.nan,
                       ci_method=f"bootstrap-{ci_method}")
            if boot_sd and e.name in boot_sd:
                slo, shi = bootstrap_interval(boot_sd[e.name], std, confidence, ci_method)
                row.update(std_ci_low=slo, std_ci_high=shi)
        else:
            row.update(se=np.nan, ci_low=np.nan, ci_high=np.nan, p=np.nan, ci_method="none")
        rows.append(row)
    columns_out = ["estimate", "se", "ci_low", "ci_high", "p", "std_estimate", "std_ci_low",
                   "std_ci_high", "ci_method", "n"]
    result = pd.DataFrame(rows).set_index("effect").reindex(columns=columns_out)
    result.index.name = "effect"
    result.attrs.update(_attrs(prepared, model, x, ms, y, w, w_vals, cov, fits, confidence,
                               n_boot, n_valid, ci_method))
    return result


def _attrs(prepared: Prepared, model, x, ms, y, w, w_vals, cov, fits, confidence, n_boot,
           n_valid, ci_method) -> dict:
    coefficients = coefficient_tables(fits, confidence)
    note = prepared.note()
    if model in (7, 14, 58):
        note += (f"; unconditional a, b and indirect effects are at {w} = 0; the total effect "
                 "(Y ~ X + covariates) is averaged over W and is not the sum of direct and "
                 "indirect effects")
    return {
        "model": model, "x": x, "m": ms, "y": y, "w": w, "covariates": cov,
        "w_values": None if w_vals is None else [float(v) for v in w_vals],
        "n": prepared.n, "n_dropped": prepared.n_dropped, "codings": prepared.codings,
        "note": note, "coefficients": coefficients, "n_boot": int(n_boot),
        "n_boot_valid": n_valid, "ci_method": ci_method, "confidence": confidence,
    }
