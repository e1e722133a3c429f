"""Agreement tests for theramark.group.inference against statsmodels, bctpy and slow references."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from theramark.errors import BadInputError
from theramark.group._permutation_schemes import ExchangeabilityScheme
from theramark.group.inference import fdr_bh, max_t_permutation, nbs, nbs_glm

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install "
                                 "'theramark[gpu]'); the torch backend test needs it")


# ---------------------------------------------------------------------------------------------
# FDR
# ---------------------------------------------------------------------------------------------
def test_fdr_bh_matches_statsmodels():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=200), rng.uniform(0, 0.01, size=20), [0.0, 1.0, 0.5, 0.5]])
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(fdr_bh(p), expected, rtol=1e-12, atol=0)


def test_fdr_bh_keeps_shape_and_nans_out_of_m():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(6, 5)) ** 3
    p[1, 2] = p[4, 0] = np.nan
    q = fdr_bh(p)
    assert q.shape == p.shape
    assert np.isnan(q[1, 2]) and np.isnan(q[4, 0])
    finite = ~np.isnan(p)
    np.testing.assert_allclose(q[finite], multipletests(p[finite], method="fdr_bh")[1], rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan")), st.sampled_from([0.0, 0.05, 1.0])),
                min_size=1, max_size=40))
def test_fdr_bh_property_matches_statsmodels(values):
    p = np.array(values)
    q = fdr_bh(p)
    finite = ~np.isnan(p)
    assert np.array_equal(np.isnan(q), ~finite)
    if finite.any():
        np.testing.assert_allclose(q[finite], multipletests(p[finite], method="fdr_bh")[1],
                                   rtol=1e-12, atol=1e-300)


def test_fdr_bh_rejects_out_of_range():
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        fdr_bh([0.1, 1.2])
    assert fdr_bh([np.nan, np.nan]).shape == (2,)


# ---------------------------------------------------------------------------------------------
# max-T: statistics and the permutation null against slow references
# ---------------------------------------------------------------------------------------------
def _study(rng, n=30, p=40, effect=0.0):
    group = np.r_[np.ones(n // 2), np.zeros(n - n // 2)]
    age = rng.normal(40, 10, n) + 5 * group
    design = np.column_stack([np.ones(n), group])
    data = rng.normal(size=(n, p)) + 0.05 * age[:, None]
    data[:, :3] += effect * group[:, None]
    return data, design, age[:, None]


def test_max_t_statistic_matches_statsmodels_ols():
    rng = np.random.default_rng(2)
    data, design, age = _study(rng)
    result = max_t_permutation(data, design, [0, 1], n_permutations=20, nuisance=age,
                               random_state=0)
    full = np.hstack([design, age])
    for j in (0, 5, 17):
        fit = sm.OLS(data[:, j], full).fit()
        assert result.statistic[j] == pytest.approx(fit.tvalues[1], rel=1e-10)


def _reference_null(data, model, contrast, nuisance_cols, draws, signs=False, tail="both"):
    """Freedman–Lane done the slow, literal way: permute reduced-model residuals, add the
    reduced fit back, refit the full model with lstsq, take the max statistic."""
    z = model[:, nuisance_cols]
    if z.shape[1]:
        fitted_z = z @ np.linalg.lstsq(z, data, rcond=None)[0]
    else:
        fitted_z = np.zeros_like(data)
    resid_z = data - fitted_z
    df = model.shape[0] - np.linalg.matrix_rank(model)
    xtx_inv = np.linalg.pinv(model.T @ model)
    out = []
    for draw in draws:
        permuted = resid_z * draw[:, None] if signs else resid_z[draw]
        y_star = permuted + fitted_z
        beta = np.linalg.lstsq(model, y_star, rcond=None)[0]
        resid = y_star - model @ beta
        se = np.sqrt((resid ** 2).sum(0) / df * (contrast @ xtx_inv @ contrast))
        t = contrast @ beta / se
        out.append({"both": np.abs(t), "greater": t, "less": -t}[tail].max())
    return np.array(out)


@pytest.mark.parametrize("tail", ["both", "greater", "less"])
def test_freedman_lane_null_matches_literal_reference(tail):
    rng = np.random.default_rng(3)
    data, design, age = _study(rng, effect=0.8)
    model = np.hstack([design, age])
    n_perm = 30
    result = max_t_permutation(data, design, [0, 1], n_permutations=n_perm, nuisance=age,
                               tail=tail, random_state=np.random.RandomState(5))
    legacy = np.random.RandomState(5)
    draws = [legacy.permutation(data.shape[0]) for _ in range(n_perm)]
    expected = _reference_null(data, model, np.array([0.0, 1.0, 0.0]), [0, 2], draws, tail=tail)
    np.testing.assert_allclose(result.null_max, expected, rtol=1e-9)
    observed = {"both": np.abs, "greater": lambda t: t, "less": lambda t: -t}[tail](
        result.statistic)
    expected_p = (1 + (expected[None, :] >= observed[:, None] - 1e-9).sum(1)) / (n_perm + 1)
    np.testing.assert_allclose(result.p_fwe, expected_p)


def test_sign_flip_null_matches_literal_reference():
    rng = np.random.default_rng(4)
    n = 24
    change = rng.normal(0.3, 1.0, size=(n, 25))
    covariate = rng.normal(size=(n, 1))
    design = np.ones((n, 1))
    n_perm = 25
    result = max_t_permutation(change, design, [1], n_permutations=n_perm, scheme="sign_flip",
                               nuisance=covariate, random_state=np.random.RandomState(9))
    legacy = np.random.RandomState(9)
    draws = [np.sign(0.5 - legacy.rand(1, n))[0] for _ in range(n_perm)]
    model = np.hstack([design, covariate])
    expected = _reference_null(change, model, np.array([1.0, 0.0]), [1], draws, signs=True)
    np.testing.assert_allclose(result.null_max, expected, rtol=1e-9)


@pytest.mark.parametrize(("whole_blocks", "site_columns"),
                         [(False, True), (True, True), (False, False)])
def test_block_permutation_null_matches_literal_reference(whole_blocks, site_columns):
    rng = np.random.default_rng(21)
    sites = np.repeat([0, 1, 2], 8)
    group = np.tile(np.r_[np.ones(4), np.zeros(4)], 3)
    if site_columns:
        design = np.column_stack([(sites[:, None] == np.arange(3)).astype(float), group])
    else:
        design = np.column_stack([np.ones(24), group])
    contrast = np.r_[np.zeros(design.shape[1] - 1), 1.0]
    data = rng.normal(size=(24, 15)) + np.array([0.0, 3.0, -2.0])[sites][:, None]
    age = rng.normal(size=(24, 1))
    n_perm = 40
    result = max_t_permutation(data, design, contrast, n_permutations=n_perm, blocks=sites,
                               whole_blocks=whole_blocks, nuisance=age,
                               random_state=np.random.RandomState(4))
    draws = ExchangeabilityScheme(24, "permute", sites, whole_blocks).draw(
        np.random.RandomState(4), n_perm)
    model = np.hstack([design, age])
    nuisance_cols = [k for k in range(model.shape[1]) if k != design.shape[1] - 1]
    expected = _reference_null(data, model, np.r_[contrast, 0.0], nuisance_cols, draws)
    np.testing.assert_allclose(result.null_max, expected, rtol=1e-9)


def test_single_precision_close_to_double():
    rng = np.random.default_rng(22)
    data, design, age = _study(rng, n=40, p=300, effect=1.0)
    kwargs = dict(n_permutations=200, nuisance=age, random_state=0)
    double = max_t_permutation(data, design, [0, 1], **kwargs)
    single = max_t_permutation(data, design, [0, 1], precision="single", **kwargs)
    np.testing.assert_array_equal(single.statistic, double.statistic)
    np.testing.assert_allclose(single.null_max, double.null_max, rtol=1e-4)
    assert np.abs(single.p_fwe - double.p_fwe).max() <= 2 / 201
    with pytest.raises(BadInputError, match="precision"):
        max_t_permutation(data, design, [0, 1], precision="half", **kwargs)


def test_manly_permutes_raw_data():
    rng = np.random.default_rng(5)
    data, design, _ = _study(rng)
    result = max_t_permutation(data, design, [0, 1], n_permutations=15, method="manly",
                               random_state=np.random.RandomState(1))
    legacy = np.random.RandomState(1)
    draws = [legacy.permutation(data.shape[0]) for _ in range(15)]
    # Permuting the data or the intercept-only residuals gives the same t: both references agree.
    expected = _reference_null(data, design, np.array([0.0, 1.0]), [], draws)
    np.testing.assert_allclose(result.null_max, expected, rtol=1e-9)


def test_p_values_bounds_frame_and_chunk_invariance():
    rng = np.random.default_rng(6)
    data, design, age = _study(rng, effect=2.5)
    kwargs = dict(n_permutations=99, nuisance=age, random_state=11)
    result = max_t_permutation(data, design, [0, 1], **kwargs)
    small_chunks = max_t_permutation(data, design, [0, 1], chunk_size=7, **kwargs)
    np.testing.assert_allclose(result.null_max, small_chunks.null_max, rtol=1e-12)
    np.testing.assert_array_equal(result.p_fwe, small_chunks.p_fwe)
    assert result.null_max.shape == (99,)
    assert np.all(result.p_fwe >= 1 / 100) and np.all(result.p_fwe <= 1)
    assert np.all(result.p_fwe >= result.p_uncorrected)
    assert np.all(result.p_fwe[:3] <= 0.02)  # planted effects
    frame = result.to_frame([f"edge{i}" for i in range(data.shape[1])])
    assert list(frame.columns) == ["feature", "t", "p_uncorrected", "p_fwe"]
    assert frame.shape[0] == data.shape[1] and frame.feature.iloc[2] == "edge2"
    # p_fwe is the rank of the observed |t| among the permutation maxima.
    manual = (1 + (result.null_max[None, :] >= np.abs(result.statistic)[:, None]).sum(1)) / 100
    np.testing.assert_allclose(result.p_fwe, manual)


def test_seed_reproducible_and_differs_across_seeds():
    rng = np.random.default_rng(7)
    data, design, _ = _study(rng)
    a = max_t_permutation(data, design, [0, 1], n_permutations=50, random_state=3)
    b = max_t_permutation(data, design, [0, 1], n_permutations=50, random_state=3)
    c = max_t_permutation(data, design, [0, 1], n_permutations=50, random_state=4)
    np.testing.assert_array_equal(a.null_max, b.null_max)
    assert not np.array_equal(a.null_max, c.null_max)


# ---------------------------------------------------------------------------------------------
# Exchangeability blocks
# ---------------------------------------------------------------------------------------------
def test_within_block_permutations_stay_in_blocks_and_cover_them():
    codes = np.repeat([0, 1, 2], [5, 7, 4])
    rng = np.random.default_rng(0)
    scheme = ExchangeabilityScheme(codes.size, "permute", codes)
    draws = scheme.draw(rng, 400)
    for perm in draws:
        assert sorted(perm) == list(range(codes.size))
        np.testing.assert_array_equal(codes[perm], codes)
    # Every row of a block reaches every position of that block.
    assert {int(p) for p in draws[:, 0]} == set(range(5))
    assert {int(p) for p in draws[:, 12]} == set(range(12, 16))


def test_whole_block_permutations_and_sign_flips():
    codes = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])  # three blocks of three, interleaved
    rng = np.random.default_rng(1)
    perms = ExchangeabilityScheme(9, "permute", codes, whole_blocks=True).draw(rng, 50)
    positions = [np.flatnonzero(codes == b) for b in range(3)]
    for perm in perms:
        sources = [perm[pos] for pos in positions]
        # each destination block receives one whole source block, in its original row order
        assert all(any(np.array_equal(src, pos) for pos in positions) for src in sources)
    signs = ExchangeabilityScheme(9, "sign_flip", codes, whole_blocks=True).draw(rng, 50)
    for flip in signs:
        for pos in positions:
            assert np.unique(flip[pos]).size == 1
    with pytest.raises(BadInputError, match="equal size"):
        ExchangeabilityScheme(4, "permute", np.array([0, 0, 0, 1]), whole_blocks=True)


def test_blocks_accept_labels_and_run():
    rng = np.random.default_rng(8)
    data, design, _ = _study(rng, n=24)
    sites = np.array(["siteA", "siteB", "siteC"] * 8)
    result = max_t_permutation(data, design, [0, 1], n_permutations=30, blocks=sites,
                               random_state=0)
    assert result.p_fwe.shape == (data.shape[1],)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(9)
    data, design, _ = _study(rng, n=10, p=4)
    with pytest.raises(BadInputError, match="contrast has 3 weights"):
        max_t_permutation(data, design, [0, 1, 0], n_permutations=5)
    bad = data.copy()
    bad[2, 1] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        max_t_permutation(bad, design, [0, 1], n_permutations=5)
    with pytest.raises(BadInputError, match="rows"):
        max_t_permutation(data, design[:-1], [0, 1], n_permutations=5)
    collinear = np.column_stack([design, design[:, 1]])
    with pytest.raises(BadInputError, match="not estimable"):
        max_t_permutation(data, collinear, [0, 1, 0], n_permutations=5)
    with pytest.raises(BadInputError, match="scheme"):
        max_t_permutation(data, design, [0, 1], n_permutations=5, scheme="bootstrap")
    with pytest.raises(BadInputError, match="tail"):
        max_t_permutation(data, design, [0, 1], n_permutations=5, tail="two")
    with pytest.raises(BadInputError, match="blocks"):
        max_t_permutation(data, design, [0, 1], n_permutations=5, blocks=[0, 1])
    with pytest.raises(BadInputError, match="backend"):
        max_t_permutation(data, design, [0, 1], n_permutations=5, backend="jax")


def test_constant_feature_gets_zero_t_not_nan():
    rng = np.random.default_rng(10)
    data, design, _ = _study(rng, n=12, p=3)
    data[:, 1] = 4.2
    result = max_t_permutation(data, design, [0, 1], n_permutations=20, random_state=0)
    assert result.statistic[1] == 0.0 and np.all(np.isfinite(result.p_fwe))


# ---------------------------------------------------------------------------------------------
# GPU path (torch on CPU here), equal to the numpy reference
# ---------------------------------------------------------------------------------------------
@needs_torch
def test_torch_backend_equals_numpy():
    rng = np.random.default_rng(11)
    data, design, age = _study(rng, effect=1.0)
    sites = np.repeat([0, 1], 15)
    for scheme, blocks in (("permute", None), ("sign_flip", None), ("permute", sites)):
        kwargs = dict(n_permutations=60, nuisance=age, random_state=2, scheme=scheme,
                      blocks=blocks)
        ref = max_t_permutation(data, design, [0, 1], **kwargs)
        gpu = max_t_permutation(data, design, [0, 1], backend="torch", **kwargs)
        np.testing.assert_allclose(gpu.statistic, ref.statistic, rtol=1e-12)
        np.testing.assert_allclose(gpu.null_max, ref.null_max, rtol=1e-10)
        np.testing.assert_array_equal(gpu.p_fwe, ref.p_fwe)
        np.testing.assert_array_equal(gpu.p_uncorrected, ref.p_uncorrected)


def test_auto_backend_runs_everywhere():
    rng = np.random.default_rng(12)
    data, design, _ = _study(rng, n=12, p=5)
    ref = max_t_permutation(data, design, [0, 1], n_permutations=20, random_state=0)
    auto = max_t_permutation(data, design, [0, 1], n_permutations=20, random_state=0,
                             backend="auto")
    np.testing.assert_allclose(auto.null_max, ref.null_max, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# NBS against bctpy
# ---------------------------------------------------------------------------------------------
def _symmetric(rng, n, n_nodes, block=None, shift=0.0):
    a = rng.normal(size=(n, n_nodes, n_nodes))
    a = (a + a.transpose(0, 2, 1)) / 2
    if block is not None:
        a[:, block[:, None], block[None, :]] += shift
    return a


def _bct_components(adj, pvals):
    out = {}
    for label in range(1, int(adj.max()) + 1):
        mask = adj == label
        if mask.any():
            out[frozenset(zip(*np.nonzero(np.triu(mask)), strict=True))] = pvals[label - 1]
    return out


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("tail", ["right", "left", "both"])
def test_nbs_equals_bctpy_given_the_same_permutations(tail, paired):
    bct = pytest.importorskip("bct")
    rng = np.random.default_rng(13)
    n_nodes, k = 16, 40
    block = np.arange(5)
    x = _symmetric(rng, 12, n_nodes, block, 0.9)
    y = _symmetric(rng, 12 if paired else 10, n_nodes, np.arange(8, 12), 0.9)
    with contextlib.redirect_stdout(io.StringIO()):
        p_bct, adj, null_bct = bct.nbs_bct(x.transpose(1, 2, 0), y.transpose(1, 2, 0), 2.0, k=k,
                                           tail=tail, paired=paired, seed=7)
    ours = nbs(x, y, 2.0, n_permutations=k, tail=tail, paired=paired,
               random_state=np.random.RandomState(7), split_signs=False)
    np.testing.assert_array_equal(ours.null_max, null_bct)
    expected = _bct_components(adj, p_bct)
    got = {frozenset(zip(*np.nonzero(np.triu(c)), strict=True)): p
           for c, p in zip(ours.components, ours.p_values, strict=True)}
    assert set(got) == set(expected)
    for key, p in got.items():
        # bctpy leaves the unpermuted data out of the null: p_bct = #(null >= size) / k.
        assert p * (k + 1) - 1 == pytest.approx(expected[key] * k)
    assert [len(c) for c in got] and all(
        size == len(key) for key, size in zip(
            [frozenset(zip(*np.nonzero(np.triu(c)), strict=True)) for c in ours.components],
            ours.sizes, strict=True))


def test_nbs_split_signs_reports_each_sign():
    rng = np.random.default_rng(14)
    x = _symmetric(rng, 15, 14, np.arange(4), 1.5)
    y = _symmetric(rng, 15, 14, np.arange(8, 12), 1.5)
    result = nbs(x, y, 3.0, n_permutations=99, random_state=0)
    frame = result.to_frame()
    positive = result.components[list(result.signs).index(1)]
    negative = result.components[list(result.signs).index(-1)]
    assert positive[:4, :4][np.triu_indices(4, 1)].sum() >= 4
    assert negative[8:12, 8:12][np.triu_indices(4, 1)].sum() >= 4
    assert not (positive & negative).any()
    assert set(frame.sign) >= {1, -1}
    assert frame.p_fwe.min() <= 0.05
    assert np.all(np.diff(result.statistic) <= 0)
    first = frame.iloc[0]
    expected_nodes = {f"node_{i}" for i in np.flatnonzero(result.components[0].any(axis=0))}
    assert set(first.nodes.split(";")) == expected_nodes and first.n_nodes == len(expected_nodes)
    assert frame.nodes.str.startswith("node_").all()
    named = result.to_frame([f"roi{i}" for i in range(14)])
    assert named.nodes.str.contains("roi").all()
    edges = result.edges_frame([f"roi{i}" for i in range(14)])
    assert set(edges.columns) == {"component", "node_a", "node_b", "t", "p_fwe"}
    assert len(edges) == int(result.sizes.sum())


def test_nbs_intensity_matches_naive_reference():
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(15)
    n_nodes = 12
    x = _symmetric(rng, 14, n_nodes, np.arange(5), 1.2)
    y = _symmetric(rng, 13, n_nodes)
    threshold = 2.5
    result = nbs(x, y, threshold, n_permutations=30, tail="right", measure="intensity",
                 random_state=np.random.RandomState(3))
    iu = np.triu_indices(n_nodes, 1)

    def intensities(a, b):
        t = np.zeros((n_nodes, n_nodes))
        t[iu] = stats.ttest_ind(a[:, iu[0], iu[1]], b[:, iu[0], iu[1]], axis=0).statistic
        supra = np.triu(t > threshold, 1)
        _, labels = connected_components(supra | supra.T, directed=False)
        values = {}
        for i, j in zip(*np.nonzero(supra), strict=True):
            values[labels[i]] = values.get(labels[i], 0.0) + t[i, j] - threshold
        return sorted(values.values(), reverse=True)

    np.testing.assert_allclose(result.statistic, intensities(x, y), rtol=1e-10)
    legacy = np.random.RandomState(3)
    pooled = np.concatenate([x, y])
    for u in range(30):
        perm = legacy.permutation(pooled.shape[0])
        shuffled = pooled[perm]
        values = intensities(shuffled[:14], shuffled[14:])
        assert result.null_max[u] == pytest.approx(values[0] if values else 0.0, rel=1e-10)


def test_nbs_glm_equals_two_sample_nbs():
    rng = np.random.default_rng(16)
    x = _symmetric(rng, 10, 12, np.arange(4), 1.3)
    y = _symmetric(rng, 11, 12)
    direct = nbs(x, y, 2.5, n_permutations=40, random_state=5)
    design = np.column_stack([np.ones(21), np.r_[np.ones(10), np.zeros(11)]])
    glm = nbs_glm(np.concatenate([x, y]), design, [0, 1], 2.5, n_permutations=40,
                  random_state=5)
    np.testing.assert_array_equal(direct.null_max, glm.null_max)
    np.testing.assert_array_equal(direct.sizes, glm.sizes)
    np.testing.assert_array_equal(direct.p_values, glm.p_values)


def test_nbs_bad_inputs():
    rng = np.random.default_rng(17)
    x = _symmetric(rng, 5, 6)
    with pytest.raises(BadInputError, match="symmetric"):
        nbs(x + rng.normal(size=x.shape), x, 2.0, n_permutations=5)
    with pytest.raises(BadInputError, match="paired"):
        nbs(x, x[:4], 2.0, n_permutations=5, paired=True)
    with pytest.raises(BadInputError, match="nodes"):
        nbs(x, _symmetric(rng, 5, 7), 2.0, n_permutations=5)
    with pytest.raises(BadInputError, match="measure"):
        nbs(x, x, 2.0, n_permutations=5, measure="mass")


def test_nbs_without_supra_threshold_edges_is_empty():
    rng = np.random.default_rng(18)
    x, y = _symmetric(rng, 6, 8), _symmetric(rng, 6, 8)
    result = nbs(x, y, 50.0, n_permutations=10, random_state=0)
    assert result.components == [] and result.to_frame().empty
    assert np.all(result.null_max == 0)


@needs_torch
def test_nbs_torch_backend_equals_numpy():
    rng = np.random.default_rng(19)
    x = _symmetric(rng, 10, 12, np.arange(4), 1.3)
    y = _symmetric(rng, 10, 12)
    for paired in (False, True):
        ref = nbs(x, y, 2.5, n_permutations=40, random_state=1, paired=paired)
        gpu = nbs(x, y, 2.5, n_permutations=40, random_state=1, paired=paired, backend="torch")
        np.testing.assert_array_equal(ref.null_max, gpu.null_max)
        np.testing.assert_array_equal(ref.p_values, gpu.p_values)
    data, design, age = _three_arms(rng)
    kwargs = dict(nuisance=age, n_permutations=30, random_state=2, measure="intensity")
    ref = nbs_glm(data, design, [[0, 1, 0], [0, 0, 1]], 3.0, **kwargs)
    gpu = nbs_glm(data, design, [[0, 1, 0], [0, 0, 1]], 3.0, backend="torch", **kwargs)
    np.testing.assert_allclose(gpu.null_max, ref.null_max, rtol=1e-10)
    np.testing.assert_array_equal(gpu.p_values, ref.p_values)


@pytest.mark.parametrize("method", ["freedman_lane", "manly"])
def test_constant_feature_zero_under_both_methods(method):
    rng = np.random.default_rng(20)
    data, design, _ = _study(rng, n=12, p=3)
    data[:, 2] = -7.5
    result = max_t_permutation(data, design, [0, 1], n_permutations=20, random_state=0,
                               method=method)
    assert result.statistic[2] == 0.0 and result.p_uncorrected[2] == 1.0


# ---------------------------------------------------------------------------------------------
# F contrasts (nbs_glm with a contrast matrix)
# ---------------------------------------------------------------------------------------------
def _three_arms(rng, n_per_arm=8, n_nodes=10):
    arms = np.repeat([0, 1, 2], n_per_arm)
    n = arms.size
    design = np.column_stack([np.ones(n), arms == 1, arms == 2]).astype(float)
    age = rng.normal(size=(n, 1))
    data = _symmetric(rng, n, n_nodes) + 0.5 * age[:, :, None]
    return data, design, age


def test_f_contrast_edges_match_statsmodels_f_test():
    rng = np.random.default_rng(23)
    data, design, age = _three_arms(rng)
    contrast = np.array([[0.0, 1, 0], [0, 0, 1]])
    result = nbs_glm(data, design, contrast, 3.0, n_permutations=20, nuisance=age,
                     random_state=0)
    model = np.hstack([design, age])
    f_contrast = np.array([[0.0, 1, 0, 0], [0, 0, 1, 0]])
    for i, j in [(0, 1), (2, 7), (5, 9)]:
        fit = sm.OLS(data[:, i, j], model).fit()
        expected = float(np.squeeze(fit.f_test(f_contrast).fvalue))
        assert result.t[i, j] == pytest.approx(expected, rel=1e-10)
    assert set(result.signs.tolist()) <= {0}


def test_f_permutation_null_matches_literal_refit():
    from theramark.group._permutation_backend import NumpyBackend, PermutedOLS

    rng = np.random.default_rng(24)
    data, design, age = _three_arms(rng)
    edges = data[:, *np.triu_indices(10, 1)]
    model = np.hstack([design, age])
    contrast = np.array([[0.0, 1, 0, 0], [0, 0, 1, 0]])
    engine = PermutedOLS(edges, model, contrast, "freedman_lane", NumpyBackend(),
                         np.ones((24, 1)))
    perms = np.random.default_rng(0).permuted(np.tile(np.arange(24), (5, 1)), axis=1)
    got = engine.batch(permutations=perms)
    z = model[:, [0, 3]]
    fitted_z = z @ np.linalg.lstsq(z, edges, rcond=None)[0]
    for b, perm in enumerate(perms):
        y_star = (edges - fitted_z)[perm] + fitted_z
        for j in (0, 11, 40):
            fit = sm.OLS(y_star[:, j], model).fit()
            expected = float(np.squeeze(fit.f_test(contrast).fvalue))
            assert got[b, j] == pytest.approx(expected, rel=1e-9)


def test_contrast_matrix_rejected_by_max_t():
    rng = np.random.default_rng(25)
    data, design, _ = _study(rng, n=12, p=3)
    with pytest.raises(BadInputError, match="one contrast"):
        max_t_permutation(data, design, [[0, 1], [1, 0]], n_permutations=5)


@pytest.mark.parametrize("method", ["freedman_lane", "manly"])
def test_observed_statistic_is_the_least_squares_engines_t(method):
    from theramark.group._permutation_backend import NumpyBackend, PermutedOLS
    from theramark.stats import ols

    rng = np.random.default_rng(11)
    n = 40
    design = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    data = design @ rng.normal(size=(3, 30)) + rng.normal(size=(n, 30))
    contrast = np.array([0.0, 1.0, -0.5])
    engine = PermutedOLS(data, design, contrast, method, NumpyBackend(), np.ones((n, 1)))
    expected = ols(design, data).contrast(contrast)
    assert engine.df == expected.df
    np.testing.assert_allclose(engine.observed(), expected.t, rtol=1e-10)
