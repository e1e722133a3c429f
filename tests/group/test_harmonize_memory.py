"""ComBat and LongitudinalComBat at scale: blocked fits equal the whole-table fit, the REML sums
equal a dense computation, and memory stays near the data."""

from __future__ import annotations

import contextlib
import io
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.group import _reml
from theramark.group.harmonize import ComBat, LongitudinalComBat


def _sites_table(seed: int, n_features: int = 41, constant: bool = True):
    rng = np.random.default_rng(seed)
    sizes = [14, 20, 17, 9]
    sites = np.repeat(["a", "b", "c", "d"], sizes)
    n = len(sites)
    covars = pd.DataFrame({"age": rng.integers(20, 60, n).astype(float),
                           "group": rng.choice(["HC", "MDD"], n)})
    shift = np.repeat(rng.normal(0, 1, 4), sizes)[:, None] * rng.normal(1, 0.3, n_features)
    scale = np.repeat(rng.uniform(0.5, 2.0, 4), sizes)[:, None]
    data = 3 + shift + scale * rng.normal(size=(n, n_features)) + 0.02 * covars["age"].to_numpy()[:, None]
    if constant:
        data[:, 4] = 2.5  # constant everywhere: must come out unchanged, whatever the blocks
    return data, sites, covars


OPTIONS = [
    {},
    {"ref_site": "b"},
    {"mean_only": True},
    {"parametric": False},
    {"parametric": False, "ref_site": "c", "mean_only": True},
    {"empirical_bayes": False},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_blocked_combat_equals_whole_table(options):
    data, sites, covars = _sites_table(0)
    whole = ComBat(**options, block_size=10**6).fit(data, sites, covars)
    expected = whole.transform(data, sites, covars)
    for block_size in (1, 3, 8):
        model = ComBat(**options, block_size=block_size).fit(data, sites, covars)
        for name in ("grand_mean_", "var_pooled_", "gamma_hat_", "delta_hat_", "gamma_star_",
                     "delta_star_"):
            np.testing.assert_allclose(getattr(model, name), getattr(whole, name), rtol=1e-12,
                                       atol=1e-12, err_msg=name)
        np.testing.assert_allclose(model.transform(data, sites, covars), expected, rtol=0,
                                   atol=1e-11)
    np.testing.assert_array_equal(expected[:, 4], data[:, 4])
    assert whole.constant_features_.tolist() == [j == 4 for j in range(data.shape[1])]


def _combat_without_eb(data, sites, covs):
    """Location/scale ComBat written out with lstsq (no empirical Bayes): the reference."""
    labels, index = np.unique(sites, return_inverse=True)
    design = np.column_stack([np.eye(len(labels))[index], covs])
    coef = np.linalg.lstsq(design, data, rcond=None)[0]
    resid = data - design @ coef
    sd = np.sqrt((resid**2).mean(axis=0))
    grand = np.bincount(index) / len(index) @ coef[:len(labels)]
    covariate_part = covs @ coef[len(labels):]
    z = (data - grand - covariate_part) / sd
    out = np.empty_like(data)
    for i in range(len(labels)):
        rows = index == i
        out[rows] = ((z[rows] - z[rows].mean(axis=0)) / z[rows].std(axis=0, ddof=1)
                     * sd + grand + covariate_part[rows])
    return out


def test_blocked_combat_matches_independent_references():
    data, sites, covars = _sites_table(1, constant=False)
    covs = np.column_stack([covars["age"], covars["group"] == "MDD"]).astype(float)
    got = ComBat(empirical_bayes=False, block_size=3).fit_transform(data, sites, covars)
    np.testing.assert_allclose(got, _combat_without_eb(data, sites, covs), atol=1e-10)
    neuro = pytest.importorskip("neuroCombat")
    with contextlib.redirect_stdout(io.StringIO()):
        expected = neuro.neuroCombat(data.T.copy(), covars.assign(site=sites), "site",
                                     categorical_cols=["group"], continuous_cols=["age"])["data"].T
    np.testing.assert_allclose(ComBat(block_size=2).fit_transform(data, sites, covars), expected,
                               atol=1e-6)


def test_float32_input_is_read_in_float64_blocks_and_out_is_honoured():
    data, sites, covars = _sites_table(2)
    single = data.astype(np.float32)
    model = ComBat(block_size=4).fit(single, sites, covars)
    reference = ComBat().fit(single.astype(np.float64), sites, covars)
    expected = reference.transform(single.astype(np.float64), sites, covars)
    got = model.transform(single, sites, covars)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-11)
    in_place = single.copy()
    returned = model.transform(in_place, sites, covars, out=in_place)
    assert returned is in_place
    assert in_place.dtype == np.float32
    np.testing.assert_allclose(in_place, expected, rtol=1e-6)
    frame = pd.DataFrame(single, columns=[f"e{j}" for j in range(single.shape[1])])
    np.testing.assert_allclose(ComBat(block_size=4).fit_transform(frame, sites, covars).to_numpy(),
                               expected, atol=1e-11)
    with pytest.raises(BadInputError, match="out must be"):
        model.transform(single, sites, covars, out=np.empty((3, 3)))
    with pytest.raises(BadInputError, match="block_size"):
        ComBat(block_size=0).fit(data, sites, covars)
    holes = data.copy()
    holes[5, [9, 30]] = np.nan
    with pytest.raises(BadInputError, match=r"\[9, 30\]"):
        ComBat(block_size=4).fit(holes, sites, covars)


def _longitudinal_table(seed: int, n_sub: int = 36, n_features: int = 23):
    rng = np.random.default_rng(seed)
    site_of = np.repeat(["a", "b", "c"], n_sub // 3)
    # a third of the participants miss the second session: clusters of size 1 and 2
    complete = np.arange(n_sub) % 3 != 0
    pid = np.r_[np.arange(n_sub), np.flatnonzero(complete)]
    session = np.r_[np.zeros(n_sub), np.ones(complete.sum())]
    sites = site_of[pid]
    person = rng.normal(0, 1, (n_sub, n_features))[pid]
    shift = {"a": 0.0, "b": 1.2, "c": -0.7}
    data = (person + np.array([shift[s] for s in sites])[:, None] - 0.3 * session[:, None]
            + rng.normal(0, 0.6, (len(pid), n_features)))
    covars = pd.DataFrame({"session": np.where(session == 1, "post", "pre")})
    return data, sites, covars, np.array([f"p{j}" for j in pid])


@pytest.mark.parametrize("ref_site", [None, "c"])
def test_blocked_longitudinal_combat_equals_whole_table(ref_site):
    data, sites, covars, pid = _longitudinal_table(3)
    whole = LongitudinalComBat(ref_site=ref_site, block_size=10**6)
    expected = whole.fit_transform(data, sites, covars, pid)
    for block_size in (1, 4, 9):
        model = LongitudinalComBat(ref_site=ref_site, block_size=block_size)
        got = model.fit_transform(data, sites, covars, pid)
        np.testing.assert_allclose(model.var_pooled_, whole.var_pooled_, rtol=1e-12)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11)


def _dense_weighted(x, y, clusters, gamma):
    """X'H^-1X, X'H^-1y, y'H^-1y and log|H| with H = I + gamma Z Z' built and inverted densely."""
    z = (clusters[:, None] == np.unique(clusters)[None, :]).astype(float)
    h = np.eye(len(x)) + gamma * z @ z.T
    h_inv = np.linalg.inv(h)
    return x.T @ h_inv @ x, x.T @ h_inv @ y, y @ h_inv @ y, np.linalg.slogdet(h)[1]


def test_reml_sums_by_cluster_size_equal_the_dense_computation():
    rng = np.random.default_rng(5)
    clusters = np.repeat(np.arange(12), [1, 2, 3, 2, 1, 3, 3, 2, 1, 2, 2, 1])
    n = len(clusters)
    x = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = rng.normal(size=(n, 4)) + rng.normal(size=(12, 4))[clusters]
    stats = _reml.sufficient_stats(x, y, clusters)
    gammas = np.array([0.0, 0.3, 2.0, 40.0])
    a, b, yhy, logdet_h = _reml._weighted(stats, gammas)
    for f, gamma in enumerate(gammas):
        # the stats hold y centred (REML is invariant to y + X d), so the reference uses it too
        da, db, dyhy, dlog = _dense_weighted(x, stats.y[:, f], clusters, gamma)
        np.testing.assert_allclose(a[f], da, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b[f], db, rtol=1e-12, atol=1e-12)
        assert yhy[f] == pytest.approx(dyhy, rel=1e-12)
        assert logdet_h[f] == pytest.approx(dlog, rel=1e-12, abs=1e-12)
        # lme4's REML criterion from the dense pieces (Bates et al. 2015, eq. 41)
        beta = np.linalg.solve(da, db)
        s2 = (dyhy - db @ beta) / (n - 3)
        crit = dlog + np.linalg.slogdet(da)[1] + (n - 3) * (1 + np.log(2 * np.pi * s2))
        assert _reml.reml_criterion(stats, gammas)[f] == pytest.approx(crit, rel=1e-12)


def test_combat_peak_memory_stays_near_the_output():
    rng = np.random.default_rng(6)
    n, n_features = 400, 20_000
    sites = np.repeat(["a", "b", "c", "d"], n // 4)
    covars = pd.DataFrame({"age": rng.normal(40, 10, n)})
    data = rng.normal(size=(n, n_features)) + np.repeat(rng.normal(0, 1, 4), n // 4)[:, None]
    tracemalloc.start()
    try:
        out = ComBat(block_size=500).fit_transform(data, sites, covars)
        peak = tracemalloc.get_traced_memory()[1]
        single = data.astype(np.float32)
        del out
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        ComBat(block_size=500).fit_transform(single, sites, covars, out=single)
        peak_in_place = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the float64 output plus a dozen 1.6 MB blocks of temporaries (the whole-table code held
    # about 5 float64 copies of the table); in place, the temporaries alone
    block_bytes = n * 500 * 8
    assert peak < data.nbytes + 12 * block_bytes, peak / data.nbytes
    assert peak_in_place < 12 * block_bytes, peak_in_place / block_bytes
