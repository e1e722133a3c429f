"""Kalman spike removal: planted spikes are removed, a clean signal passes nearly unchanged."""

from __future__ import annotations

import numpy as np

from theramark.realtime.kalman import SpikeKalman


def _filter(signals: np.ndarray, **kwargs) -> tuple[np.ndarray, SpikeKalman]:
    kf = SpikeKalman(signals.shape[1], **kwargs)
    return np.array([kf.update(row) for row in signals]), kf


def _slow_signal(n: int = 200, n_signals: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    clean = 100 + 2.0 * np.sin(2 * np.pi * t / 40 + np.arange(n_signals))  # blocks of 20 volumes
    return clean + 0.2 * rng.normal(size=(n, n_signals))


def test_planted_spikes_are_removed():
    clean = _slow_signal()
    spiky = clean.copy()
    spikes = np.array([30, 75, 120, 160])
    spiky[spikes, 0] += 12.0   # 6 SDs of the signal
    spiky[spikes, 1] -= 12.0
    out, kf = _filter(spiky)
    reference, _ = _filter(clean)
    # at the spikes the output stays near the clean signal's filtered value
    err_spiky = np.abs(out[spikes, :2] - reference[spikes, :2])
    assert err_spiky.max() < 0.25 * 12.0
    assert np.all(kf.n_spikes_[:2] >= len(spikes))
    # without the filter the spike would be there in full
    assert np.abs(spiky[spikes, :2] - clean[spikes, :2]).min() == 12.0
    # the untouched signal is unaffected by the others' spikes
    np.testing.assert_allclose(out[:, 2], reference[:, 2])


def test_clean_signal_passes_nearly_unchanged():
    clean = _slow_signal(seed=3)
    out, kf = _filter(clean)
    truth = 100 + 2.0 * np.sin(2 * np.pi * np.arange(200)[:, None] / 40 + np.arange(3))
    for j in range(3):
        assert np.corrcoef(out[20:, j], truth[20:, j])[0, 1] > 0.97
        assert np.abs(out[20:, j] - truth[20:, j]).mean() < 0.5   # a quarter of the amplitude
    assert kf.n_spikes_.sum() < 0.05 * clean.size


def test_step_change_is_followed_after_a_few_volumes():
    rng = np.random.default_rng(4)
    x = np.r_[np.full(50, 100.0), np.full(50, 110.0)] + 0.3 * rng.normal(size=100)
    out, _ = _filter(x[:, None], max_consecutive=2)
    assert abs(out[-1, 0] - 110) < 1.0


def test_nan_leaves_the_state_unchanged():
    kf = SpikeKalman(2)
    kf.update(np.array([1.0, 2.0]))
    kf.update(np.array([1.5, 2.5]))
    before = kf.x_.copy()
    out = kf.update(np.array([np.nan, 3.0]))
    assert np.isnan(out[0]) and kf.x_[0] == before[0] and np.isfinite(out[1])
