"""Tests of theramark.dynamics.cross_lagged: lavaan agreement, planted lags, bias of the CLPM, null
calibration, admissibility warnings, FIML and input checks."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from theramark.dynamics import _sem
from theramark.dynamics.cross_lagged import (
    CrossLaggedResult,
    LaggedPanelModel,
    cross_lagged,
    fit_cross_lagged,
)
from theramark.errors import BadInputError

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REFERENCE = json.loads((DATA / "lavaan_reference.json").read_text())
TOL = 1e-3


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def simulate(n: int, n_waves: int, seed: int, ar=(0.4, 0.4), lag_xy=0.0, lag_yx=0.0,
             ri_cov=((1.0, 0.3), (0.3, 1.0)), missing: float = 0.0) -> pd.DataFrame:
    """Long table from the RI-CLPM data-generating process (stationary-ish within components).

    ``lag_xy`` is the within-person path x_{t-1} → y_t, ``lag_yx`` y_{t-1} → x_t; innovations are
    independent N(0, 1); ``missing`` is the chance a participant × session row is absent.
    """
    rng = np.random.default_rng(seed)
    ri_cov = np.asarray(ri_cov)
    ri = rng.multivariate_normal([0.0, 0.0], ri_cov, size=n) if ri_cov.any() else np.zeros((n, 2))
    wx, wy = rng.normal(size=(2, n))
    frames = []
    for t in range(n_waves):
        frames.append(pd.DataFrame({"participant_id": [f"p{i}" for i in range(n)], "session": f"s{t}",
                                    "brain": 1.0 + ri[:, 0] + wx, "symptom": 5.0 - 0.5 * t + ri[:, 1] + wy}))
        wx, wy = (ar[0] * wx + lag_yx * wy + rng.normal(size=n),
                  ar[1] * wy + lag_xy * wx + rng.normal(size=n))
    long = pd.concat(frames, ignore_index=True)
    return long[rng.random(len(long)) >= missing].reset_index(drop=True)


def order_of(n_waves: int) -> list[str]:
    return [f"s{t}" for t in range(n_waves)]


def path(paths: pd.DataFrame, source: str, target: str, to_session: str) -> pd.Series:
    hit = paths[(paths.source == source) & (paths.target == target) & (paths.to_session == to_session)]
    assert len(hit) == 1
    return hit.iloc[0]


def exact_moment_table(model: LaggedPanelModel, theta: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    """A complete table whose sample mean and (1/n) covariance are exactly the model-implied ones."""
    mu, sigma = model.moments(theta)
    z = np.random.default_rng(seed).normal(size=(n, model.p))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T
    data = mu + z @ np.linalg.cholesky(sigma).T
    return pd.DataFrame([{"participant_id": i, "session": f"s{t}", "x": data[i, 2 * t],
                          "y": data[i, 2 * t + 1]} for i in range(n) for t in range(model.n_waves)])


def quiet_fit(*args, **kwargs) -> CrossLaggedResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fit_cross_lagged(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# agreement with lavaan
# ----------------------------------------------------------------------------------------------
def _compare_with_lavaan(result: CrossLaggedResult, case: dict) -> None:
    ours = result.parameters.set_index(["lhs", "op", "rhs"])
    theirs = pd.DataFrame(case["parameters"]).set_index(["lhs", "op", "rhs"])
    assert set(ours.index) == set(theirs.index), "parameter sets differ from lavaan's"
    theirs = theirs.loc[ours.index]
    np.testing.assert_allclose(ours["estimate"], theirs["est"], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(ours["se"], theirs["se"], atol=TOL, rtol=TOL)
    fit, lav = result.fit, case["fit"]
    assert fit["df"] == lav["df"] and fit["n_params"] == lav["npar"]
    assert fit["n_participants"] == lav["ntotal"]
    for mine, name in [("chisq", "chisq"), ("baseline_chisq", "baseline.chisq"), ("loglik", "logl"),
                       ("loglik_h1", "unrestricted.logl"), ("aic", "aic"), ("bic", "bic")]:
        np.testing.assert_allclose(fit[mine], lav[name], atol=TOL, rtol=1e-6, err_msg=mine)
    for mine, name in [("pvalue", "pvalue"), ("cfi", "cfi"), ("tli", "tli"), ("rmsea", "rmsea"),
                       ("srmr", "srmr")]:
        np.testing.assert_allclose(fit[mine], lav[name], atol=1e-5, err_msg=mine)
    # lavaan warns about negative latent variances exactly when we call the solution inadmissible
    assert result.admissible == (not any("negative" in w for w in case["warnings"]))


@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_matches_stored_lavaan_reference(name):
    case = REFERENCE["cases"][name]
    table = pd.read_csv(DATA / case["data"])
    result = quiet_fit(table, case["x"], case["y"], order=case["order"],
                       random_intercepts=case["random_intercepts"])
    assert result.converged
    _compare_with_lavaan(result, case)


def _lavaan_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    run = subprocess.run(["Rscript", "-e", "library(lavaan)"], capture_output=True)
    return run.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _lavaan_available(), reason="Rscript with the lavaan package is not installed; "
                    "the stored reference (tests/dynamics/data/lavaan_reference.json) is checked instead")
def test_matches_lavaan_live(tmp_path):
    spec = importlib.util.spec_from_file_location("make_reference", HERE / "r" / "make_reference.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    cases = [c for c in driver.CASES if c["name"] == "demo_growth_missing_riclpm"]
    live = driver.run_lavaan(cases, DATA, tmp_path)
    for case in cases:
        table = pd.read_csv(DATA / case["data"])
        result = quiet_fit(table, case["x"], case["y"], order=case["order"],
                           random_intercepts=case["random_intercepts"])
        _compare_with_lavaan(result, live["cases"][case["name"]])


# ----------------------------------------------------------------------------------------------
# planted effects, bias of the CLPM, null calibration
# ----------------------------------------------------------------------------------------------
def test_recovers_brain_leading_symptom():
    n_waves, truth = 4, {("brain", "brain"): 0.4, ("symptom", "symptom"): 0.4,
                         ("brain", "symptom"): 0.35, ("symptom", "brain"): 0.0}
    table = simulate(600, n_waves, seed=11, lag_xy=0.35, lag_yx=0.0, missing=0.1)
    paths = cross_lagged(table, "brain", "symptom", order=order_of(n_waves))
    assert list(paths.columns) == ["kind", "source", "target", "from_session", "to_session", "estimate", "se",
                                   "ci_low", "ci_high", "p"]
    assert len(paths) == 4 * (n_waves - 1)
    assert set(paths.kind) == {"autoregressive", "cross-lagged"}
    z = (paths.estimate - [truth[(s, t)] for s, t in zip(paths.source, paths.target, strict=True)]) / paths.se
    assert np.all(np.abs(z) < 3.5)
    lead = paths[(paths.source == "brain") & (paths.target == "symptom")]
    follow = paths[(paths.source == "symptom") & (paths.target == "brain")]
    assert (lead.p < 0.01).all()
    assert (follow.p > 0.01).all()
    assert lead.estimate.mean() > 0.25 and abs(follow.estimate.mean()) < 0.1
    assert paths.attrs["fit"]["pvalue"] > 0.01 and paths.attrs["fit"]["converged"]


def test_clpm_is_biased_by_stable_between_person_differences():
    # no within-person cross-lag either way, but large correlated stable levels
    order = order_of(4)
    table = simulate(800, 4, seed=5, ar=(0.2, 0.2), ri_cov=((4.0, 2.4), (2.4, 4.0)))
    ri = fit_cross_lagged(table, "brain", "symptom", order=order)
    clpm = fit_cross_lagged(table, "brain", "symptom", order=order, random_intercepts=False)
    cl_ri = ri.paths[ri.paths.kind == "cross-lagged"]
    cl_clpm = clpm.paths[clpm.paths.kind == "cross-lagged"]
    ar_clpm = clpm.paths[clpm.paths.kind == "autoregressive"]
    assert (np.abs(cl_ri.estimate / cl_ri.se) < 3.0).all()
    assert (cl_clpm.p < 0.001).any()  # a spurious cross-lag
    assert (ar_clpm.estimate > 0.5).all()  # stability absorbed into the autoregression (true 0.2)
    assert ri.fit["pvalue"] > 0.01 and clpm.fit["pvalue"] < 1e-6
    assert ri.fit["rmsea"] < clpm.fit["rmsea"] and ri.fit["cfi"] > clpm.fit["cfi"]


def _null_pvalues(seeds) -> tuple[np.ndarray, np.ndarray]:
    cross, chisq = [], []
    for seed in seeds:
        table = simulate(150, 3, seed=1000 + seed, ar=(0.3, 0.3), missing=0.05)
        result = quiet_fit(table, "brain", "symptom", order=order_of(3))
        last = result.paths[(result.paths.kind == "cross-lagged") & (result.paths.to_session == "s2")]
        cross += list(last.p)
        chisq.append(result.fit["pvalue"])
    return np.asarray(cross), np.asarray(chisq)


def test_cross_lag_p_is_calibrated_under_the_null():
    # ~10 s of CPU: 100 RI-CLPM fits of 150 participants
    cross, chisq = _null_pvalues(range(100))
    # 200 cross-lag p-values (2 per data set); 99% binomial range for the 5% rate
    low, high = stats.binom.ppf([0.005, 0.995], len(cross), 0.05) / len(cross)
    assert low <= np.mean(cross < 0.05) <= high
    assert stats.kstest(cross, "uniform").pvalue > 0.001
    low, high = stats.binom.ppf([0.005, 0.995], len(chisq), 0.05) / len(chisq)
    assert low <= np.mean(chisq < 0.05) <= high


# ----------------------------------------------------------------------------------------------
# exact recovery, admissibility and convergence warnings
# ----------------------------------------------------------------------------------------------
def _theta(model: LaggedPanelModel, phi=(0.5, 0.1, 0.8)) -> np.ndarray:
    parts = [np.linspace(0.0, 1.0, model.p)]
    if model.random_intercepts:
        parts.append(phi)
    parts.append([1.5, 0.2, 1.0])
    parts += [[0.3, 0.05, 0.2, 0.4, 1.0, 0.1, 1.2]] * (model.n_waves - 1)
    return np.concatenate(parts)


@pytest.mark.parametrize("random_intercepts", [True, False])
def test_exact_moments_are_reproduced_exactly(random_intercepts):
    model = LaggedPanelModel(3, random_intercepts)
    theta = _theta(model)
    result = fit_cross_lagged(exact_moment_table(model, theta, 150, seed=3), "x", "y", order=order_of(3),
                              random_intercepts=random_intercepts)
    np.testing.assert_allclose(result.parameters.estimate, theta, atol=1e-8)
    assert result.fit["chisq"] < 1e-8 and result.fit["rmsea"] == 0 and result.fit["cfi"] == 1.0
    assert result.admissible and not result.warnings


def test_negative_random_intercept_variance_warns():
    model = LaggedPanelModel(3, True)
    theta = _theta(model, phi=(-0.3, 0.0, 1.0))
    table = exact_moment_table(model, theta, 200, seed=1)
    with pytest.warns(RuntimeWarning, match="not admissible.*random intercepts"):
        result = fit_cross_lagged(table, "x", "y", order=order_of(3))
    assert not result.admissible and not result.fit["admissible"]
    assert result.latent_covariances["RI"][0, 0] == pytest.approx(-0.3, abs=1e-8)
    assert any("Heywood" in w for w in result.warnings)


def test_non_convergence_warns(monkeypatch):
    original = _sem.fisher_scoring
    monkeypatch.setattr(_sem, "fisher_scoring", lambda model, theta, pats, **kw: original(model, theta, pats,
                                                                                              max_iter=1))
    table = simulate(200, 3, seed=2, missing=0.1)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = fit_cross_lagged(table, "brain", "symptom", order=order_of(3))
    assert not result.converged and not result.paths.attrs["fit"]["converged"]


def test_units_do_not_matter():
    # a brain feature in tiny units beside a symptom score in hundreds: same fit, rescaled paths
    table = simulate(300, 3, seed=21, lag_xy=0.3, missing=0.1)
    base = fit_cross_lagged(table, "brain", "symptom", order=order_of(3))
    rescaled = fit_cross_lagged(table.assign(brain=5.0 + 1e-3 * table.brain, symptom=100.0 * table.symptom),
                                "brain", "symptom", order=order_of(3))
    assert rescaled.converged
    unit = {"brain": 1e-3, "symptom": 100.0}
    factor = np.array([unit[t] / unit[s] for s, t in zip(base.paths.source, base.paths.target, strict=True)])
    np.testing.assert_allclose(rescaled.paths.estimate, factor * base.paths.estimate, rtol=1e-6)
    np.testing.assert_allclose(rescaled.paths.se, factor * base.paths.se, rtol=1e-5)
    np.testing.assert_allclose(rescaled.paths.p, base.paths.p, atol=1e-6)
    assert rescaled.fit["chisq"] == pytest.approx(base.fit["chisq"], abs=1e-6)
    assert rescaled.fit["srmr"] == pytest.approx(base.fit["srmr"], abs=1e-8)


# ----------------------------------------------------------------------------------------------
# FIML and complete-data ML
# ----------------------------------------------------------------------------------------------
def test_two_wave_clpm_equals_ols_regressions():
    # with two sessions the CLPM is saturated: its paths are the OLS regressions of session 2 on
    # session 1, their SEs the ML (1/n) residual variance times (X'X)^-1 of the centred predictors
    table = simulate(250, 2, seed=4, lag_xy=0.3, ri_cov=((0.0, 0.0), (0.0, 0.0)))
    result = fit_cross_lagged(table, "brain", "symptom", order=order_of(2), random_intercepts=False)
    wide = table.pivot(index="participant_id", columns="session", values=["brain", "symptom"])
    before = wide[[("brain", "s0"), ("symptom", "s0")]].to_numpy()
    before = before - before.mean(axis=0)
    for target in ("brain", "symptom"):
        after = wide[(target, "s1")].to_numpy()
        coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(after)), before]), after, rcond=None)
        resid = after - coef[0] - before @ coef[1:]
        se = np.sqrt(np.mean(resid ** 2) * np.diag(np.linalg.inv(before.T @ before)))
        for k, source in enumerate(("brain", "symptom")):
            row = path(result.paths, source, target, "s1")
            assert row.estimate == pytest.approx(coef[1 + k], abs=1e-7)
            assert row.se == pytest.approx(se[k], rel=1e-5)
    assert result.fit["df"] == 0 and result.fit["chisq"] == pytest.approx(0.0, abs=1e-7)
    # lavaan's convention for a saturated model
    assert (result.fit["cfi"], result.fit["tli"], result.fit["rmsea"]) == (1.0, 1.0, 0.0)
    assert np.isnan(result.fit["pvalue"])


def _ml_discrepancy_fit(model: LaggedPanelModel, data: np.ndarray, start: np.ndarray):
    """Complete-data ML the textbook way: minimize the discrepancy
    F = log|Sigma| + tr(S Sigma^-1) - log|S| - p + d' Sigma^-1 d; returns (theta, n F)."""
    n, p = data.shape
    mean, cov = data.mean(axis=0), np.cov(data.T, bias=True)

    def discrepancy(theta):
        mu, sigma = model.moments(theta)
        sign, logdet = np.linalg.slogdet(sigma)
        if sign <= 0:
            return 1e10
        inv = np.linalg.inv(sigma)
        d = mean - mu
        return logdet + np.trace(cov @ inv) - np.linalg.slogdet(cov)[1] - p + d @ inv @ d

    res = optimize.minimize(discrepancy, start, method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
    return res.x, n * res.fun


def test_fiml_equals_complete_data_ml_without_missing_sessions():
    table = simulate(300, 3, seed=8, lag_xy=0.3)
    result = fit_cross_lagged(table, "brain", "symptom", order=order_of(3))
    data = np.column_stack([table.pivot(index="participant_id", columns="session", values=v)[s]
                            for s in order_of(3) for v in ("brain", "symptom")])
    model = LaggedPanelModel(3, True)
    start = result.parameters.estimate.to_numpy() + 0.05
    theta, chisq = _ml_discrepancy_fit(model, data, start)
    np.testing.assert_allclose(result.parameters.estimate, theta, atol=2e-4)
    assert result.fit["chisq"] == pytest.approx(chisq, abs=1e-5)
    assert result.n_patterns == 1


def test_missing_sessions_keep_every_participant():
    table = simulate(300, 3, seed=9, lag_xy=0.3, missing=0.25)
    people = table.participant_id.nunique()
    assert table.groupby("participant_id").size().min() == 1  # some were seen once only
    result = fit_cross_lagged(table, "brain", "symptom", order=order_of(3))
    assert result.fit["n_participants"] == people and result.n_patterns > 1
    # casewise log-likelihood, participant by participant, at the implied moments
    mu, sigma = result.implied_mean.to_numpy(), result.implied_cov.to_numpy()
    total = 0.0
    for _, rows in table.groupby("participant_id"):
        wave = rows.session.str[1:].astype(int).to_numpy()
        idx = np.column_stack([2 * wave, 2 * wave + 1]).ravel()
        values = rows[["brain", "symptom"]].to_numpy().ravel()
        cov, dev = sigma[np.ix_(idx, idx)], values - mu[idx]
        quad = dev @ np.linalg.solve(cov, dev)
        total -= 0.5 * (len(idx) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + quad)
    assert result.fit["loglik"] == pytest.approx(total, rel=1e-10)
    # dropping people seen once changes the fit: they were used
    once = table.groupby("participant_id").size().loc[lambda s: s == 1].index
    reduced = fit_cross_lagged(table[~table.participant_id.isin(once)], "brain", "symptom", order=order_of(3))
    assert reduced.fit["n_participants"] == people - len(once)
    assert not np.allclose(reduced.parameters.estimate, result.parameters.estimate)


def test_nan_values_count_as_missing_and_empty_participants_are_dropped_with_a_warning():
    table = simulate(200, 3, seed=10)
    table.loc[table.participant_id == "p0", ["brain", "symptom"]] = np.nan
    table.loc[table.index[5], "symptom"] = np.nan
    with pytest.warns(UserWarning, match="1 participant.*no observed"):
        result = fit_cross_lagged(table, "brain", "symptom", order=order_of(3))
    assert result.fit["n_participants"] == 199


def test_result_object_is_consistent():
    table = simulate(400, 3, seed=12, lag_xy=0.3, missing=0.1)
    result = fit_cross_lagged(table, "brain", "symptom", order=order_of(3))
    assert result.model == "RI-CLPM" and result.sessions == order_of(3)
    assert result.paths.attrs["fit"] == result.fit
    k = result.fit["n_params"]
    assert result.vcov.shape == (k, k) and len(result.parameters) == k
    np.testing.assert_allclose(np.sqrt(np.diag(result.vcov)), result.parameters.se)
    assert list(result.implied_cov.index) == ["brain[s0]", "symptom[s0]", "brain[s1]", "symptom[s1]",
                                              "brain[s2]", "symptom[s2]"]
    row = path(result.paths, "brain", "symptom", "s2")
    assert row.ci_low == pytest.approx(row.estimate - stats.norm.ppf(0.975) * row.se)
    assert row.p == pytest.approx(2 * stats.norm.sf(abs(row.estimate / row.se)))
    assert row.from_session == "s1" and row.kind == "cross-lagged"


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def long_table() -> pd.DataFrame:
    return simulate(40, 3, seed=0)


def test_missing_column_is_named(long_table):
    with pytest.raises(BadInputError, match="not found: bdi"):
        cross_lagged(long_table, "brain", "bdi", order=order_of(3))


def test_duplicate_session_is_named(long_table):
    doubled = pd.concat([long_table, long_table.iloc[[0]]])
    with pytest.raises(BadInputError, match="more than one row") as info:
        cross_lagged(doubled, "brain", "symptom", order=order_of(3))
    assert "p0 at s0" in info.value.problems


def test_session_not_in_order_is_named(long_table):
    with pytest.raises(BadInputError, match="not in order.*'s2'"):
        cross_lagged(long_table, "brain", "symptom", order=["s0", "s1"], random_intercepts=False)


def test_ri_clpm_needs_three_sessions(long_table):
    two = long_table[long_table.session != "s2"]
    with pytest.raises(BadInputError, match="at least 3 sessions.*random_intercepts=False"):
        cross_lagged(two, "brain", "symptom", order=["s0", "s1"])
    with pytest.raises(BadInputError, match="at least 2 sessions"):
        cross_lagged(two[two.session == "s0"], "brain", "symptom", order=["s0"], random_intercepts=False)


def test_too_few_participants(long_table):
    few = long_table[long_table.participant_id.isin([f"p{i}" for i in range(5)])]
    with pytest.raises(BadInputError, match="too few participants: 5"):
        cross_lagged(few, "brain", "symptom", order=order_of(3))


def test_other_bad_input(long_table):
    with pytest.raises(BadInputError, match="give order"):
        cross_lagged(long_table, "brain", "symptom")
    with pytest.raises(BadInputError, match="same column"):
        cross_lagged(long_table, "brain", "brain", order=order_of(3))
    with pytest.raises(BadInputError, match="more than once: s1"):
        cross_lagged(long_table, "brain", "symptom", order=["s0", "s1", "s1", "s2"])
    text = long_table.assign(symptom=long_table.symptom.astype(object))
    text.loc[3, "symptom"] = "n/a?"
    with pytest.raises(BadInputError, match="'symptom' must be numeric"):
        cross_lagged(text, "brain", "symptom", order=order_of(3))
    constant = long_table.assign(brain=np.where(long_table.session == "s1", 1.0, long_table.brain))
    with pytest.raises(BadInputError, match="'brain' at session 's1'.*no variance"):
        cross_lagged(constant, "brain", "symptom", order=order_of(3))
    with pytest.raises(BadInputError, match="long format"):
        cross_lagged(long_table.to_numpy(), "brain", "symptom", order=order_of(3))
