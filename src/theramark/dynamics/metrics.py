"""Per-series metrics of state sequences: occupancy, dwell time, transitions, switching rate.

All series are handled at once: the sequences are concatenated and every count is one
``np.bincount`` over (series, state) or (series, from-state, to-state) codes, so 10,000 sequences
take a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

__all__ = ["state_metrics"]


def _hard_and_soft(
    labels: Sequence[np.ndarray], n_states: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Concatenated hard labels, lengths, and concatenated probabilities (or None if all hard)."""
    hard, lengths, soft = [], [], []
    any_soft = False
    problems = []
    for i, lab in enumerate(labels):
        a = np.asarray(lab)
        if a.ndim == 2:
            if a.shape[1] != n_states:
                problems.append(f"labels[{i}]: probabilities with {a.shape[1]} columns; expected {n_states}")
                continue
            if not np.isfinite(a).all() or (a < 0).any() or not np.allclose(a.sum(axis=1), 1.0, atol=1e-6):
                problems.append(f"labels[{i}]: probability rows must be ≥ 0 and sum to 1")
                continue
            any_soft = True
            soft.append(a.astype(np.float64))
            hard.append(a.argmax(axis=1))
        elif a.ndim == 1:
            if a.size == 0:
                problems.append(f"labels[{i}]: empty sequence")
                continue
            if a.dtype.kind not in "iu":
                problems.append(f"labels[{i}]: dtype {a.dtype}; expected integer states in 0..{n_states - 1}")
                continue
            hard.append(a)
            soft.append(None)
        else:
            problems.append(f"labels[{i}]: shape {a.shape}; expected (n_windows,) or (n_windows, n_states)")
            continue
        if len(hard[-1]) == 0:
            problems.append(f"labels[{i}]: empty sequence")
        lengths.append(len(hard[-1]))
    concatenated = np.concatenate(hard).astype(np.int64, copy=False) if hard else np.zeros(0, dtype=np.int64)
    if not problems and concatenated.size and (concatenated.min() < 0 or concatenated.max() >= n_states):
        # Checked once on the concatenation; the offending series are named only on failure.
        problems = [
            f"labels[{i}]: states outside 0..{n_states - 1} (e.g. {h[(h < 0) | (h >= n_states)][0]})"
            for i, h in enumerate(hard) if h.size and (h.min() < 0 or h.max() >= n_states)
        ]
    if problems:
        raise BadInputError("state_metrics: invalid label sequences", problems)
    probabilities = None
    if any_soft:
        probabilities = np.concatenate(
            [s if s is not None else np.eye(n_states)[h] for s, h in zip(soft, hard, strict=True)]
        )
    return concatenated, np.asarray(lengths, dtype=np.int64), probabilities


def state_metrics(
    labels: Sequence[np.ndarray], n_states: int, step_s: float
) -> pd.DataFrame:
    """Fractional occupancy, mean dwell time, transition probabilities and switching rate.

    Parameters
    ----------
    labels : list of ndarray
        One sequence per series: integer states ``(n_windows,)`` in ``0..n_states − 1`` (e.g.
        ``StateFit.labels``), or state probabilities ``(n_windows, n_states)`` with rows summing to 1
        (a soft sequence, e.g. HMM posteriors).
    n_states : int
        Number of states (states never visited still get columns).
    step_s : float
        Time between consecutive labels in seconds (window step × TR; TR for LEiDA).

    Returns
    -------
    DataFrame, one row per series (index = position in ``labels``), columns:

    ``occupancy_<k>``
        Fraction of windows in state k (for a soft sequence: the mean probability of k).
    ``dwell_<k>``
        Mean length in seconds of the runs of consecutive windows in state k (run length ×
        ``step_s``); NaN when k is never visited.
    ``switching_rate``
        State changes per second: ``n_switches / ((n_windows − 1) · step_s)``; NaN for a
        single-window series.
    ``transition_<i>_<j>``
        P(state j at the next window | state i now): counts of consecutive pairs ``i → j``,
        self-transitions included, divided by the row total; the row is NaN when i is never
        followed by another window.

    Notes
    -----
    Runs cut by the start or end of a series count as observed runs of their observed length
    (no censoring correction), so dwell times near the edges are shortened rather than dropped.
    Dwell, transitions and switches of a soft sequence use its most probable state per window.
    Transitions are counted within a series only, never across the junction of two series.

    Examples
    --------
    >>> import numpy as np
    >>> m = state_metrics([np.array([0, 0, 1, 1, 1, 0])], n_states=2, step_s=2.0)
    >>> m[["occupancy_0", "dwell_0", "dwell_1", "switching_rate"]].round(3).values.tolist()
    [[0.5, 3.0, 6.0, 0.2]]
    """
    k = int(n_states)
    if k < 1:
        raise BadInputError(f"n_states={n_states}: expected ≥ 1")
    if not np.isfinite(step_s) or step_s <= 0:
        raise BadInputError(f"step_s={step_s}: expected a positive time in seconds")
    lab, lengths, probabilities = _hard_and_soft(labels, k)
    n_series = lengths.size
    series_id = np.repeat(np.arange(n_series), lengths)
    n = lengths.astype(np.float64)

    if probabilities is None:
        occupancy = np.bincount(series_id * k + lab, minlength=n_series * k).reshape(n_series, k) / n[:, None]
    else:
        occupancy = np.zeros((n_series, k))
        np.add.at(occupancy, series_id, probabilities)
        occupancy /= n[:, None]

    # Runs: a run starts where the series starts or the state changes.
    same_series = series_id[1:] == series_id[:-1]
    change = lab[1:] != lab[:-1]
    starts = np.flatnonzero(np.r_[True, change | ~same_series])
    run_len = np.diff(np.r_[starts, lab.size])
    run_code = series_id[starts] * k + lab[starts]
    n_runs = np.bincount(run_code, minlength=n_series * k).reshape(n_series, k)
    total_len = np.bincount(run_code, weights=run_len, minlength=n_series * k).reshape(n_series, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        dwell = np.where(n_runs > 0, total_len / n_runs, np.nan) * step_s

    # Pairs that straddle two series go to one extra bin, dropped (cheaper than selecting pairs).
    junk = n_series * k * k
    pair_code = np.where(same_series, series_id[:-1] * (k * k) + lab[:-1] * k + lab[1:], junk)
    counts = np.bincount(pair_code, minlength=junk + 1)[:junk].reshape(n_series, k, k).astype(np.float64)
    row_total = counts.sum(axis=2, keepdims=True)
    diagonal = np.einsum("sii->s", counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        transitions = np.where(row_total > 0, counts / row_total, np.nan)
        n_switches = (lengths - 1) - diagonal
        switching = np.where(n > 1, n_switches / ((n - 1) * step_s), np.nan)

    columns = {f"occupancy_{i}": occupancy[:, i] for i in range(k)}
    columns.update({f"dwell_{i}": dwell[:, i] for i in range(k)})
    columns["switching_rate"] = switching
    columns.update({f"transition_{i}_{j}": transitions[:, i, j] for i in range(k) for j in range(k)})
    return pd.DataFrame(columns)
