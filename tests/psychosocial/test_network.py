"""EBICglasso and centrality against R (qgraph 1.9.3 / networktools) and closed forms."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.psychosocial.network import (
    centrality,
    centrality_arrays,
    correlation_matrix,
    ebicglasso,
    ebicglasso_from_correlation,
    glasso_ebic_batch,
    graphical_lasso,
    lambda_path,
    prepare_items,
    shortest_paths,
)

EDGE_TOL = 1e-4          # R glasso stops at thr = 1e-4; we converge to 1e-6
CENTRALITY_TOL = 5e-4


@pytest.fixture(scope="module")
def bfi():
    oracle = json.loads(shared_path("oracles/r_reference.json").read_text())["network_bfi_N_E"]
    data = pd.read_csv(shared_path("data/r_datasets/bfi.csv"))[oracle["columns"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        complete = data.dropna()
        network = ebicglasso(complete)
    return oracle, complete, network


def test_bfi_partial_correlations_match_qgraph(bfi):
    oracle, complete, network = bfi
    assert len(complete) == oracle["n"]
    reference = np.array(oracle["partial_correlations"])
    np.testing.assert_allclose(network.to_numpy(), reference, atol=EDGE_TOL, rtol=0)
    # same sparsity pattern: the EBIC picked the same λ
    np.testing.assert_array_equal(network.to_numpy() == 0, reference == 0)
    assert list(network.columns) == oracle["columns"]


def test_bfi_centrality_matches_qgraph_and_networktools(bfi):
    oracle, _, network = bfi
    communities = dict(zip(oracle["columns"], oracle["communities"], strict=True))
    table = centrality(network, communities)
    for measure in ("strength", "expected_influence", "bridge_strength", "bridge_expected_influence_1step"):
        np.testing.assert_allclose(table[measure], oracle[measure], atol=CENTRALITY_TOL, err_msg=measure)
    np.testing.assert_allclose(table["closeness"], oracle["closeness"], rtol=1e-3)
    np.testing.assert_array_equal(table["betweenness"], oracle["betweenness"])


def test_missing_rows_dropped_listwise_with_warning(bfi):
    oracle, complete, _ = bfi
    raw = pd.read_csv(shared_path("data/r_datasets/bfi.csv"))[oracle["columns"]]
    assert raw.isna().any(axis=1).sum() > 0
    with pytest.warns(UserWarning, match="listwise"):
        kept = prepare_items(raw)
    pd.testing.assert_frame_equal(kept, complete.astype(float))


def _chain_precision(p: int, rho: float = -0.4) -> np.ndarray:
    K = np.eye(p)
    for i in range(p - 1):
        K[i, i + 1] = K[i + 1, i] = rho
    return K


def test_tiny_lambda_approaches_unregularized_partial_correlations():
    rng = np.random.default_rng(0)
    X = rng.multivariate_normal(np.zeros(6), np.linalg.inv(_chain_precision(6)), size=400)
    S = correlation_matrix(pd.DataFrame(X)).to_numpy()
    K = np.linalg.inv(S)
    d = np.sqrt(np.diag(K))
    exact = -K / np.outer(d, d)
    np.fill_diagonal(exact, 0)
    # γ = 0 and a path reaching λ ≈ 1e-6 λ_max: BIC with n huge prefers the full model
    fit = glasso_ebic_batch(S[None], 1e9, gamma=0.0, n_lambda=12, lambda_min_ratio=1e-5, tol=1e-7)
    np.testing.assert_allclose(fit["partial"][0], exact, atol=1e-4)
    assert fit["lambda_index"][0] == 11


def test_glasso_solution_satisfies_kkt_conditions():
    """Stationarity of the penalized likelihood (independent check of the optimum, any λ)."""
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal(np.zeros(8), np.linalg.inv(_chain_precision(8)), size=300)
    S = correlation_matrix(pd.DataFrame(X)).to_numpy()
    lam = 0.1
    K = graphical_lasso(S, lam, tol=1e-10)
    K = (K + K.T) / 2
    Sigma = np.linalg.inv(K)
    grad = Sigma - S                           # must equal λ·sign(K_ij) where K_ij ≠ 0, |·| ≤ λ else
    off = ~np.eye(8, dtype=bool)
    nz = off & (K != 0)
    np.testing.assert_allclose(grad[nz], lam * np.sign(K[nz]), atol=1e-6)
    assert np.all(np.abs(grad[off & (K == 0)]) <= lam + 1e-6)
    np.testing.assert_allclose(np.diag(grad), 0, atol=1e-8)   # unpenalized diagonal


def test_sparse_precision_recovered_from_large_sample():
    p = 8
    K = _chain_precision(p)
    rng = np.random.default_rng(2)
    X = rng.multivariate_normal(np.zeros(p), np.linalg.inv(K), size=20000)
    net = ebicglasso(pd.DataFrame(X, columns=[f"x{i}" for i in range(p)]))
    true_edges = np.abs(np.triu(K, 1)) > 0
    est_edges = np.triu(net.to_numpy(), 1) != 0
    iu = np.triu_indices(p, 1)
    assert np.all(est_edges[true_edges])                  # every chain edge found
    # absent edges essentially zero (EBIC may keep a few tiny ones)
    assert np.abs(net.to_numpy()[iu][~true_edges[iu]]).max() < 0.03
    d = np.sqrt(np.diag(K))
    true_partial = -K / np.outer(d, d)
    np.testing.assert_allclose(net.to_numpy()[true_edges], true_partial[true_edges], atol=0.03)


def test_planted_hub_has_highest_strength():
    rng = np.random.default_rng(3)
    names = ["loneliness", "sleep", "mood", "anhedonia", "fatigue", "worry", "appetite", "guilt"]
    K = np.eye(8)
    K[0, 1:] = K[1:, 0] = -0.3                          # loneliness linked to every symptom
    K[4, 5] = K[5, 4] = -0.1
    X = rng.multivariate_normal(np.zeros(8), np.linalg.inv(K), size=800)
    net = ebicglasso(pd.DataFrame(X, columns=names))
    table = centrality(net).set_index("node")
    assert table["strength"].idxmax() == "loneliness"
    assert table["betweenness"].idxmax() == "loneliness"
    assert table["closeness"].idxmax() == "loneliness"


def test_null_data_gives_sparse_network():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = ebicglasso(pd.DataFrame(X))
    edges = np.triu(net.to_numpy(), 1)
    assert np.count_nonzero(edges) <= 3
    assert np.abs(edges).max() < 0.1


def test_lambda_path_is_qgraphs():
    S = np.array([[1, 0.5, -0.7], [0.5, 1, 0.1], [-0.7, 0.1, 1]])
    path = lambda_path(S, 100, 0.01)
    assert path[0] == pytest.approx(0.7)
    assert path[-1] == pytest.approx(0.007)
    np.testing.assert_allclose(np.diff(np.log(path)), np.log(0.01) / 99)


def test_spearman_and_polychoric_options_run_and_differ_from_pearson():
    rng = np.random.default_rng(5)
    z = rng.multivariate_normal(np.zeros(4), np.linalg.inv(_chain_precision(4, -0.45)), size=600)
    items = pd.DataFrame(np.digitize(z, [-1.0, 0.0, 1.0]), columns=list("abcd"))
    nets = {c: ebicglasso(items, corr=c) for c in ("pearson", "spearman", "polychoric")}
    assert nets["polychoric"].attrs["corr"] == "polychoric"
    # the latent (polychoric) edge a–b is stronger than the attenuated Pearson one
    assert nets["polychoric"].loc["a", "b"] > nets["pearson"].loc["a", "b"] > 0
    spearman = correlation_matrix(items, "spearman").to_numpy()
    from scipy import stats

    np.testing.assert_allclose(spearman, stats.spearmanr(items.to_numpy()).statistic, atol=1e-12)


def test_shortest_paths_count_ties():
    # square 0-1-2-3-0 with equal weights: two shortest paths between opposite corners
    W = np.zeros((4, 4))
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 0)]:
        W[i, j] = W[j, i] = 0.5
    dist, count = shortest_paths(W[None])
    assert dist[0, 0, 2] == pytest.approx(4.0)
    assert count[0, 0, 2] == 2
    between = centrality_arrays(W)["betweenness"][0]
    np.testing.assert_allclose(between, [0.5, 0.5, 0.5, 0.5])


def test_centrality_against_brute_force_paths():
    """Closeness/betweenness against an independent Dijkstra + path enumeration."""
    import heapq
    import itertools

    rng = np.random.default_rng(6)
    p = 7
    W = np.triu(rng.uniform(-0.5, 0.5, size=(p, p)) * (rng.random((p, p)) < 0.5), 1)
    W = W + W.T
    length = {(i, j): 1 / abs(W[i, j]) for i in range(p) for j in range(p) if W[i, j] != 0}

    def dijkstra(s):
        dist = {s: 0.0}
        heap = [(0.0, s)]
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist[u]:
                continue
            for v in range(p):
                if (u, v) in length and d + length[u, v] < dist.get(v, np.inf):
                    dist[v] = d + length[u, v]
                    heapq.heappush(heap, (dist[v], v))
        return dist

    dists = [dijkstra(s) for s in range(p)]
    closeness = [1 / sum(d.values()) if len(d) > 1 else np.nan for d in dists]
    between = np.zeros(p)
    for s, t in itertools.combinations(range(p), 2):
        if t not in dists[s]:
            continue
        paths = []
        for r in range(0, p - 1):
            for mid in itertools.permutations([v for v in range(p) if v not in (s, t)], r):
                route = (s, *mid, t)
                if all(e in length for e in zip(route, route[1:], strict=False)):
                    total = sum(length[e] for e in zip(route, route[1:], strict=False))
                    if abs(total - dists[s][t]) < 1e-9:
                        paths.append(mid)
        for v in range(p):
            between[v] += sum(v in m for m in paths) / len(paths)
    table = centrality(pd.DataFrame(W))
    np.testing.assert_allclose(table["closeness"], closeness, rtol=1e-12)
    np.testing.assert_allclose(table["betweenness"], between, atol=1e-12)


def test_bridge_expected_influence_two_step_by_hand():
    nodes = ["a", "b", "c", "d"]
    W = np.array([[0, 0.3, 0.2, 0.0],
                  [0.3, 0, -0.1, 0.4],
                  [0.2, -0.1, 0, 0.5],
                  [0.0, 0.4, 0.5, 0]])
    communities = {"a": "X", "b": "X", "c": "Y", "d": "Y"}
    table = centrality(pd.DataFrame(W, index=nodes, columns=nodes), communities).set_index("node")
    # node a (X): BEI1 = w_ac + w_ad = 0.2; 2-step adds Σ_k w_ak · Σ_{m ∈ Y} w_km
    #   k = b: 0.3 · (w_bc + w_bd) = 0.3 · 0.3 = 0.09; k = c: 0.2 · (w_cd) = 0.2 · 0.5 = 0.1
    assert table.loc["a", "bridge_expected_influence_1step"] == pytest.approx(0.2)
    assert table.loc["a", "bridge_expected_influence_2step"] == pytest.approx(0.2 + 0.09 + 0.1)
    assert table.loc["b", "bridge_strength"] == pytest.approx(0.5)
    assert table.loc["b", "bridge_expected_influence_1step"] == pytest.approx(0.3)


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"a": [1.0, 2, 3, 4], "b": ["x", "y", "z", "w"]}), "non-numeric"),
    (pd.DataFrame({"a": np.arange(10.0), "b": np.ones(10), "c": np.arange(10.0) ** 2}), "constant"),
    (pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0], "c": [0.0, 3.0]}), "complete rows"),
    (pd.DataFrame({"a": np.arange(10.0)}), "at least 2 columns"),
    (pd.DataFrame({"a": np.arange(10.0), "b": np.full(10, np.nan), "c": np.arange(10.0) ** 2}),
     "column 'b': 10 missing"),
])
def test_bad_input(frame, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # listwise-deletion notice
        with pytest.raises(BadInputError, match=message):
            ebicglasso(frame)


def test_collinear_columns_rejected():
    x = np.random.default_rng(7).normal(size=(50, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 0] + x[:, 1]})
    with pytest.raises(BadInputError, match="positive definite"):
        ebicglasso(frame)


def test_bad_arguments():
    frame = pd.DataFrame(np.random.default_rng(8).normal(size=(40, 3)), columns=list("abc"))
    with pytest.raises(BadInputError, match="corr"):
        ebicglasso(frame, corr="kendall")
    with pytest.raises(BadInputError, match="lambda_min_ratio"):
        ebicglasso(frame, lambda_min_ratio=2)
    with pytest.raises(BadInputError, match="community"):
        centrality(ebicglasso(frame), {"a": 1, "b": 2})
    with pytest.raises(BadInputError, match="symmetric"):
        centrality(pd.DataFrame([[0, 1], [0.5, 0]]))
    with pytest.raises(BadInputError, match="n_obs"):
        ebicglasso_from_correlation(np.eye(3), 1)
