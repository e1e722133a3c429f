"""Network comparison test (NetworkComparisonTest semantics): planted difference and null calibration."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.psychosocial.network_compare import network_comparison_test


def _sample(K: np.ndarray, n: int, rng: np.random.Generator) -> pd.DataFrame:
    X = rng.multivariate_normal(np.zeros(len(K)), np.linalg.inv(K), size=n)
    return pd.DataFrame(X, columns=[f"s{i}" for i in range(len(K))])


def _chain(p: int, rho: float) -> np.ndarray:
    K = np.eye(p)
    for i in range(p - 1):
        K[i, i + 1] = K[i + 1, i] = rho
    return K


def test_planted_edge_difference_is_detected():
    rng = np.random.default_rng(0)
    K_a = _chain(5, -0.4)
    K_b = K_a.copy()
    K_b[0, 1] = K_b[1, 0] = 0.0          # one edge absent in group b
    result = network_comparison_test(_sample(K_a, 400, rng), _sample(K_b, 400, rng), 99, random_state=1)
    assert result["network_structure"]["p_value"].iloc[0] <= 0.02
    edges = result["edges"].set_index(["node_a", "node_b"])
    assert edges.loc[("s0", "s1"), "p_value"] <= 0.02
    assert edges["difference"].abs().idxmax() == ("s0", "s1")
    gs = result["global_strength"].iloc[0]
    assert gs["statistic"] == pytest.approx(abs(gs["strength_a"] - gs["strength_b"]))
    assert result["n_permutations"] == 99


def test_same_seed_same_result():
    rng = np.random.default_rng(2)
    a, b = _sample(_chain(4, -0.3), 120, rng), _sample(_chain(4, -0.3), 100, rng)
    first = network_comparison_test(a, b, 19, random_state=3)
    second = network_comparison_test(a, b, 19, random_state=3)
    pd.testing.assert_frame_equal(first["edges"], second["edges"])


def test_columns_must_match():
    rng = np.random.default_rng(4)
    a = _sample(_chain(3, -0.3), 50, rng)
    with pytest.raises(BadInputError, match="same columns"):
        network_comparison_test(a, a.rename(columns={"s0": "x"}), 9)


@pytest.mark.slow
def test_false_positive_rate_on_identical_networks():
    """Two samples of one network: rejections at α = 0.2 stay near or below the nominal rate."""
    rng = np.random.default_rng(5)
    K = _chain(4, -0.35)
    p_struct, p_global = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for rep in range(60):
            result = network_comparison_test(_sample(K, 150, rng), _sample(K, 150, rng), 49,
                                             random_state=rep)
            p_struct.append(result["network_structure"]["p_value"].iloc[0])
            p_global.append(result["global_strength"]["p_value"].iloc[0])
    for p_values in (np.array(p_struct), np.array(p_global)):
        rate = np.mean(p_values <= 0.2)
        assert rate <= 0.2 + 2.5 * np.sqrt(0.2 * 0.8 / 60)     # not anti-conservative
        assert 0.3 < p_values.mean() < 0.7                     # p-values spread over (0, 1)
