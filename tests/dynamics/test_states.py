"""Dynamic-FC states: feature extraction against direct numpy, recovery of planted states, matching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import hilbert
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from theramark.dynamics.metrics import state_metrics
from theramark.dynamics.states import (
    centroid_correlation,
    exemplar_windows,
    fit_states,
    leading_eigenvectors,
    match_states,
    window_vectors,
)
from theramark.errors import BadInputError


def planted_states(n_series=8, n_volumes=600, n_rois=10, n_states=3, random_state=1):
    """Series switching between states that each have their own covariance.

    Blocks of 40–80 volumes; consecutive blocks differ in state. Returns the series, the true state
    of every volume and the states' correlation matrices.
    """
    rng = np.random.default_rng(random_state)
    corr = []
    for k in range(n_states):
        load = np.zeros((n_rois, 2))
        community = np.roll(np.arange(n_rois), 3 * k)[:5]
        load[community, 0] = 0.9
        load[np.setdiff1d(np.arange(n_rois), community)[:4], 1] = 0.8 * (-1) ** k
        cov = load @ load.T + 0.3 * np.eye(n_rois)
        sd = np.sqrt(np.diag(cov))
        corr.append(cov / np.outer(sd, sd))
    chol = [np.linalg.cholesky(c) for c in corr]
    series, truth = [], []
    for _ in range(n_series):
        states, prev = [], -1
        while len(states) < n_volumes:
            k = int(rng.choice([j for j in range(n_states) if j != prev]))
            states += [k] * int(rng.integers(40, 81))
            prev = k
        states = np.array(states[:n_volumes])
        z = rng.standard_normal((n_volumes, n_rois))
        x = np.einsum("tij,tj->ti", np.stack(chol)[states], z)
        series.append(x)
        truth.append(states)
    return series, truth, np.stack(corr)


def window_truth(truth, window, step=1):
    """True state at each window's centre, and whether the window lies inside one block."""
    centre, pure = [], []
    for t in truth:
        starts = np.arange(0, len(t) - window + 1, step)
        centre.append(t[starts + window // 2])
        idx = starts[:, None] + np.arange(window)[None, :]
        pure.append((t[idx] == t[idx[:, :1]]).all(axis=1))
    return centre, pure


@pytest.fixture(scope="module")
def planted():
    return planted_states()


# --------------------------------------------------------------------------------------------
# Features against direct computations
# --------------------------------------------------------------------------------------------
def test_window_vectors_equal_corrcoef_per_window():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((50, 6)), rng.standard_normal((41, 6))]
    vec, lengths = window_vectors(xs, window=12, step=3, dtype=np.float64)
    assert lengths.tolist() == [(50 - 12) // 3 + 1, (41 - 12) // 3 + 1]
    iu = np.triu_indices(6, 1)
    expected = [np.arctanh(np.corrcoef(x[s : s + 12].T)[iu]) for x in xs for s in range(0, len(x) - 11, 3)]
    np.testing.assert_allclose(vec, np.array(expected), atol=1e-10)


def test_exemplars_are_local_maxima_of_fc_variance():
    rng = np.random.default_rng(1)
    vec = rng.standard_normal((30, 5))
    lengths = np.array([12, 18])
    got = exemplar_windows(vec, lengths)
    var = vec.var(axis=1)
    expected = []
    for first, n in ((0, 12), (12, 18)):
        v = var[first : first + n]
        expected += [first + t for t in range(1, n - 1) if v[t] > v[t - 1] and v[t] >= v[t + 1]]
    assert got.tolist() == expected


def test_leading_eigenvectors_equal_eigh_of_phase_coherence():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((120, 8)).cumsum(axis=0) + rng.standard_normal((120, 8))
    got = leading_eigenvectors(x, t_r=2.0, band=(0.01, 0.1))
    # Independent route: band-pass as documented, then the full coherence matrix and eigh.
    from scipy import signal

    z = (x - x.mean(0)) / x.std(0)
    sos = signal.butter(2, [0.01, 0.1], btype="band", fs=0.5, output="sos")
    theta = np.angle(hilbert(signal.sosfiltfilt(sos, z, axis=0), axis=0))
    for t in (0, 5, 37, 60, 119):
        coherence = np.cos(theta[t][:, None] - theta[t][None, :])
        w, v = np.linalg.eigh(coherence)
        lead = v[:, -1]
        assert abs(lead @ got[t]) > 0.999
        # LEiDA sign convention: most elements negative.
        assert (got[t] < 0).sum() >= (got[t] > 0).sum()
        np.testing.assert_allclose(np.linalg.norm(got[t]), 1.0)


def test_leading_eigenvectors_reject_constant_roi_and_bad_band():
    x = np.random.default_rng(0).standard_normal((50, 4))
    x[:, 2] = 1.0
    with pytest.raises(BadInputError, match=r"\[2\]"):
        leading_eigenvectors(x)
    with pytest.raises(BadInputError, match="Nyquist"):
        leading_eigenvectors(np.random.default_rng(0).standard_normal((50, 4)), t_r=2.0, band=(0.01, 0.5))


# --------------------------------------------------------------------------------------------
# Recovery of planted states
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["euclidean", "cityblock"])
def test_kmeans_recovers_planted_states(planted, distance):
    series, truth, corr = planted
    window = 20
    fit = fit_states(series, 3, window=window, distance=distance, random_state=0)
    assert [len(lab) for lab in fit.labels] == [600 - window + 1] * len(series)
    assert fit.centroids.shape == (3, 10, 10)
    centre, pure = window_truth(truth, window)
    centre, pure, labels = np.concatenate(centre), np.concatenate(pure), np.concatenate(fit.labels)
    # Windows straddling a switch mix two states; ARI is computed on windows inside one block.
    assert adjusted_rand_score(centre[pure], labels[pure]) >= 0.9
    # Centroids (Fisher z) matched to the planted correlation matrices.
    fit = fit.match_to(corr)
    r = np.diag(centroid_correlation(corr, fit.centroids))
    assert (r > 0.95).all(), r
    # Occupancy over all windows (state at the window centre as truth).
    got = state_metrics(fit.labels, 3, 2.0).filter(like="occupancy").mean().to_numpy()
    expected = np.bincount(centre, minlength=3) / centre.size
    assert np.abs(got - expected).max() < 0.02


def test_exemplar_start_is_as_good_as_sklearn_kmeans(planted):
    series, _, _ = planted
    vec, _ = window_vectors(series, window=20)
    fit = fit_states(series, 4, window=20)
    with threadpool_limits(1, user_api="openmp"):  # OpenMP threads are slow on a busy machine
        reference = KMeans(4, n_init=10, random_state=0).fit(vec)
    assert fit.inertia <= reference.inertia_ * 1.01
    # The returned inertia is the within-cluster sum of squares of the returned partition.
    labels = np.concatenate(fit.labels)
    wss = sum(((vec[labels == j] - fit.centroid_vectors[j]) ** 2).sum() for j in range(4))
    assert fit.inertia == pytest.approx(wss, rel=1e-4)


def test_cityblock_result_is_a_k_medians_fixed_point(planted):
    series, _, _ = planted
    vec, _ = window_vectors(series[:3], window=20)
    fit = fit_states(series[:3], 3, window=20, distance="cityblock")
    labels = np.concatenate(fit.labels)
    l1 = np.abs(vec[:, None, :] - fit.centroid_vectors[None].astype(np.float32)).sum(axis=2)
    np.testing.assert_array_equal(labels, l1.argmin(axis=1))
    for j in range(3):
        np.testing.assert_allclose(fit.centroid_vectors[j], np.median(vec[labels == j], axis=0), atol=1e-6)


def test_leida_recovers_planted_phase_locking_modes():
    rng = np.random.default_rng(0)
    n_rois, n_states = 10, 3
    modes = np.ones((n_states, n_rois))
    for k in range(n_states):
        modes[k, 3 * k : 3 * k + 3] = -1
    series, truth = [], []
    for _ in range(6):
        states, prev = [], -1
        while len(states) < 400:
            k = int(rng.choice([j for j in range(n_states) if j != prev]))
            states += [k] * int(rng.integers(40, 81))
            prev = k
        states = np.array(states[:400])
        oscillation = np.sin(2 * np.pi * 0.08 * np.arange(400))
        series.append(oscillation[:, None] * modes[states] + 0.3 * rng.standard_normal((400, n_rois)))
        truth.append(states)
    fit = fit_states(series, n_states, method="leida")
    assert [len(lab) for lab in fit.labels] == [400] * 6
    assert fit.centroids.shape == (3, 10, 10) and fit.centroid_vectors.shape == (3, 10)
    truth, labels = np.concatenate(truth), np.concatenate(fit.labels)
    # Volumes within 5 of a switch are left out (the Hilbert phase spreads over a few volumes).
    near = np.convolve(np.r_[0, np.diff(truth) != 0].astype(float), np.ones(11), mode="same") > 0
    assert adjusted_rand_score(truth[~near], labels[~near]) >= 0.9
    planted_matrices = np.einsum("ki,kj->kij", modes, modes)
    r = np.diag(centroid_correlation(planted_matrices, fit.match_to(planted_matrices).centroids))
    assert (r > 0.95).all()


# --------------------------------------------------------------------------------------------
# Matching across fits
# --------------------------------------------------------------------------------------------
def test_match_states_recovers_a_permutation():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((5, 6, 6))
    ref = ref + ref.transpose(0, 2, 1)
    perm = np.array([3, 0, 4, 1, 2])
    noisy = ref[perm] + 0.1 * rng.standard_normal(ref.shape)
    order = match_states(ref, noisy)
    np.testing.assert_array_equal(perm[order], np.arange(5))
    # More states than the reference: the matched ones come first.
    extra = np.concatenate([noisy, rng.standard_normal((2, 6, 6))])
    order = match_states(ref, extra)
    assert order[:5].tolist() == match_states(ref, noisy).tolist() and sorted(order[5:]) == [5, 6]


def test_relabel_keeps_the_partition_and_reference_option(planted):
    series, _, corr = planted
    fit = fit_states(series[:4], 3, window=20)
    perm = np.array([2, 0, 1])
    moved = fit.relabel(perm)
    for old, new in zip(fit.labels, moved.labels, strict=True):
        np.testing.assert_array_equal(perm[new], old)
    np.testing.assert_array_equal(moved.centroids, fit.centroids[perm])
    # A second session fitted with reference= gets the labels of the first.
    other = fit_states(series[4:], 3, window=20, random_state=5, reference=fit.centroids)
    r = np.diag(centroid_correlation(fit.centroids, other.centroids))
    assert (r > 0.95).all()
    with pytest.raises(BadInputError, match="permutation"):
        fit.relabel([0, 0, 1])


def test_bad_input_is_named():
    rng = np.random.default_rng(0)
    with pytest.raises(BadInputError, match=r"series\[1\]: 4 ROIs"):
        fit_states([rng.standard_normal((50, 5)), rng.standard_normal((50, 4))], 2, window=10)
    with pytest.raises(BadInputError, match="list"):
        fit_states(rng.standard_normal((50, 5)), 2)
    with pytest.raises(BadInputError, match="method"):
        fit_states([rng.standard_normal((50, 5))], 2, method="hmmm")
    with pytest.raises(BadInputError, match="window"):
        fit_states([rng.standard_normal((20, 5))], 2, window=30)
    with pytest.raises(BadInputError, match="distance"):
        fit_states([rng.standard_normal((50, 5))], 2, window=10, distance="cosine")
