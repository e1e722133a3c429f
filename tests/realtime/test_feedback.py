"""Feedback values: PSC against the baseline, scaling, smoothing, intermittent, connectivity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.realtime.feedback import FeedbackComputer, scale


def _design(n_blocks: int = 6, length: int = 10):
    labels = np.repeat(["baseline", "regulate"] * (n_blocks // 2), length)
    blocks = np.repeat(np.arange(n_blocks), length)
    return labels, blocks


def _run(computer: FeedbackComputer, level: np.ndarray, cleaned: np.ndarray | None = None) -> pd.DataFrame:
    cleaned = level if cleaned is None else cleaned
    return pd.DataFrame([computer.update(t, level[t], cleaned[t]) for t in range(len(level))])


def test_psc_against_the_last_completed_baseline_block_closed_form():
    labels, blocks = _design()
    rng = np.random.default_rng(0)
    level = (1000 + rng.normal(0, 1, size=(60, 1)))
    out = _run(FeedbackComputer(labels, blocks, skip=2, smoothing=1.0), level)
    y = level[:, 0]
    # volume 25 (regulate block 2): baseline = block 2's volumes 20..29 past the first 2
    expected = 100 * (y[35] - y[22:30].mean()) / y[22:30].mean()
    assert np.isclose(out["psc"][35], expected)
    # during the first baseline block: its volumes so far (all, while fewer than skip are past)
    assert np.isclose(out["psc"][1], 100 * (y[1] - y[:2].mean()) / y[:2].mean())
    assert np.isclose(out["psc"][5], 100 * (y[5] - y[2:6].mean()) / y[2:6].mean())
    # in the second baseline block the first (completed) one is the baseline
    assert np.isclose(out["psc"][23], 100 * (y[23] - y[2:10].mean()) / y[2:10].mean())
    every = _run(FeedbackComputer(labels, blocks, baseline="all", skip=2, smoothing=1.0), level)
    pool = np.r_[y[2:10], y[22:30], y[42:46]]  # every baseline volume so far, past the skipped ones
    assert np.isclose(every["psc"][45], 100 * (y[45] - pool.mean()) / pool.mean())


def test_scaling_and_smoothing():
    assert scale(1.0, 0.0, 2.0) == 0.5 and scale(5.0, 0.0, 2.0) == 1.0 and scale(-1, 0, 2) == 0.0
    assert np.isnan(scale(np.nan, 0, 1))
    labels, blocks = _design()
    level = np.full((60, 1), 1000.0)
    level[20:] = 1010.0  # +1% from volume 20
    out = _run(FeedbackComputer(labels, blocks, low=0.0, high=2.0, smoothing=0.5), level)
    raw = np.clip(out["psc"] / 2.0, 0, 1).to_numpy()
    smoothed = [raw[0]]
    for value in raw[1:]:
        smoothed.append(0.5 * value + 0.5 * smoothed[-1])
    np.testing.assert_allclose(out["feedback"], smoothed)


def test_intermittent_feedback_only_at_the_end_of_regulate_blocks():
    labels, blocks = _design()
    level = np.full((60, 1), 1000.0)
    level[labels == "regulate"] = 1015.0
    out = _run(FeedbackComputer(labels, blocks, protocol="intermittent", low=0, high=2), level)
    shown = np.flatnonzero(out["feedback"].notna())
    assert list(shown) == [19, 39, 59]
    np.testing.assert_allclose(out["feedback"][shown], 0.75)  # 1.5 % on a 0-2 % scale


def test_difference_feedback():
    labels, blocks = _design()
    rng = np.random.default_rng(1)
    level = 1000 + rng.normal(0, 1, size=(60, 2))
    out = _run(FeedbackComputer(labels, blocks, kind="difference", rois=(0, 1), smoothing=1.0), level)
    single = [_run(FeedbackComputer(labels, blocks, rois=(k,), smoothing=1.0), level[:, [0, 1]])
              for k in (0, 1)]
    np.testing.assert_allclose(out["signal"], single[0]["psc"] - single[1]["psc"])


def _coupled(n: int = 200, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=n)
    coupling = np.sin(np.linspace(0, 3 * np.pi, n))  # correlation that changes over the run
    a = shared + 0.5 * rng.normal(size=n)
    b = coupling * shared + 0.5 * rng.normal(size=n)
    return np.column_stack([a, b]) + 500


def test_sliding_window_connectivity_equals_offline_windowed_correlation():
    x = _coupled()
    labels, blocks = np.repeat(["baseline", "regulate"], 100), np.repeat([0, 1], 100)
    out = _run(FeedbackComputer(labels, blocks, kind="connectivity", rois=(0, 1), window=15,
                                low=-1, high=1), x)
    offline = pd.Series(x[:, 0]).rolling(15, min_periods=3).corr(pd.Series(x[:, 1]))
    ok = offline.notna() & out["signal"].notna()
    assert ok.sum() > 190
    assert np.corrcoef(out["signal"][ok], offline[ok])[0, 1] > 0.99
    np.testing.assert_allclose(out["signal"][ok], offline[ok], atol=1e-8)


def test_exponential_connectivity_equals_pandas_ewm():
    x = _coupled(seed=3)
    labels, blocks = np.repeat(["baseline", "regulate"], 100), np.repeat([0, 1], 100)
    out = _run(FeedbackComputer(labels, blocks, kind="connectivity", rois=(0, 1), window=20,
                                connectivity="exponential", low=-1, high=1), x)
    frame = pd.DataFrame(x)
    offline = frame[0].ewm(span=20, adjust=False).corr(frame[1])
    ok = offline.notna() & out["signal"].notna() & (np.arange(200) > 5)
    assert np.corrcoef(out["signal"][ok], offline[ok])[0, 1] > 0.99


def test_bad_settings():
    labels, blocks = _design()
    with pytest.raises(BadInputError, match="needs 2 ROI"):
        FeedbackComputer(labels, blocks, kind="connectivity", rois=(0,))
    with pytest.raises(BadInputError, match="must exceed"):
        FeedbackComputer(labels, blocks, low=1, high=1)
    with pytest.raises(BadInputError, match="expected one of"):
        FeedbackComputer(labels, blocks, kind="power")
