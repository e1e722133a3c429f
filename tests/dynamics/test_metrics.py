"""state_metrics against hand computations and an independent loop implementation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from theramark.dynamics.metrics import state_metrics
from theramark.errors import BadInputError

NAN = np.nan


def _row(frame, i, prefix, k):
    return [frame.loc[i, f"{prefix}_{j}"] for j in range(k)]


def test_hand_computed_sequence_two_states():
    # [0 0 | 1 1 1 | 0], 2 s per window.
    # occupancy: 3/6 each; runs of 0: lengths 2 and 1 (the last one cut by the end still counts)
    # → mean 1.5 windows = 3 s; runs of 1: one of 3 windows = 6 s.
    # pairs: 0→0, 0→1, 1→1, 1→1, 1→0 → row 0: 1/2, 1/2; row 1: 1/3, 2/3.
    # switches: 2 over 5 intervals of 2 s = 0.2 per second.
    m = state_metrics([np.array([0, 0, 1, 1, 1, 0])], n_states=2, step_s=2.0)
    assert _row(m, 0, "occupancy", 2) == pytest.approx([0.5, 0.5])
    assert _row(m, 0, "dwell", 2) == pytest.approx([3.0, 6.0])
    assert m.loc[0, "switching_rate"] == pytest.approx(0.2)
    assert m.loc[0, ["transition_0_0", "transition_0_1"]].tolist() == pytest.approx([0.5, 0.5])
    assert m.loc[0, ["transition_1_0", "transition_1_1"]].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert list(m.columns) == [
        "occupancy_0", "occupancy_1", "dwell_0", "dwell_1", "switching_rate",
        "transition_0_0", "transition_0_1", "transition_1_0", "transition_1_1",
    ]


def test_hand_computed_several_series_do_not_leak():
    a = np.array([0, 0, 1, 1, 1, 0])
    b = np.array([2, 2, 2, 2])
    c = np.array([1, 0, 2, 0, 1])
    m = state_metrics([a, b, c], n_states=3, step_s=0.5)
    # a: as above with 0.5 s per window; state 2 never visited.
    assert _row(m, 0, "dwell", 3) == pytest.approx([0.75, 1.5, NAN], nan_ok=True)
    assert m.loc[0, "switching_rate"] == pytest.approx(2 / (5 * 0.5))
    # b: always state 2: one run of 4 windows = 2 s; only row 2 of the transitions is defined.
    assert _row(m, 1, "occupancy", 3) == pytest.approx([0, 0, 1])
    assert _row(m, 1, "dwell", 3) == pytest.approx([NAN, NAN, 2.0], nan_ok=True)
    assert m.loc[1, "transition_2_2"] == 1.0
    assert np.isnan(m.loc[1, ["transition_0_0", "transition_0_1", "transition_1_2"]].astype(float)).all()
    assert m.loc[1, "switching_rate"] == 0.0
    # c: 1 0 2 0 1 → occupancy 2/5, 2/5, 1/5; every run has 1 window = 0.5 s;
    # pairs 1→0, 0→2, 2→0, 0→1: row 0 = [0, .5, .5], row 1 = [1, 0, 0], row 2 = [1, 0, 0];
    # 4 switches over 4 intervals of 0.5 s = 2 per second. The junction a→b→c adds no pair.
    assert _row(m, 2, "occupancy", 3) == pytest.approx([0.4, 0.4, 0.2])
    assert _row(m, 2, "dwell", 3) == pytest.approx([0.5, 0.5, 0.5])
    t = m.loc[2, [f"transition_{i}_{j}" for i in range(3) for j in range(3)]].to_numpy(float).reshape(3, 3)
    np.testing.assert_allclose(t, [[0, 0.5, 0.5], [1, 0, 0], [1, 0, 0]])
    assert m.loc[2, "switching_rate"] == pytest.approx(2.0)


def _loop_metrics(seq, k, step_s):
    """Independent reference: plain Python over one sequence."""
    n = len(seq)
    occ = [sum(1 for s in seq if s == j) / n for j in range(k)]
    runs = {j: [] for j in range(k)}
    current, length = seq[0], 1
    for s in seq[1:]:
        if s == current:
            length += 1
        else:
            runs[current].append(length)
            current, length = s, 1
    runs[current].append(length)
    dwell = [np.mean(runs[j]) * step_s if runs[j] else NAN for j in range(k)]
    counts = np.zeros((k, k))
    for x, y in zip(seq[:-1], seq[1:], strict=True):
        counts[x, y] += 1
    trans = np.full((k, k), NAN)
    for i in range(k):
        if counts[i].sum():
            trans[i] = counts[i] / counts[i].sum()
    switches = sum(1 for x, y in zip(seq[:-1], seq[1:], strict=True) if x != y)
    rate = switches / ((n - 1) * step_s) if n > 1 else NAN
    return occ, dwell, trans, rate


def test_matches_loop_reference_on_random_sequences():
    rng = np.random.default_rng(3)
    k = 4
    seqs = []
    for _ in range(60):
        n = int(rng.integers(1, 60))
        # Sticky chains so that runs are longer than one window.
        s = [int(rng.integers(k))]
        for _ in range(n - 1):
            s.append(s[-1] if rng.random() < 0.7 else int(rng.integers(k)))
        seqs.append(np.array(s))
    m = state_metrics(seqs, k, step_s=1.5)
    for i, seq in enumerate(seqs):
        occ, dwell, trans, rate = _loop_metrics(seq.tolist(), k, 1.5)
        np.testing.assert_allclose(_row(m, i, "occupancy", k), occ)
        np.testing.assert_allclose(_row(m, i, "dwell", k), dwell)
        got = m.loc[i, [f"transition_{a}_{b}" for a in range(k) for b in range(k)]].to_numpy(float)
        np.testing.assert_allclose(got.reshape(k, k), trans)
        np.testing.assert_allclose(m.loc[i, "switching_rate"], rate)


def test_soft_sequences_use_mean_probability_for_occupancy():
    p = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    m = state_metrics([p, np.array([1, 1])], n_states=2, step_s=2.0)
    assert _row(m, 0, "occupancy", 2) == pytest.approx([0.5, 0.5])
    # Dwell and transitions follow the most probable state: 0 0 1.
    assert _row(m, 0, "dwell", 2) == pytest.approx([4.0, 2.0])
    assert m.loc[0, "transition_0_1"] == pytest.approx(0.5)
    # A hard sequence next to a soft one keeps its exact occupancy.
    assert _row(m, 1, "occupancy", 2) == pytest.approx([0.0, 1.0])


def test_bad_input_names_the_sequence():
    with pytest.raises(BadInputError, match=r"labels\[1\]"):
        state_metrics([np.array([0, 1]), np.array([0, 3])], n_states=2, step_s=1.0)
    with pytest.raises(BadInputError, match=r"labels\[0\].*sum to 1"):
        state_metrics([np.array([[0.5, 0.6]])], n_states=2, step_s=1.0)
    with pytest.raises(BadInputError, match="step_s"):
        state_metrics([np.array([0, 1])], n_states=2, step_s=0)


def test_ten_thousand_sequences_are_fast():
    rng = np.random.default_rng(0)
    seqs = list(rng.integers(0, 5, size=(10_000, 371)))
    start = time.perf_counter()
    m = state_metrics(seqs, 5, step_s=2.0)
    elapsed = time.perf_counter() - start
    assert len(m) == 10_000
    np.testing.assert_allclose(m.filter(like="occupancy").sum(axis=1), 1.0)
    # Target < 1 s (benchmarks/bench_dynamics.py); generous here for a loaded CI machine.
    assert elapsed < 5.0
