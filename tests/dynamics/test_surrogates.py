"""Surrogates keep what they should, p-values follow the formula, nulls hold their nominal rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.dynamics.test_states import planted_states
from theramark.dynamics.metrics import state_metrics
from theramark.dynamics.states import fit_states, window_vectors
from theramark.dynamics.surrogates import (
    fit_var,
    motion_state_association,
    mvar_surrogates,
    phase_randomize,
    surrogate_pvalue,
    surrogate_test,
    window_fd,
)
from theramark.errors import BadInputError


def _var1(n, a, rng, burn=200):
    r = a.shape[0]
    x = np.zeros((n + burn, r))
    e = rng.standard_normal((n + burn, r))
    for t in range(1, n + burn):
        x[t] = a @ x[t - 1] + e[t]
    return x[burn:]


A = np.array([[0.5, 0.2, 0.0], [0.0, 0.4, -0.3], [0.1, 0.0, 0.6]])


@pytest.mark.parametrize("n", [128, 101])
def test_phase_randomisation_keeps_spectrum_and_covariance(n):
    rng = np.random.default_rng(0)
    x = _var1(n, A, rng) + np.array([1.0, -2.0, 0.5])
    surr = phase_randomize(x, n_surrogates=4, random_state=1)
    assert surr.shape == (4, n, 3)
    for s in surr:
        np.testing.assert_allclose(np.abs(np.fft.rfft(s, axis=0)), np.abs(np.fft.rfft(x, axis=0)), atol=1e-9)
        np.testing.assert_allclose(np.cov(s.T), np.cov(x.T), atol=1e-10)
        np.testing.assert_allclose(s.mean(axis=0), x.mean(axis=0), atol=1e-10)
        assert np.abs(s - x).max() > 0.5  # a different series, not a copy
    np.testing.assert_array_equal(surr, phase_randomize(x, 4, random_state=1))


def test_fit_var_matches_statsmodels():
    from statsmodels.tsa.api import VAR

    rng = np.random.default_rng(1)
    x = _var1(300, A, rng)
    intercept, coef, cov = fit_var(x, order=2)
    ref = VAR(x).fit(2, trend="c")
    np.testing.assert_allclose(coef, ref.coefs, atol=1e-10)
    np.testing.assert_allclose(intercept, ref.intercept, atol=1e-10)
    np.testing.assert_allclose(cov, ref.sigma_u, atol=1e-10)


def test_mvar_surrogates_reproduce_lag1_autocovariance():
    rng = np.random.default_rng(2)
    x = _var1(2000, A, rng)
    surr = mvar_surrogates(x, order=1, n_surrogates=3, random_state=3)
    assert surr.shape == (3, 2000, 3)

    def lag1(y):
        y = y - y.mean(axis=0)
        return y[1:].T @ y[:-1] / (len(y) - 1)

    target = lag1(x)
    for s in surr:
        np.testing.assert_allclose(lag1(s), target, atol=0.25)
        np.testing.assert_allclose(np.cov(s.T), np.cov(x.T), atol=0.3)
    # Fitted coefficients of a surrogate recover the generating VAR.
    _, coef, _ = fit_var(surr[0], 1)
    np.testing.assert_allclose(coef[0], A, atol=0.08)


def test_surrogate_pvalue_formula():
    null = np.array([0.1, 0.5, 0.9, 1.2, 3.0])
    assert surrogate_pvalue(1.0, null) == pytest.approx((1 + 2) / 6)
    assert surrogate_pvalue(1.0, null, "less") == pytest.approx((1 + 3) / 6)
    assert surrogate_pvalue(-1.0, null, "two-sided") == pytest.approx((1 + 2) / 6)
    assert surrogate_pvalue(10.0, null) == pytest.approx(1 / 6)
    with pytest.raises(BadInputError, match="alternative"):
        surrogate_pvalue(1.0, null, "both")


def _fc_variability(series):
    """Mean over edges of the SD of windowed Fisher-z FC: high when FC switches between states."""
    vec, lengths = window_vectors(series, window=20, step=2)
    offsets = np.r_[0, np.cumsum(lengths)]
    spans = zip(offsets[:-1], offsets[1:], strict=True)
    return float(np.mean([vec[a:b].std(axis=0).mean() for a, b in spans]))


def test_surrogate_test_detects_planted_switching():
    series, _, _ = planted_states(n_series=2, n_volumes=300, random_state=5)
    for method in ("phase", "mvar"):
        result = surrogate_test(_fc_variability, series, n_surrogates=19, method=method, random_state=0)
        assert result.null.shape == (19,)
        assert result.p_value == pytest.approx(1 / 20)


def test_surrogate_test_null_rate_on_stationary_data():
    rng = np.random.default_rng(6)
    p = []
    for seed in range(40):
        x = _var1(150, A, np.random.default_rng(seed))
        p.append(surrogate_test(_fc_variability, [x], n_surrogates=19, method="phase",
                                random_state=int(rng.integers(1 << 30))).p_value)
    p = np.array(p)
    # P(p ≤ 0.05) = 1/20 under the null; 40 tests: 8 or more rejections has probability < 0.01.
    assert (p <= 0.05).sum() <= 7
    assert 0.3 < p.mean() < 0.7


def test_window_fd_matches_loop_and_skips_nan():
    rng = np.random.default_rng(7)
    fd = rng.random(50)
    fd[0] = np.nan
    got = window_fd(fd, window=10, step=3)
    expected = [np.nanmean(fd[s : s + 10]) for s in range(0, 41, 3)]
    np.testing.assert_allclose(got, expected)
    with pytest.raises(BadInputError, match="window"):
        window_fd(fd, 60)


def test_motion_association_flags_a_motion_state_and_not_a_null_one():
    rng = np.random.default_rng(8)
    labels, fds = [], []
    for _ in range(30):
        fd = np.abs(rng.standard_normal(100)).cumsum() % 1.0 * rng.uniform(0.1, 0.5)
        fdw = window_fd(fd, 10)
        labels.append(rng.integers(0, 2, size=fdw.size))
        fds.append(fdw)
    # State 2 = the high-motion windows (one threshold for all): series that move more spend more
    # time in it (series level) and it comes with the windows of high FD (window level).
    threshold = np.quantile(np.concatenate(fds), 0.7)
    for lab, fdw in zip(labels, fds, strict=True):
        lab[fdw > threshold] = 2
    for level in ("series", "window"):
        table = motion_state_association(labels, fds, 3, level=level)
        assert table.columns.tolist() == ["state", "r_with_fd", "p", "p_fdr", "flagged", "n"]
        assert table.loc[2, "flagged"] and table.loc[2, "r_with_fd"] > 0.3, level
    # Null: labels independent of FD; flagged at about the nominal rate.
    flagged = 0
    for seed in range(100):
        r = np.random.default_rng(100 + seed)
        fd = [r.random(40) for _ in range(20)]
        lab = [r.integers(0, 2, size=40) for _ in range(20)]
        table = motion_state_association(lab, fd, 2, level="window", alpha=0.05)
        flagged += bool(table["flagged"].any())
    # FDR over 2 states at 0.05 keeps the family-wise rate ≤ 0.05: ≥ 11 of 100 has P < 0.01.
    assert flagged <= 10
    with pytest.raises(BadInputError, match=r"series\[0\]"):
        motion_state_association([np.zeros(5, int)], [np.zeros(4)], 2)


def test_state_metrics_show_no_group_by_time_effect_on_stationary_surrogates():
    """2 arms × 2 sessions × 15 participants of stationary MVAR surrogates: the arm × session test
    on occupancy change rejects at the nominal rate."""
    base = planted_states(n_series=1, n_volumes=200, n_rois=6, random_state=9)[0][0]
    n_sim, n_per_arm, rejections = 100, 15, 0
    for seed in range(n_sim):
        surr = mvar_surrogates(base, order=1, n_surrogates=4 * n_per_arm, random_state=seed)[:, :100]
        fit = fit_states(list(surr), 3, window=15, step=2, random_state=seed, n_init=3)
        occ = state_metrics(fit.labels, 3, step_s=4.0)["occupancy_0"].to_numpy()
        # series order: arm A ses-1, arm A ses-2, arm B ses-1, arm B ses-2 (15 participants each).
        occ = occ.reshape(2, 2, n_per_arm)
        change = occ[:, 1] - occ[:, 0]
        rejections += stats.ttest_ind(change[0], change[1]).pvalue < 0.05
    # Binomial(100, 0.05): P(X ≥ 12) < 0.005. (These 100 seeds give 10; 400 other seeds gave 22,
    # i.e. 5.5 %.)
    assert rejections <= 11
