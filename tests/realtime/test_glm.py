"""Cumulative GLM: equals an offline least-squares fit; drift regressors equal nilearn's."""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.realtime.glm import IncrementalGLM, drift_regressors


def test_incremental_fit_equals_offline_lstsq_at_every_full_rank_volume():
    rng = np.random.default_rng(0)
    n, n_fixed, n_signals = 120, 4, 3
    design = np.column_stack([rng.normal(size=(n, n_fixed - 1)), np.ones(n)])
    motion = np.cumsum(rng.normal(0, 0.05, size=(n, 6)), axis=0)
    full = np.column_stack([design, motion])
    y = full @ rng.normal(size=(full.shape[1], n_signals)) + rng.normal(size=(n, n_signals)) + 100
    glm = IncrementalGLM(design, n_online=6, n_signals=n_signals)
    for t in range(n):
        coef = glm.update(t, y[t], motion[t])
        if t + 1 in (30, 77, n):
            offline = np.linalg.lstsq(full[: t + 1], y[: t + 1], rcond=None)[0]
            np.testing.assert_allclose(coef, offline, rtol=1e-6, atol=1e-6)
    assert glm.n_obs_ == n
    np.testing.assert_allclose(glm.xtx_, full.T @ full, rtol=1e-12)


def test_rank_deficient_start_gives_the_minimum_norm_solution():
    rng = np.random.default_rng(1)
    design = rng.normal(size=(20, 8))
    y = rng.normal(size=(20, 1))
    glm = IncrementalGLM(design, n_online=0, n_signals=1)
    for t in range(5):  # 5 volumes, 8 regressors
        coef = glm.update(t, y[t])
    np.testing.assert_allclose(coef, np.linalg.pinv(design[:5]) @ y[:5], atol=1e-8)


def test_nuisance_part_and_skipped_volumes():
    rng = np.random.default_rng(2)
    design = np.column_stack([np.linspace(-1, 1, 50), np.ones(50)])
    y = 3 * design[:, 0] + 10 + 0.01 * rng.normal(size=50)
    glm = IncrementalGLM(design, n_online=0, n_signals=1)
    kept = [t for t in range(50) if t % 7]  # a missing volume is simply never entered
    for t in kept:
        glm.update(t, y[t:t + 1])
    offline = np.linalg.lstsq(design[kept], y[kept], rcond=None)[0]
    np.testing.assert_allclose(glm.coef_[:, 0], offline, rtol=1e-8)
    assert np.isclose(glm.nuisance(10, None, np.array([0]))[0], offline[0] * design[10, 0])


def test_drift_regressors_equal_nilearn_design():
    from nilearn.glm.first_level import make_first_level_design_matrix

    frame_times = np.arange(100) * 2.0
    expected = make_first_level_design_matrix(frame_times, drift_model="cosine", high_pass=0.01)
    got = drift_regressors(100, 2.0, "cosine", 0.01)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy())
    assert list(got.columns)[-1] == "constant"
    poly = drift_regressors(100, 2.0, "polynomial", order=3)
    assert poly.shape[1] == 4
    assert list(drift_regressors(100, 2.0, "none").columns) == ["constant"]
    assert isinstance(got, pd.DataFrame)
