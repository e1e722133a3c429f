"""Edge bootstrap and case-dropping stability (bootnet semantics)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.psychosocial.network import ebicglasso
from theramark.psychosocial.network_stability import (
    bootstrap_edges,
    case_drop_stability,
    resampled_networks,
    summarize_case_drop,
)


def _chain_data(n: int, p: int = 5, rho: float = -0.4, seed: int = 0) -> pd.DataFrame:
    K = np.eye(p)
    for i in range(p - 1):
        K[i, i + 1] = K[i + 1, i] = rho
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(np.zeros(p), np.linalg.inv(K), size=n)
    return pd.DataFrame(X, columns=[f"n{i}" for i in range(p)])


def test_batched_resamples_equal_single_fits():
    """The batched engine gives, resample by resample, what ebicglasso gives on that resample."""
    data = _chain_data(200, p=6, seed=1)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(data), size=(4, len(data)))
    batched = resampled_networks(data.to_numpy(), rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for b, r in enumerate(rows):
            single = ebicglasso(data.iloc[r].reset_index(drop=True)).to_numpy()
            np.testing.assert_allclose(batched[b], single, atol=2e-3)
            np.testing.assert_array_equal(batched[b] == 0, single == 0)


def test_bootstrap_edges_intervals_cover_planted_edges_and_are_seeded():
    data = _chain_data(400, seed=2)
    table = bootstrap_edges(data, n_boot=80, random_state=3)
    again = bootstrap_edges(data, n_boot=80, random_state=3)
    pd.testing.assert_frame_equal(table, again)
    assert len(table) == 10
    assert (table["ci_lower"] <= table["ci_upper"]).all()
    chain = table[(table["node_b"].str[1].astype(int) - table["node_a"].str[1].astype(int)) == 1]
    # true partial correlation of every chain edge is 0.4; all intervals exclude 0
    assert (chain["ci_lower"] > 0.2).all() and (chain["ci_upper"] < 0.6).all()
    assert (chain["prop_nonzero"] == 1).all()
    assert table["n_valid"].iloc[0] == 80


def test_case_drop_stable_network_has_high_cs_and_null_low():
    stable = _chain_data(500, p=6, rho=-0.45, seed=4)
    communities = {c: ("A" if i < 3 else "B") for i, c in enumerate(stable.columns)}
    _, summary = case_drop_stability(stable, n_boot=100, statistics=("strength", "edge", "bridge_strength"),
                                     communities=communities, random_state=5)
    cs = summary.groupby("statistic")["cs_coefficient"].first()
    assert set(cs.index) == {"strength", "edge", "bridge_strength"}
    assert cs["edge"] >= 0.5
    # strength of a chain: ends weaker than the middle, recovered by most subsets
    assert cs["strength"] >= 0.25
    noise = pd.DataFrame(np.random.default_rng(6).normal(size=(300, 6)), columns=list("abcdef"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        correlations, summary = case_drop_stability(noise, n_boot=60, statistics=("strength",),
                                                    random_state=7)
    assert summary["cs_coefficient"].iloc[0] <= 0.25
    assert set(correlations.columns) == {"boot", "drop_proportion", "n_rows", "statistic", "correlation"}
    assert correlations["n_rows"].max() == round(0.95 * 300)


def test_cs_coefficient_definition():
    rows = []
    for proportion, fraction_ok in [(0.1, 1.0), (0.3, 0.96), (0.5, 0.9), (0.7, 0.97)]:
        n_ok = int(round(fraction_ok * 100))
        values = [0.9] * n_ok + [0.5] * (100 - n_ok)
        rows += [{"statistic": "strength", "drop_proportion": proportion, "correlation": v} for v in values]
    summary = summarize_case_drop(pd.DataFrame(rows))
    # bootnet takes the largest proportion meeting the 95% criterion, even past a failing one
    assert summary["cs_coefficient"].iloc[0] == pytest.approx(0.7)
    np.testing.assert_allclose(summary["prop_above"], [1.0, 0.96, 0.9, 0.97])
    nan_rows = pd.DataFrame({"statistic": "edge", "drop_proportion": 0.1, "correlation": [np.nan] * 10})
    assert summarize_case_drop(nan_rows)["cs_coefficient"].iloc[0] == 0.0


@pytest.mark.slow
def test_parallel_equals_serial(monkeypatch):
    import theramark.psychosocial.network_stability as stability

    monkeypatch.setattr(stability, "_FIT_CHUNK", 4)         # several chunks from 8 resamples
    data = _chain_data(150, p=4, seed=8)
    rows = np.random.default_rng(9).integers(0, 150, size=(8, 150))
    serial = resampled_networks(data.to_numpy(), rows, n_jobs=1)
    parallel = resampled_networks(data.to_numpy(), rows, n_jobs=2)
    np.testing.assert_array_equal(serial, parallel)


def test_bad_arguments():
    data = _chain_data(50, p=4)
    with pytest.raises(BadInputError, match="statistics"):
        case_drop_stability(data, n_boot=10, statistics=("degree",))
    with pytest.raises(BadInputError, match="drop_proportions"):
        case_drop_stability(data, n_boot=10, drop_proportions=(0.5, 1.2))
    with pytest.raises(BadInputError, match="leaves"):
        case_drop_stability(data, n_boot=10, drop_proportions=(0.95,))
    with pytest.raises(BadInputError, match="communities"):
        case_drop_stability(data, n_boot=10, statistics=("bridge_strength",))
    with pytest.raises(BadInputError, match="n_boot"):
        bootstrap_edges(data, n_boot=1)


def test_resample_correlations_match_scipy_and_pandas():
    from scipy import stats

    from theramark.psychosocial.network_stability import _correlations

    data = _chain_data(120, p=4, seed=10).round(1)          # ties exercise average ranks
    rows = np.random.default_rng(11).integers(0, 120, size=(3, 120))
    values = data.to_numpy()
    pearson = _correlations(values, rows, "pearson")
    spearman = _correlations(values, rows, "spearman")
    for b, r in enumerate(rows):
        np.testing.assert_allclose(pearson[b], np.corrcoef(values[r], rowvar=False), atol=1e-12)
        np.testing.assert_allclose(spearman[b], stats.spearmanr(values[r]).statistic, atol=1e-12)
