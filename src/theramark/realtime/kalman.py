"""Spike removal and low-pass filtering of ROI signals by a Kalman filter, one volume at a time.

The model is OpenNFT's (Koush et al. 2012): each signal is a random walk observed with noise,
``x_t = x_{t-1} + w`` (variance Q) and ``y_t = x_t + v`` (variance R), with Q and R set from the
running standard deviation ``s`` of the signal so far (``Q = s^2``, ``R = 1.95 s^2``). A
correction ``K (y_t - x_t|t-1)`` larger than ``threshold * s`` is taken as a spike and clipped to
that size, unless the previous ``max_consecutive`` volumes were spikes of the same sign (the
signal then has really moved: the measurement is accepted and the filter follows it).

References
----------
Koush Y, Zvyagintsev M, Dyck M, Mathiak KA, Mathiak K (2012). Signal quality and Bayesian signal
processing in neurofeedback based on real-time fMRI. NeuroImage 59:478-489.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SpikeKalman"]


class SpikeKalman:
    """A Kalman filter with spike clipping for several signals at once.

    Parameters
    ----------
    n_signals : int
        Number of signals filtered together (one per ROI); each has its own state.
    threshold : float
        Spike threshold of the correction, in running SDs (Koush et al. 2012: 0.9).
    q_scale, r_scale : float
        Process and measurement variances as multiples of the running variance (1 and 1.95).
    max_consecutive : int
        Consecutive same-sign spikes clipped before the filter accepts the new level.

    Attributes
    ----------
    x_ : ndarray, shape (n_signals,)
        Current estimates.
    p_ : ndarray, shape (n_signals,)
        Their variances.
    n_spikes_ : ndarray of int, shape (n_signals,)
        Spikes clipped so far.

    Examples
    --------
    >>> kf = SpikeKalman(1)
    >>> out = [kf.update(np.array([v]))[0] for v in [0.0, 1.0, -1.0, 0.5, -0.5, 20.0, 0.2]]
    >>> out[5] < 3 and int(kf.n_spikes_[0])
    1
    """

    def __init__(self, n_signals: int, threshold: float = 0.9, q_scale: float = 1.0,
                 r_scale: float = 1.95, max_consecutive: int = 2):
        self.threshold = float(threshold)
        self.q_scale = float(q_scale)
        self.r_scale = float(r_scale)
        self.max_consecutive = int(max_consecutive)
        n = int(n_signals)
        self.x_ = np.full(n, np.nan)
        self.p_ = np.zeros(n)
        self.n_spikes_ = np.zeros(n, dtype=int)
        self._run = np.zeros(n, dtype=int)  # signed count of consecutive spikes
        # Welford running moments of the input
        self._count = np.zeros(n)
        self._mean = np.zeros(n)
        self._m2 = np.zeros(n)

    def update(self, value: np.ndarray) -> np.ndarray:
        """Filter one volume's values; NaN inputs leave their signal's state unchanged.

        Parameters
        ----------
        value : ndarray, shape (n_signals,)

        Returns
        -------
        ndarray, shape (n_signals,)
            Filtered values (NaN where the input is NaN).
        """
        y = np.asarray(value, dtype=np.float64)
        ok = np.isfinite(y)
        out = np.full(y.shape, np.nan)
        # running SD of the input, the input included (OpenNFT's std over 1..t)
        self._count[ok] += 1
        delta = np.where(ok, y - self._mean, 0.0)
        self._mean[ok] += delta[ok] / self._count[ok]
        self._m2[ok] += delta[ok] * (y[ok] - self._mean[ok])
        sd = np.sqrt(np.divide(self._m2, self._count - 1, out=np.zeros_like(self._m2),
                               where=self._count > 1))
        first = ok & ~np.isfinite(self.x_)
        self.x_[first] = y[first]
        out[first] = y[first]
        go = ok & ~first
        if not go.any():
            return out
        p = self.p_[go] + self.q_scale * sd[go] ** 2
        r = self.r_scale * sd[go] ** 2
        gain = np.divide(p, p + r, out=np.ones_like(p), where=(p + r) > 0)
        correction = gain * (y[go] - self.x_[go])
        limit = self.threshold * sd[go]
        spike = np.abs(correction) > limit
        sign = np.sign(correction)
        run = self._run[go]
        continuing = spike & (np.sign(run) == sign)
        run = np.where(spike, np.where(continuing, run + sign.astype(int), sign.astype(int)), 0)
        clip = spike & (np.abs(run) <= self.max_consecutive)
        correction = np.where(clip, sign * limit, correction)
        run = np.where(spike & ~clip, 0, run)
        self._run[go] = run
        self.n_spikes_[go] += clip
        self.x_[go] = self.x_[go] + correction
        self.p_[go] = (1.0 - gain) * p
        out[go] = self.x_[go]
        return out
