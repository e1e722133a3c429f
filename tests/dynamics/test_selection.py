"""Choosing k: criteria against direct computations; the planted k stands out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from tests.dynamics.test_states import planted_states
from theramark.dynamics.selection import _halves, select_n_states, split_half_reproducibility
from theramark.dynamics.states import (
    centroid_correlation,
    exemplar_windows,
    fit_states,
    match_states,
    window_vectors,
)
from theramark.errors import BadInputError


@pytest.fixture(scope="module")
def planted():
    return planted_states(n_series=8, n_volumes=400, random_state=11)


@pytest.mark.parametrize("windows", ["all", "exemplars"])
def test_planted_three_states_are_chosen(planted, windows):
    series, _, _ = planted
    table = select_n_states(series, range(2, 6), window=20, step=2, silhouette_samples=600, windows=windows)
    assert table.columns.tolist() == [
        "k", "inertia", "silhouette", "split_half_r", "split_half_r_min", "n_iter"
    ]
    assert table["k"].tolist() == [2, 3, 4, 5]
    assert (np.diff(table["inertia"]) < 0).all()
    best = table.set_index("k")
    # Reproducibility: every state reproduces up to the planted k, not beyond (a split of a real
    # state differs between halves).
    assert (best.loc[:3, "split_half_r_min"] > 0.9).all()
    if windows == "all":
        assert best.loc[4:, "split_half_r_min"].max() < 0.9
    else:
        # On ~80 exemplars per half a split of a planted state reproduces for some seeds (k = 4:
        # r_min from −0.1 to 0.97 over random_state 0–2), so only k = 5 is required to fail here.
        assert best.loc[5, "split_half_r_min"] < 0.9
    # Elbow: the drop from 2 to 3 states is more than twice any later drop.
    drops = -np.diff(table["inertia"].to_numpy())
    assert drops[0] > 2 * drops[1:].max()
    # Silhouette favours fewer states here (two planted states share a community, r = 0.59), but
    # it must fall once the planted states are split.
    assert best.loc[3, "silhouette"] > best.loc[4, "silhouette"] > best.loc[5, "silhouette"]


def test_criteria_equal_direct_computations(planted):
    series, _, _ = planted
    table = select_n_states(series[:4], [3], window=20, step=4, silhouette_samples=10_000, split_half=False,
                            windows="all")
    fit = fit_states(series[:4], 3, window=20, step=4)
    vec, _ = window_vectors(series[:4], window=20, step=4)
    labels = np.concatenate(fit.labels)
    wss = sum(((vec[labels == j] - fit.centroid_vectors[j]) ** 2).sum() for j in range(3))
    assert table.loc[0, "inertia"] == pytest.approx(wss, rel=1e-4)
    # All windows fit in the sample: the silhouette is the full one.
    assert table.loc[0, "silhouette"] == pytest.approx(silhouette_score(vec, labels), rel=1e-5)
    assert np.isnan(table.loc[0, "split_half_r"])


def test_split_half_is_low_for_states_without_structure():
    rng = np.random.default_rng(12)
    noise = [rng.standard_normal((200, 8)) for _ in range(8)]
    vec, lengths = window_vectors(noise, window=20, step=2)
    r_noise = split_half_reproducibility(vec, lengths, 3)
    planted, _, _ = planted_states(n_series=8, n_volumes=200, n_rois=8, random_state=13)
    vec, lengths = window_vectors(planted, window=20, step=2)
    r_planted = split_half_reproducibility(vec, lengths, 3)
    assert r_planted.min() > 0.95
    assert r_noise.mean() < r_planted.mean() - 0.1


def test_halves_keep_a_participants_sessions_together():
    groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    first, second = _halves(10, groups, np.random.default_rng(0))
    assert sorted(np.r_[first, second].tolist()) == list(range(10))
    g = np.array(groups)
    assert not set(g[first]) & set(g[second])
    with pytest.raises(BadInputError, match="groups"):
        _halves(10, groups[:-1], np.random.default_rng(0))


def test_k_range_is_checked(planted):
    with pytest.raises(BadInputError, match="k_range"):
        select_n_states(planted[0], [1, 2])


def test_exemplar_criteria_equal_direct_computations(planted):
    """Default selection: inertia and silhouette are those of k-means of the exemplar windows (the
    first stage of fit_states), and split halves cluster the exemplars of each half's series."""
    series, _, _ = planted
    table = select_n_states(series, [3], window=20, step=2, silhouette_samples=10_000, max_exemplars=None)
    vec, lengths = window_vectors(series, window=20, step=2)
    ex = vec[exemplar_windows(vec, lengths)]
    with threadpool_limits(1, user_api="openmp"):
        reference = KMeans(3, n_init=10, random_state=1).fit(ex)
    assert table.loc[0, "inertia"] <= reference.inertia_ * (1 + 1e-4)
    assert table.loc[0, "silhouette"] == pytest.approx(silhouette_score(ex, reference.labels_), abs=1e-3)
    # Split halves by hand: exemplars of the series of each half, clustered, Hungarian-matched.
    a, b = _halves(len(series), None, np.random.default_rng(0))
    cents = [KMeans(3, n_init=10, random_state=2).fit(
        window_vectors([series[i] for i in half], window=20, step=2)[0][
            exemplar_windows(*window_vectors([series[i] for i in half], window=20, step=2))]
    ).cluster_centers_ for half in (a, b)]
    r = np.diag(centroid_correlation(cents[0], cents[1][match_states(cents[0], cents[1])]))
    assert table.loc[0, "split_half_r"] == pytest.approx(r.mean(), abs=1e-3)


def test_max_exemplars_is_a_seeded_subsample(planted):
    vec, lengths = window_vectors(planted[0], window=20, step=2)
    every = exemplar_windows(vec, lengths)
    some = exemplar_windows(vec, lengths, max_exemplars=50, random_state=3)
    assert len(some) == 50 and np.isin(some, every).all() and (np.diff(some) > 0).all()
    np.testing.assert_array_equal(some, exemplar_windows(vec, lengths, 50, random_state=3))
    assert not np.array_equal(some, exemplar_windows(vec, lengths, 50, random_state=4))
    # A capped selection still finds the planted states.
    table = select_n_states(planted[0], [3, 4], window=20, step=2, max_exemplars=150).set_index("k")
    assert table.loc[3, "split_half_r_min"] > 0.9 > table.loc[4, "split_half_r_min"]
    with pytest.raises(BadInputError, match="max_exemplars"):
        exemplar_windows(vec, lengths, max_exemplars=0)
    with pytest.raises(BadInputError, match="windows"):
        select_n_states(planted[0], [3], window=20, windows="some")


def test_all_windows_selection_still_finds_the_planted_k(planted):
    table = select_n_states(planted[0], [3, 4], window=20, step=4, windows="all").set_index("k")
    assert table.loc[3, "split_half_r_min"] > 0.9 > table.loc[4, "split_half_r_min"]


def test_too_few_exemplars_fall_back_to_all_windows(planted):
    series = [s[:60] for s in planted[0][:2]]
    with pytest.warns(UserWarning, match="exemplar windows"):
        table = select_n_states(series, [2, 8], window=20, step=2)
    expected = select_n_states(series, [2, 8], window=20, step=2, windows="all")
    pd.testing.assert_frame_equal(table, expected)
