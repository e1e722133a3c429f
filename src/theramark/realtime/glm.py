"""Cumulative GLM of ROI signals, updated one volume at a time.

At volume t the model is fitted on volumes 1..t, as OpenNFT's and MURFI's cumulative GLMs are.
The rows of the design known before the run (task regressors from the protocol convolved with the
HRF, drift, constant) are computed once; the motion regressors (the six realignment parameters)
are appended as each volume arrives. ``X'X`` and ``X'Y`` are updated by the new row (O(p^2) per
volume for p regressors) and the p x p normal equations solved (p is about 15): no refit from
scratch. Before the design has full rank the minimum-norm solution is used (OpenNFT's ``pinv``);
once it has, the estimate equals an offline least-squares fit of the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["IncrementalGLM", "drift_regressors"]


def drift_regressors(n_volumes: int, tr: float, model: str = "cosine", high_pass: float = 0.008,
                     order: int = 2) -> pd.DataFrame:
    """Drift regressors and the constant, as nilearn's first-level design builds them.

    Parameters
    ----------
    n_volumes : int
    tr : float
        Repetition time (s); frame times are ``0, tr, 2 tr, ...``.
    model : {"cosine", "polynomial", "none"}
        Discrete cosine basis up to ``high_pass`` (Hz), Legendre-like polynomials up to ``order``,
        or only the constant.

    Returns
    -------
    DataFrame, shape (n_volumes, n_drift + 1)
        ``drift_*`` columns then ``constant``.
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    frame_times = np.arange(n_volumes) * float(tr)
    drift = None if model == "none" else model
    design = make_first_level_design_matrix(frame_times, events=None, drift_model=drift,
                                            high_pass=high_pass, drift_order=order)
    return design.reset_index(drop=True)


class IncrementalGLM:
    """Least squares of several signals on a design that grows by one row per volume.

    Parameters
    ----------
    design : ndarray, shape (n_volumes, p_fixed)
        Regressors known in advance (task, drift, constant), one row per volume of the run.
    n_online : int
        Regressors given with each volume (6 for the motion parameters; 0 for none).
    n_signals : int
        Signals fitted together (one per ROI).

    Attributes
    ----------
    xtx_ : ndarray, shape (p, p)
    xty_ : ndarray, shape (p, n_signals)
    n_obs_ : int
        Volumes entered so far.
    coef_ : ndarray, shape (p, n_signals)
        Estimates after the last update (columns: the fixed regressors, then the online ones).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([rng.normal(size=30), np.ones(30)])
    >>> y = X @ [2.0, 5.0] + 0.1 * rng.normal(size=30)
    >>> glm = IncrementalGLM(X, n_online=0, n_signals=1)
    >>> for t in range(30):
    ...     _ = glm.update(t, y[t:t + 1])
    >>> bool(np.allclose(glm.coef_[:, 0], np.linalg.lstsq(X, y, rcond=None)[0]))
    True
    """

    def __init__(self, design: np.ndarray, n_online: int = 6, n_signals: int = 1):
        self.design = np.asarray(design, dtype=np.float64)
        self.n_online = int(n_online)
        p = self.design.shape[1] + self.n_online
        self.xtx_ = np.zeros((p, p))
        self.xty_ = np.zeros((p, int(n_signals)))
        self.n_obs_ = 0
        self.coef_ = np.zeros((p, int(n_signals)))

    def row(self, t: int, online: np.ndarray | None = None) -> np.ndarray:
        """The design row of volume ``t`` (0-based) with its online regressors."""
        extra = np.zeros(self.n_online) if online is None else np.asarray(online, float)[: self.n_online]
        return np.concatenate([self.design[t], extra])

    def update(self, t: int, y: np.ndarray, online: np.ndarray | None = None) -> np.ndarray:
        """Add volume ``t`` (0-based row of the design) and refit.

        Parameters
        ----------
        t : int
        y : ndarray, shape (n_signals,)
            The signals at volume t. Signals with a NaN here are not updated (their column keeps
            its sums; it is refitted with the others).
        online : ndarray, shape (n_online,), optional

        Returns
        -------
        ndarray, shape (p, n_signals)
            The coefficients fitted on every volume entered so far.
        """
        x = self.row(t, online)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(y)
        self.xtx_ += np.outer(x, x)
        self.xty_[:, ok] += np.outer(x, y[ok])
        self.n_obs_ += 1
        # lstsq on the normal equations: the minimum-norm (pinv) solution while rank-deficient
        self.coef_ = np.linalg.lstsq(self.xtx_, self.xty_, rcond=None)[0]
        return self.coef_

    def nuisance(self, t: int, online: np.ndarray | None, columns: np.ndarray) -> np.ndarray:
        """Fitted contribution of the regressors ``columns`` (indices) at volume ``t``, per signal."""
        x = self.row(t, online)
        return x[columns] @ self.coef_[columns]
