"""Static and dynamic FC against nilearn, np.corrcoef and hand-computed cases, on real time series."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import io, stats

from tests.conftest import shared_path
from theramark.errors import BadInputError
from theramark.imaging.connectivity import (
    dfc_variability,
    edges_to_matrix,
    fc_edges,
    fc_matrix,
    r_to_z,
    seed_to_voxel,
    sliding_window_fc,
    window_length_volumes,
    window_weights,
)

HCP_SUBJECTS = ("101309", "102311")


def _hcp(subject: str = "101309") -> np.ndarray:
    path = shared_path(
        f"data/hcp_aal2_roi_timeseries/hcp/subjects/{subject}/functional/TC_rsfMRI_REST1_LR.mat"
    )
    return io.loadmat(path)["tc"].T.astype(np.float64)  # (1200, 94)


def _nitime() -> pd.DataFrame:
    table = pd.read_csv(shared_path("data/nitime_fmri/fmri_timeseries.csv"))
    return table.iloc[:, 3:]  # the ROI columns (the first three are WM, ventricles, brain)


def _nilearn_fc(ts: np.ndarray, kind: str) -> np.ndarray:
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    measure = ConnectivityMeasure(kind=kind, cov_estimator=EmpiricalCovariance())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return measure.fit_transform([ts])[0]


def _windows_reference(ts: np.ndarray, window: int, step: int = 1) -> np.ndarray:
    starts = range(0, ts.shape[0] - window + 1, step)
    return np.stack([np.corrcoef(ts[s : s + window].T) for s in starts])


# ------------------------------------------------------------------------------------------ static


@pytest.mark.parametrize("kind", ["correlation", "partial correlation"])
def test_fc_matrix_equals_nilearn_on_hcp(kind):
    ts = _hcp()
    reference = _nilearn_fc(ts, kind)
    r = fc_matrix(ts, kind=kind, fisher_z=False)
    np.testing.assert_allclose(r, reference, atol=1e-6)
    z = fc_matrix(ts, kind=kind)
    off = ~np.eye(ts.shape[1], dtype=bool)
    np.testing.assert_allclose(z[off], np.arctanh(reference[off]), atol=1e-6)
    assert np.all(np.diag(z) == 0) and np.all(np.diag(r) == 1)
    np.testing.assert_allclose(z, z.T, atol=1e-12)


@pytest.mark.parametrize("kind", ["correlation", "partial correlation"])
def test_fc_matrix_equals_nilearn_on_nitime(kind):
    ts = _nitime().to_numpy(dtype=float)
    np.testing.assert_allclose(
        fc_matrix(ts, kind=kind, fisher_z=False), _nilearn_fc(ts, kind), atol=1e-6
    )


def test_fc_matrix_stack_equals_one_by_one():
    stack = np.stack([_hcp(s)[:600] for s in HCP_SUBJECTS])
    batch = fc_matrix(stack)
    for i in range(len(HCP_SUBJECTS)):
        np.testing.assert_allclose(batch[i], fc_matrix(stack[i]), atol=1e-12)


def test_fc_matrix_offset_and_scale_invariant():
    ts = _nitime().to_numpy(dtype=float)
    np.testing.assert_allclose(fc_matrix(ts * 3.0 + 1e4), fc_matrix(ts), atol=1e-8)


def test_fc_matrix_bad_input():
    rng = np.random.default_rng(0)
    ts = rng.standard_normal((50, 4))
    ts[:, 2] = 7.0
    with pytest.raises(BadInputError, match=r"\[2\].*zero variance"):
        fc_matrix(ts)
    with pytest.raises(BadInputError, match="more volumes than ROIs"):
        fc_matrix(rng.standard_normal((10, 20)), kind="partial correlation")
    with pytest.raises(BadInputError, match="kind"):
        fc_matrix(rng.standard_normal((10, 3)), kind="covariance")
    bad = rng.standard_normal((10, 3))
    bad[4, 1] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        fc_matrix(bad)


def test_fc_matrix_recovers_planted_coupling_and_null():
    rng = np.random.default_rng(1)
    n, n_rois = 300, 12
    ts = rng.standard_normal((n, n_rois))
    ts[:, 1] = 0.6 * ts[:, 0] + 0.8 * rng.standard_normal(n)  # planted r = 0.6
    z = fc_matrix(ts)
    assert abs(np.tanh(z[0, 1]) - 0.6) < 0.1
    # Null edges: z * sqrt(n - 3) ~ N(0, 1); at most a few above 1.96 among 55 null pairs.
    iu = np.triu_indices(n_rois, 1)
    null = np.array([z[i, j] for i, j in zip(*iu, strict=True) if {i, j} != {0, 1}])
    assert np.mean(np.abs(null) * np.sqrt(n - 3) > 1.96) < 0.15


def test_seed_to_voxel_equals_tutorial_approach():
    ts = _hcp()
    seeds, voxels = ts[:, [3, 40]], ts
    z_seed = stats.zscore(seeds, ddof=1)
    z_vox = stats.zscore(voxels, ddof=1)
    reference = (z_vox.T @ z_seed / (ts.shape[0] - 1)).T
    np.testing.assert_allclose(seed_to_voxel(seeds, voxels, fisher_z=False), reference, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        z = seed_to_voxel(seeds[:, 0], voxels, block_size=17)
    others = np.arange(94) != 3  # the seed itself has r = 1 up to rounding: z is huge or inf
    np.testing.assert_allclose(z[0, others], np.arctanh(reference[0, others]), atol=1e-6)
    assert z.shape == (1, 94) and z[0, 3] > 15


def test_seed_to_voxel_flags_constant_voxels():
    rng = np.random.default_rng(2)
    vox = rng.standard_normal((40, 5))
    vox[:, 3] = 1.0
    with pytest.warns(RuntimeWarning, match="1 voxel"):
        z = seed_to_voxel(rng.standard_normal(40), vox)
    assert np.isnan(z[0, 3]) and np.isfinite(np.delete(z[0], 3)).all()


def test_fc_edges_names_and_inverse():
    m = np.array([[0.0, 0.1, 0.2], [0.1, 0.0, 0.3], [0.2, 0.3, 0.0]])
    edges = fc_edges(m, ["vmpfc", "amygdala_L", "dacc"])
    assert list(edges.index) == ["amygdala_L__vmpfc", "dacc__vmpfc", "amygdala_L__dacc"]
    np.testing.assert_allclose(edges.to_numpy(), [0.1, 0.2, 0.3])
    back = edges_to_matrix(edges, names=["vmpfc", "amygdala_L", "dacc"])
    np.testing.assert_allclose(back.to_numpy(), m)
    assert list(edges_to_matrix(edges).index) == ["amygdala_L", "dacc", "vmpfc"]
    with pytest.raises(BadInputError, match="unique"):
        fc_edges(m, ["a", "a", "b"])
    with pytest.raises(BadInputError, match="__"):
        fc_edges(m, ["a__x", "b", "c"])
    with pytest.raises(BadInputError, match="3 names"):
        fc_edges(np.zeros((4, 4)), ["a", "b", "c"])


# ----------------------------------------------------------------------------------------- dynamic


def test_sliding_window_two_rois_by_hand():
    ts = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0], [4.0, 4.0]])
    # window 1: x-mean = (-1, 0, 1), y-mean = (-1, 1, 0): r = 1 / (sqrt 2 sqrt 2) = 0.5
    # window 2: x-mean = (-1, 0, 1), y-mean = (0, -1, 1): r = 0.5
    w = sliding_window_fc(ts, window=3)
    assert w.shape == (2, 2, 2)
    np.testing.assert_allclose(w[:, 0, 1], [0.5, 0.5], atol=1e-15)
    np.testing.assert_allclose(w[:, 0, 0], [1.0, 1.0])


@pytest.mark.parametrize(("window", "step"), [(30, 1), (44, 7)])
def test_sliding_window_equals_corrcoef_loop_on_hcp(window, step):
    ts = _hcp()
    w = sliding_window_fc(ts, window, step=step)
    reference = _windows_reference(ts, window, step)
    assert w.shape == ((1200 - window) // step + 1, 94, 94)
    np.testing.assert_allclose(w, reference, atol=1e-8, rtol=0)


def test_sliding_window_stable_with_large_offset_and_float32_output():
    ts = _hcp()[:300, :20] * 5.0 + 1e6
    w = sliding_window_fc(ts, 25, step=3, dtype=np.float32)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, _windows_reference(ts, 25, 3), atol=1e-6)
    w64 = sliding_window_fc(ts, 25, step=3, max_chunk_bytes=1)  # one window per chunk
    np.testing.assert_allclose(w64, _windows_reference(ts, 25, 3), atol=1e-8, rtol=0)


def test_gaussian_taper_is_weighted_pearson():
    ts = _nitime().to_numpy(dtype=float)[:, :8]
    window, sigma = 22, 3.0
    weights = window_weights(window, "gaussian", sigma)
    assert np.allclose(weights, weights[::-1]) and weights.argmax() in (10, 11)
    # The weights are a rectangle convolved with a Gaussian, restricted to the window.
    gauss = np.exp(-(np.arange(-60, 61) ** 2) / (2 * sigma**2))
    conv = np.convolve(np.r_[np.zeros(60), np.ones(window), np.zeros(60)], gauss, mode="same")
    np.testing.assert_allclose(weights, conv[60 : 60 + window] / conv.max(), atol=1e-12)
    w = sliding_window_fc(ts, window, step=5, taper="gaussian", sigma=sigma)
    for k, start in enumerate(range(0, ts.shape[0] - window + 1, 5)):
        cov = np.cov(ts[start : start + window].T, aweights=weights)
        d = np.sqrt(np.diag(cov))
        np.testing.assert_allclose(w[k], cov / np.outer(d, d), atol=1e-10)


def test_sliding_window_with_censoring():
    ts = _nitime().to_numpy(dtype=float)[:, :6]
    keep = np.ones(ts.shape[0], dtype=bool)
    keep[[10, 11, 12, 50]] = False
    keep[100:118] = False  # a long censored stretch: windows inside it are invalid
    window = 20
    with pytest.warns(RuntimeWarning, match="fewer than 10 kept"):
        w, info = sliding_window_fc(ts, window, step=2, keep=keep, return_info=True)
    for k, row in info.iterrows():
        rows = np.arange(row.start, row.stop)
        kept_rows = rows[keep[rows]]
        assert row.n_kept == kept_rows.size
        if kept_rows.size >= 10:
            assert row.valid
            np.testing.assert_allclose(w[k], np.corrcoef(ts[kept_rows].T), atol=1e-10)
        else:
            assert not row.valid and np.isnan(w[k]).all()
    assert (~info.valid).sum() > 0
    # indices and boolean masks agree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w_idx = sliding_window_fc(ts, window, step=2, keep=np.flatnonzero(keep))
    np.testing.assert_array_equal(np.isnan(w_idx), np.isnan(w))
    np.testing.assert_allclose(w_idx[~np.isnan(w_idx)], w[~np.isnan(w)])


def test_sliding_window_threads_give_the_same_windows():
    """Windows shared among threads equal the one-thread result bit for bit, censored or not."""
    from threadpoolctl import threadpool_limits

    from theramark._blas import blas_threads

    rng = np.random.default_rng(11)
    ts = rng.standard_normal((400, 60)).cumsum(axis=0) * 0.1 + rng.standard_normal((400, 60))
    keep = rng.random(400) > 0.1
    for kwargs in ({}, {"keep": keep, "taper": "gaussian"}, {"step": 3}):
        one = sliding_window_fc(ts, 40, n_threads=1, **kwargs)
        for n_threads in (2, 3):
            np.testing.assert_array_equal(
                sliding_window_fc(ts, 40, n_threads=n_threads, max_chunk_bytes=2**18, **kwargs), one)
    np.testing.assert_allclose(one, _windows_reference(ts, 40, 3), atol=1e-12, rtol=0)
    # a process limited to one BLAS thread (a joblib worker) keeps dynamic FC on one thread too
    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads() == 1
    with pytest.raises(BadInputError, match="n_threads"):
        sliding_window_fc(ts, 40, n_threads=0)


def _windows_in_child(ts, expected, queue):
    queue.put(bool(np.array_equal(sliding_window_fc(ts, 30, n_threads=2), expected)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sliding_window_threads_work_in_a_forked_child():
    """A child forked after the thread pool started must not wait on its parent's threads."""
    import multiprocessing

    ts = np.random.default_rng(12).standard_normal((300, 40))
    expected = sliding_window_fc(ts, 30, n_threads=2)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_windows_in_child, args=(ts, expected, queue))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.terminate()
        pytest.fail("sliding_window_fc hung in a forked child")
    assert child.exitcode == 0 and queue.get(timeout=5)


def test_sliding_window_bad_input():
    ts = np.random.default_rng(3).standard_normal((50, 3))
    with pytest.raises(BadInputError, match="window=60"):
        sliding_window_fc(ts, 60)
    with pytest.raises(BadInputError, match="step"):
        sliding_window_fc(ts, 10, step=0)
    with pytest.raises(BadInputError, match="taper"):
        sliding_window_fc(ts, 10, taper="hamming")
    with pytest.raises(BadInputError, match="keep"):
        sliding_window_fc(ts, 10, keep=np.ones(49, dtype=bool))


def test_window_length_volumes():
    assert window_length_volumes(44, 2.0) == 22
    assert window_length_volumes(60, 0.72) == 83
    assert window_length_volumes(45, 2.0) == 23  # 22.5 rounds up
    with pytest.raises(BadInputError, match="at least 3"):
        window_length_volumes(3, 2.0)
    with pytest.raises(BadInputError, match="positive"):
        window_length_volumes(30, 0)


def test_dfc_variability_matches_reference_and_detects_planted_dynamics():
    ts = _hcp()[:400, :10]
    windows = sliding_window_fc(ts, 30, step=2)
    expected = _windows_reference(ts, 30, 2)
    idx = np.arange(10)
    expected[:, idx, idx] = 0
    expected = np.arctanh(expected)
    np.testing.assert_allclose(dfc_variability(windows), expected.std(axis=0, ddof=1), atol=1e-8)
    np.testing.assert_allclose(
        dfc_variability(windows, fisher_z=False), windows.std(axis=0, ddof=1) * (1 - np.eye(10)),
        atol=1e-12,
    )
    # Planted: pair (0, 1) switches between r ≈ +0.8 and r ≈ -0.8 every 60 volumes; pair (2, 3)
    # keeps r ≈ 0.5. The switching pair must be far more variable.
    rng = np.random.default_rng(4)
    n = 600
    base = rng.standard_normal((n, 4))
    sign = np.where((np.arange(n) // 60) % 2 == 0, 1.0, -1.0)
    base[:, 1] = sign * 0.8 * base[:, 0] + 0.6 * base[:, 1]
    base[:, 3] = 0.5 * base[:, 2] + np.sqrt(0.75) * base[:, 3]
    v = dfc_variability(sliding_window_fc(base, 30, step=5))
    assert v[0, 1] > 3 * v[2, 3]
    with pytest.raises(BadInputError, match="valid window"):
        dfc_variability(np.full((3, 2, 2), np.nan))


def test_r_to_z_clips():
    np.testing.assert_allclose(r_to_z(np.array([0.5, -0.5])), np.arctanh([0.5, -0.5]))
    assert np.isinf(r_to_z(np.array([1.0 + 1e-16]))[0])
