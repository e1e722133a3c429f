"""One ordinary least-squares engine for every linear model theramark fits.

Mediation, moderation, breakpoints, brain–symptom links, the change-score closed form of the group ×
time model and the permutation engine all fit ``Y = X B + E`` by ordinary least squares. They call
this module instead of each solving the problem its own way.

- :func:`ols` fits many outcomes at once (``Y`` of shape (n, k) sharing one design ``X`` of shape
  (n, p)) through a thin QR decomposition ``X = QR``; the singular values of the small ``R`` give
  the numerical rank with the tolerance of :func:`numpy.linalg.matrix_rank`, so no normal equations
  (whose condition number is the square of the design's) are ever formed. A rank-deficient design
  either raises :class:`~theramark.errors.AnalysisError` or, on request, gets the minimum-norm
  solution of :func:`numpy.linalg.lstsq` (``pinv`` semantics, residual dof ``n - rank``).
- :class:`Projection` is the orthogonal projector onto a design's column space, from a thin SVD
  truncated to the numerical rank. It is computed once and reused: to residualize many columns
  against the same covariates, and by the permutation engine, whose per-permutation products need
  the orthonormal basis and singular values of the model.
- :func:`solve_normal_equations` solves a batch of small normal equations (one per bootstrap
  resample, built from weighted cross-products), with NaN for singular systems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy import linalg

from theramark.errors import AnalysisError, BadInputError

__all__ = ["Contrast", "LeastSquaresFit", "Projection", "ols", "rank_tolerance",
           "solve_normal_equations"]

RankPolicy = Literal["raise", "minimum_norm"]
_RANK_POLICIES = ("raise", "minimum_norm")
#: Batched normal equations whose condition number reaches this are treated as singular.
SINGULAR_CONDITION = 1e12


def rank_tolerance(singular_values: np.ndarray, shape: tuple[int, int],
                   rtol: float | None = None) -> float:
    """Singular values at or below this count as zero.

    Parameters
    ----------
    singular_values : ndarray
        Singular values of a matrix.
    shape : (int, int)
        The matrix's shape.
    rtol : float, optional
        Relative tolerance; default ``max(shape) * eps``, the convention of
        :func:`numpy.linalg.matrix_rank`.

    Returns
    -------
    float
        ``rtol * max(singular_values)`` (0 for an empty matrix).
    """
    largest = float(singular_values.max(initial=0.0))
    if rtol is None:
        rtol = max(shape) * np.finfo(np.float64).eps
    return rtol * largest


class Contrast(NamedTuple):
    """Estimate, standard error and t statistic of linear combinations ``L B`` of coefficients.

    Shapes are (k,) for a contrast vector and (q, k) for a matrix of q rows (k outcomes).
    """

    estimate: np.ndarray
    se: np.ndarray
    t: np.ndarray
    df: int


@dataclass(frozen=True)
class LeastSquaresFit:
    """OLS fit of k outcomes on one design.

    Attributes
    ----------
    coef : ndarray (p, k)
        Coefficients, one column per outcome.
    se : ndarray (p, k)
        Classical standard errors ``sqrt(sigma² diag((X'X)^-1))``.
    resid : ndarray (n, k)
        Residuals.
    df_resid : int
        ``n - rank``.
    sigma2 : ndarray (k,)
        Residual variance ``RSS / df_resid`` of each outcome (NaN without residual dof).
    rank : int
        Numerical rank of the design.
    cov_unscaled : ndarray (p, p)
        ``(X'X)^-1`` (its pseudo-inverse for a rank-deficient design): the covariance of the
        coefficients of outcome j is ``sigma2[j] * cov_unscaled`` (statsmodels'
        ``normalized_cov_params``).
    """

    coef: np.ndarray
    se: np.ndarray
    resid: np.ndarray
    df_resid: int
    sigma2: np.ndarray
    rank: int
    cov_unscaled: np.ndarray

    @property
    def rss(self) -> np.ndarray:
        """Residual sum of squares of each outcome, shape (k,)."""
        return np.einsum("nk,nk->k", self.resid, self.resid)

    def cov(self, outcome: int = 0) -> np.ndarray:
        """Covariance matrix (p, p) of the coefficients of one outcome."""
        return self.sigma2[outcome] * self.cov_unscaled

    def contrast(self, weights: np.ndarray) -> Contrast:
        """t statistics of ``weights @ coef`` for every outcome.

        Parameters
        ----------
        weights : ndarray (p,) or (q, p)
            A contrast vector, or one contrast per row.

        Returns
        -------
        Contrast
            ``estimate``, ``se`` and ``t`` of shape (k,) for a vector, (q, k) for a matrix; ``df``
            is the residual dof.
        """
        weights = np.asarray(weights, dtype=np.float64)
        matrix = np.atleast_2d(weights)
        if matrix.ndim != 2 or matrix.shape[1] != self.coef.shape[0]:
            raise BadInputError(f"contrast has shape {weights.shape}; expected "
                                f"({self.coef.shape[0]},) or (q, {self.coef.shape[0]})")
        estimate = matrix @ self.coef
        variance = np.einsum("qp,pr,qr->q", matrix, self.cov_unscaled, matrix)
        se = np.sqrt(variance[:, None] * self.sigma2[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = estimate / se
        if weights.ndim == 1:
            return Contrast(estimate[0], se[0], t[0], self.df_resid)
        return Contrast(estimate, se, t, self.df_resid)


def ols(
    design: np.ndarray,
    values: np.ndarray,
    *,
    rank_deficient: RankPolicy = "raise",
    rtol: float | None = None,
    what: str = "least squares",
) -> LeastSquaresFit:
    """Ordinary least squares of every column of ``values`` on ``design``.

    Parameters
    ----------
    design : ndarray (n, p)
        The design matrix ``X`` (with its intercept column, if any).
    values : ndarray (n,) or (n, k)
        One outcome, or k outcomes fitted at once.
    rank_deficient : {"raise", "minimum_norm"}
        What a design of rank below p gets: :class:`~theramark.errors.AnalysisError`, or the
        minimum-norm least-squares solution (as :func:`numpy.linalg.lstsq` and the
        pseudo-inverse), whose unscaled covariance is the pseudo-inverse of ``X'X``.
    rtol : float, optional
        Relative tolerance on the singular values for the rank (default that of
        :func:`numpy.linalg.matrix_rank`).
    what : str
        Name of the model, for the error message.

    Returns
    -------
    LeastSquaresFit
        Arrays are two-dimensional even for one outcome (``coef`` is (p, 1)).

    Raises
    ------
    AnalysisError
        The design is rank deficient and ``rank_deficient="raise"``.

    Notes
    -----
    With ``X = QR`` (thin QR) and the SVD ``R = U S V'``, the coefficients of a full-rank design are
    ``R^-1 Q'Y`` (a triangular solve) and ``(X'X)^-1 = R^-1 R^-T``; for a rank-deficient one they
    are ``V_r S_r^-1 U_r' Q'Y`` and ``V_r S_r^-2 V_r'``, keeping the r singular values above the
    tolerance. Either way the cost is one QR of X and one product ``Q'Y``.

    Examples
    --------
    >>> import numpy as np
    >>> from theramark.stats import ols
    >>> rng = np.random.default_rng(0)
    >>> x = np.column_stack([np.ones(50), rng.normal(size=50)])
    >>> y = x @ np.array([[1.0, 0.0], [2.0, -1.0]]) + rng.normal(scale=0.1, size=(50, 2))
    >>> fit = ols(x, y)
    >>> fit.coef.shape, fit.df_resid
    ((2, 2), 48)
    >>> bool(np.all(np.abs(fit.coef - [[1, 0], [2, -1]]) < 0.1))
    True
    """
    if rank_deficient not in _RANK_POLICIES:
        raise BadInputError(f"rank_deficient must be one of {_RANK_POLICIES}, got {rank_deficient!r}")
    x = np.asarray(design, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise BadInputError(f"{what}: design of shape {x.shape} and outcomes of shape "
                            f"{np.shape(values)} do not have the same rows")
    n, p = x.shape
    q, r = np.linalg.qr(x)
    u_r, s, vt = np.linalg.svd(r, full_matrices=False)
    keep = s > rank_tolerance(s, (n, p), rtol)
    rank = int(keep.sum())
    qty = q.T @ y
    if rank == p:
        coef = linalg.solve_triangular(r, qty, check_finite=False)
        r_inv = linalg.solve_triangular(r, np.eye(p), check_finite=False)
        cov_unscaled = r_inv @ r_inv.T
    elif rank_deficient == "raise":
        raise AnalysisError(
            f"{what}: the design is rank deficient (rank {rank} for {p} columns): some "
            "coefficients are not estimable (collinear or empty columns)"
        )
    else:
        v = vt[keep].T / s[keep]
        coef = v @ (u_r[:, keep].T @ qty)
        cov_unscaled = v @ v.T
    resid = y - x @ coef
    df_resid = n - rank
    rss = np.einsum("nk,nk->k", resid, resid)
    sigma2 = rss / df_resid if df_resid > 0 else np.full(rss.shape, np.nan)
    se = np.sqrt(np.clip(np.diag(cov_unscaled), 0.0, None)[:, None] * sigma2[None, :])
    return LeastSquaresFit(coef=coef, se=se, resid=resid, df_resid=df_resid, sigma2=sigma2,
                           rank=rank, cov_unscaled=cov_unscaled)


class Projection:
    """Orthogonal projector onto the column space of a design, computed once and reused.

    Parameters
    ----------
    design : ndarray (n, p)
        May have no column (then nothing is projected out) or be rank deficient.
    rtol : float, optional
        Singular values at or below ``rtol`` times the largest are dropped; default the tolerance
        of :func:`numpy.linalg.matrix_rank`.

    Attributes
    ----------
    basis : ndarray (n, r)
        Orthonormal basis of the column space (left singular vectors), r the numerical rank.
    singular_values : ndarray (r,)
    right : ndarray (r, p)
        Right singular vectors: ``design ≈ basis @ diag(singular_values) @ right``.
    rank : int
    """

    def __init__(self, design: np.ndarray, rtol: float | None = None) -> None:
        matrix = np.asarray(design, dtype=np.float64)
        if matrix.shape[1] == 0:
            self.basis = np.zeros((matrix.shape[0], 0))
            self.singular_values = np.zeros(0)
            self.right = np.zeros((0, 0))
        else:
            u, s, vt = np.linalg.svd(matrix, full_matrices=False)
            keep = s > rank_tolerance(s, matrix.shape, rtol)
            self.basis, self.singular_values, self.right = u[:, keep], s[keep], vt[keep]
        self.rank = self.basis.shape[1]

    def coordinates(self, values: np.ndarray) -> np.ndarray:
        """``basis' values``: coordinates of the projection, shape (r, ...)."""
        return self.basis.T @ values

    def fitted(self, values: np.ndarray) -> np.ndarray:
        """The projection of ``values`` (n, ...) onto the column space."""
        return self.basis @ (self.basis.T @ values)

    def residualize(self, values: np.ndarray) -> np.ndarray:
        """``values`` minus their projection: the OLS residuals on the design."""
        return values - self.basis @ (self.basis.T @ values)


def solve_normal_equations(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a batch of normal equations ``gram[b] @ beta[b] = rhs[b]``.

    Parameters
    ----------
    gram : ndarray (B, p, p)
        ``X'WX`` of each system (e.g. one per bootstrap resample, W its counts).
    rhs : ndarray (B, p)
        ``X'Wy`` of each system.

    Returns
    -------
    ndarray (B, p)
        Solutions; systems that are singular (condition number of at least
        :data:`SINGULAR_CONDITION`, e.g. a resample in which a dummy is constant) get NaN rows.
    """
    try:
        return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        cond = np.linalg.cond(gram)
        ok = np.isfinite(cond) & (cond < SINGULAR_CONDITION)
        out = np.full(rhs.shape, np.nan)
        out[ok] = np.linalg.solve(gram[ok], rhs[ok][:, :, None])[:, :, 0]
        return out
