"""The feedback value of each volume: percent signal change or connectivity, scaled and smoothed.

Percent signal change (PSC) of a signal at volume t is ``100 (s_t - b) / b`` with ``b`` the mean
of the signal over the baseline. The first ``skip`` volumes of each baseline block are left out
(the previous regulate block's response is still decaying), except while nothing else is
available. By default (``baseline="last_block"``) ``b`` is the mean of the most recent *completed*
baseline block, which follows slow drifts the GLM has not removed; during the first baseline block
it is that block's volumes so far. ``baseline="all"`` uses every baseline volume so far. Before
the first baseline volume the PSC is NaN.

The feedback signal is one ROI's PSC (``"roi"``), the difference of two ROIs' PSC
(``"difference"``: roi_a - roi_b) or the Pearson correlation of two ROIs' nuisance-regressed
signals (``"connectivity"``) over a sliding window of the last ``window`` volumes or with
exponential weights of span ``window`` (weights ``alpha (1 - alpha)^k``, ``alpha = 2 / (span + 1)``,
as pandas ``ewm(span, adjust=False)``). It is mapped linearly from ``[low, high]`` to [0, 1]
(clipped) and smoothed exponentially (``smoothing``: weight of the newest value). In the
intermittent protocol the value is given once, at the last volume of each regulate block: the
block's mean signal, scaled (no smoothing); other volumes get NaN.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from theramark.errors import BadInputError
from theramark.realtime.protocol import BASELINE, REGULATE

__all__ = ["FEEDBACK_KINDS", "FeedbackComputer", "scale"]

FEEDBACK_KINDS = ("roi", "difference", "connectivity")


def scale(value: float, low: float, high: float) -> float:
    """``value`` mapped linearly from [low, high] to [0, 1] and clipped; NaN stays NaN."""
    if not np.isfinite(value):
        return float("nan")
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


class FeedbackComputer:
    """Feedback of a run, one volume at a time.

    Parameters
    ----------
    labels : sequence of str, length n_volumes
        Trial type of each volume (``Protocol.labels``).
    blocks : sequence of int, length n_volumes
        Block index of each volume (``Protocol.block_index``).
    kind : {"roi", "difference", "connectivity"}
    rois : sequence of int
        Indices of the signals used: one (``roi``) or two (a, b).
    baseline : {"last_block", "all"}
    skip : int
        Volumes at the start of each baseline block left out of the baseline.
    low, high : float
        Signal values mapped to feedback 0 and 1.
    smoothing : float
        Weight in (0, 1] of the newest value in the exponential smoothing (1: none).
    connectivity : {"sliding", "exponential"}
    window : int
        Volumes of the connectivity window (or span of the exponential weights).
    protocol : {"continuous", "intermittent"}
    """

    def __init__(self, labels: Sequence[str], blocks: Sequence[int], kind: str = "roi",
                 rois: Sequence[int] = (0,), baseline: str = "last_block", skip: int = 0, low: float = 0.0,
                 high: float = 2.0, smoothing: float = 0.5, connectivity: str = "sliding",
                 window: int = 20, protocol: str = "continuous"):
        if kind not in FEEDBACK_KINDS:
            raise BadInputError(f"feedback {kind!r}: expected one of {', '.join(FEEDBACK_KINDS)}")
        need = 1 if kind == "roi" else 2
        if len(rois) < need:
            raise BadInputError(f"feedback {kind!r} needs {need} ROI(s), got {len(rois)}")
        if not high > low:
            raise BadInputError(f"feedback range: feedback_max ({high}) must exceed feedback_min ({low})")
        if not 0 < smoothing <= 1:
            raise BadInputError(f"smoothing = {smoothing}: expected a weight in (0, 1]")
        if window < 3:
            raise BadInputError(f"connectivity window of {window} volume(s): expected at least 3")
        self.labels = np.asarray(labels, dtype=object)
        self.blocks = np.asarray(blocks, dtype=int)
        self.kind, self.rois = kind, [int(r) for r in rois[:need]]
        self.baseline, self.skip, self.low, self.high = baseline, int(skip), float(low), float(high)
        self.smoothing, self.connectivity, self.window = float(smoothing), connectivity, int(window)
        self.protocol = protocol
        n = max(self.rois) + 1
        self._n = n
        # per baseline block: [sum, count] of the volumes past ``skip``, and of all its volumes
        self._late: dict[int, list] = {}
        self._early: dict[int, list] = {}
        self._position: dict[int, int] = {}
        self._pairs: deque = deque(maxlen=self.window)
        self._ew: np.ndarray | None = None  # EW means of a, b, aa, bb, ab
        self._smoothed = float("nan")
        self._block_signal: list[float] = []

    @staticmethod
    def _mean(sums: list) -> np.ndarray:
        return sums[0] / sums[1]

    def _baseline_mean(self, block: int) -> np.ndarray:
        late = {b: v for b, v in self._late.items() if v[1] > 0}
        if self.baseline == "all":
            pool = late or self._early
            if not pool:
                return np.full(self._n, np.nan)
            return sum(v[0] for v in pool.values()) / sum(v[1] for v in pool.values())
        completed = [b for b in late if b != block]
        if completed:
            return self._mean(late[max(completed)])
        if block in late:
            return self._mean(late[block])
        if self._early:
            return self._mean(self._early[max(self._early)])
        return np.full(self._n, np.nan)

    def _correlation(self, a: float, b: float) -> float:
        if not (np.isfinite(a) and np.isfinite(b)):
            return float("nan")
        if self.connectivity == "sliding":
            self._pairs.append((a, b))
            if len(self._pairs) < 3:
                return float("nan")
            x = np.asarray(self._pairs)
            x = x - x.mean(axis=0)
            denominator = np.sqrt((x[:, 0] ** 2).sum() * (x[:, 1] ** 2).sum())
            return float((x[:, 0] * x[:, 1]).sum() / denominator) if denominator > 0 else float("nan")
        moments = np.array([a, b, a * a, b * b, a * b])
        alpha = 2.0 / (self.window + 1.0)
        self._ew = moments if self._ew is None else (1 - alpha) * self._ew + alpha * moments
        ma, mb, maa, mbb, mab = self._ew
        var_a, var_b = maa - ma * ma, mbb - mb * mb
        if var_a <= 0 or var_b <= 0:
            return float("nan")
        return float((mab - ma * mb) / np.sqrt(var_a * var_b))

    def update(self, t: int, level: np.ndarray, cleaned: np.ndarray) -> dict[str, float]:
        """The feedback of volume ``t`` (0-based).

        Parameters
        ----------
        t : int
        level : ndarray, shape (n_signals,)
            Signals whose PSC is taken (the Kalman-filtered, nuisance-regressed ROI means); NaN
            for a missing volume.
        cleaned : ndarray, shape (n_signals,)
            Nuisance-regressed signals (for connectivity).

        Returns
        -------
        dict
            ``psc`` (PSC of the feedback ROI, or of roi_a), ``signal`` (the PSC, the PSC difference
            or the correlation), ``feedback`` (scaled, smoothed; NaN when nothing is shown).
        """
        level = np.asarray(level, dtype=np.float64)[: self._n]
        label, block = self.labels[t], int(self.blocks[t])
        ok = bool(np.all(np.isfinite(level[self.rois])))
        if ok and label == BASELINE:
            position = self._position.get(block, 0)
            self._position[block] = position + 1
            for store, use in ((self._early, True), (self._late, position >= self.skip)):
                if use:
                    sums = store.setdefault(block, [np.zeros(self._n), 0])
                    sums[0] = sums[0] + level
                    sums[1] += 1
        base = self._baseline_mean(block)
        psc = 100.0 * (level - base) / base if ok else np.full(len(level), np.nan)
        if self.kind == "roi":
            signal = float(psc[self.rois[0]])
        elif self.kind == "difference":
            signal = float(psc[self.rois[0]] - psc[self.rois[1]])
        else:
            c = np.asarray(cleaned, dtype=np.float64)
            signal = self._correlation(float(c[self.rois[0]]), float(c[self.rois[1]]))
        if self.protocol == "intermittent":
            feedback = float("nan")
            if label == REGULATE and np.isfinite(signal):
                self._block_signal.append(signal)
            last = t + 1 >= len(self.blocks) or int(self.blocks[t + 1]) != block
            if label == REGULATE and last:
                feedback = scale(float(np.mean(self._block_signal)), self.low, self.high) \
                    if self._block_signal else float("nan")
                self._block_signal = []
        else:
            value = scale(signal, self.low, self.high)
            if np.isfinite(value):
                self._smoothed = value if not np.isfinite(self._smoothed) else \
                    self.smoothing * value + (1.0 - self.smoothing) * self._smoothed
                feedback = self._smoothed
            else:
                feedback = float("nan")
        return {"psc": float(psc[self.rois[0]]), "signal": signal, "feedback": feedback}
