"""Gaussian graphical models of symptoms and psychosocial items: EBICglasso and centrality.

The estimator follows qgraph's ``EBICglasso`` (qgraph 1.9, Epskamp & Fried 2018) step by step, so
that results agree with the R code researchers cite:

1. the correlation matrix ``S`` of the items (Pearson, Spearman, or polychoric for ordinal items);
2. ``λ_max = max |S_ij|`` (i ≠ j) and ``n_lambda`` values log-spaced from ``λ_max`` down to
   ``lambda_min_ratio · λ_max``;
3. the graphical lasso (Friedman, Hastie & Tibshirani 2008) at every λ, the diagonal unpenalized
   (R glasso's ``penalize.diagonal = FALSE``), each fit warm-started from the previous, larger λ as
   R's ``glassopath`` does;
4. ``EBIC = -2 L + E log n + 4 E γ log p`` with ``L = n/2 (log det K - tr(K S))`` and ``E`` the
   number of non-zero off-diagonal entries of the precision matrix ``K`` (Foygel & Drton 2010; qgraph's
   ``countDiagonal = FALSE``), and the λ of smallest EBIC is kept;
5. partial correlations ``-K_ij / sqrt(K_ii K_jj)``, diagonal zero.

The glasso is a block coordinate descent written for a *batch* of correlation matrices at once
(shape ``(B, p, p)``): the bootstrap, case-dropping and permutation procedures of
:mod:`theramark.psychosocial.network_stability` and :mod:`theramark.psychosocial.network_compare`
fit hundreds of networks in one vectorized pass instead of a Python loop over resamples.

Centrality follows qgraph's ``centrality_auto`` for weighted undirected networks (strength, closeness
and betweenness on distances ``1/|w|``) plus expected influence (Robinaugh et al. 2016) and the bridge
centralities of networktools' ``bridge`` (Jones et al. 2021).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError

__all__ = [
    "CORRELATIONS",
    "centrality",
    "correlation_matrix",
    "ebicglasso",
    "ebicglasso_from_correlation",
    "graphical_lasso",
    "prepare_items",
]

CORRELATIONS = ("pearson", "spearman", "polychoric")

# R glasso's default convergence threshold is 1e-4 (mean absolute change of the covariance estimate
# relative to the mean absolute off-diagonal correlation). A single network is fitted 100x tighter so
# that its distance from the exact optimum is well below R's own; resampling procedures use R's value.
_TOL_SINGLE = 1e-6
_TOL_RESAMPLE = 1e-4
_MAX_SWEEPS = 1000


# --------------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------------
def prepare_items(data: pd.DataFrame | np.ndarray, *, min_rows: int | None = None,
                  what: str = "data") -> pd.DataFrame:
    """Validate an items table and apply listwise deletion.

    Parameters
    ----------
    data : DataFrame or ndarray, shape (n_rows, n_nodes)
        One column per node (item or scale score), one row per participant. An array gets the column
        names ``V1 … Vp``.
    min_rows : int, optional
        Fewest complete rows accepted; defaults to ``n_nodes + 1`` (fewer rows make the correlation
        matrix singular).
    what : str
        How the table is named in error messages.

    Returns
    -------
    DataFrame
        The complete rows as float64.

    Raises
    ------
    BadInputError
        Fewer than 2 columns, non-numeric or constant columns, duplicated names, too few complete rows.

    Warns
    -----
    UserWarning
        When rows with missing values are dropped (listwise deletion, as in the R reference analyses).
    """
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise BadInputError(f"{what}: expected a 2-D table (rows × nodes), got shape {data.shape}")
        data = pd.DataFrame(data, columns=[f"V{i + 1}" for i in range(data.shape[1])])
    if not isinstance(data, pd.DataFrame):
        raise BadInputError(f"{what}: expected a pandas DataFrame or 2-D array, got {type(data).__name__}")
    if data.shape[1] < 2:
        raise BadInputError(f"{what}: a network needs at least 2 columns (nodes), got {data.shape[1]}")
    if data.columns.duplicated().any():
        dupes = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
        raise BadInputError(f"{what}: column names must be unique", [f"column {c!r} repeated" for c in dupes])
    problems = [
        f"column {str(c)!r} has dtype {data[c].dtype}; expected numeric item responses"
        for c in data.columns
        if not (pd.api.types.is_numeric_dtype(data[c]) and not pd.api.types.is_bool_dtype(data[c]))
    ]
    if problems:
        raise BadInputError(f"{what}: non-numeric columns", problems)
    values = data.astype(float)
    infinite = [str(c) for c in values.columns if np.isinf(values[c]).any()]
    if infinite:
        raise BadInputError(f"{what}: infinite values", [f"column {c!r}" for c in infinite])
    complete = values.dropna(axis=0, how="any")
    dropped = len(values) - len(complete)
    if dropped:
        warnings.warn(
            f"{what}: {dropped} of {len(values)} rows have missing values and were dropped "
            "(listwise deletion)", UserWarning, stacklevel=3,
        )
    n_nodes = complete.shape[1]
    needed = n_nodes + 1 if min_rows is None else int(min_rows)
    if len(complete) < needed:
        missing = values.isna().sum()
        raise BadInputError(
            f"{what}: {len(complete)} complete rows; at least {needed} are needed for {n_nodes} nodes",
            [f"column {str(c)!r}: {int(k)} missing of {len(values)}" for c, k in missing.items() if k],
        )
    constant = [str(c) for c in complete.columns if complete[c].nunique() < 2]
    if constant:
        raise BadInputError(f"{what}: constant columns (zero variance) cannot be nodes",
                            [f"column {c!r}" for c in constant])
    return complete


def _pearson(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean(axis=0)
    cov = centred.T @ centred
    scale = np.sqrt(np.diag(cov))
    corr = cov / np.outer(scale, scale)
    np.fill_diagonal(corr, 1.0)
    return corr


def correlation_matrix(data: pd.DataFrame | np.ndarray, corr: str = "pearson") -> pd.DataFrame:
    """Correlation matrix of complete item data.

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_nodes)
        Validated items (see :func:`prepare_items`).
    corr : {"pearson", "spearman", "polychoric"}
        Pearson product-moment; Spearman (Pearson of average ranks); polychoric for ordinal items
        (two-step estimate, :func:`theramark.psychosocial.polychoric.polychoric_matrix`).

    Returns
    -------
    DataFrame, shape (n_nodes, n_nodes)
    """
    frame = prepare_items(data)
    if corr not in CORRELATIONS:
        raise BadInputError(f"corr={corr!r} is not a known correlation; expected one of {CORRELATIONS}")
    if corr == "polychoric":
        from theramark.psychosocial.polychoric import polychoric_matrix

        return polychoric_matrix(frame)
    values = frame.to_numpy()
    if corr == "spearman":
        values = stats.rankdata(values, axis=0)
    return pd.DataFrame(_pearson(values), index=frame.columns, columns=frame.columns)


# --------------------------------------------------------------------------------------------------
# Batched graphical lasso along a λ path with EBIC selection
# --------------------------------------------------------------------------------------------------
def lambda_path(corr: np.ndarray, n_lambda: int = 100, lambda_min_ratio: float = 0.01) -> np.ndarray:
    """qgraph's λ sequence, returned largest first, shape (..., n_lambda).

    ``λ_max`` is the largest absolute off-diagonal correlation; the path is log-spaced down to
    ``lambda_min_ratio · λ_max``. ``corr`` may be one matrix or a stack of shape (B, p, p).
    """
    corr = np.asarray(corr, dtype=float)
    p = corr.shape[-1]
    off = np.abs(corr - np.eye(p))
    lam_max = off.reshape(*corr.shape[:-2], -1).max(axis=-1)
    fractions = np.exp(np.linspace(0.0, np.log(lambda_min_ratio), n_lambda))
    return np.multiply.outer(lam_max, fractions)


def _precision_from_beta(W: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Precision matrices as R glasso builds them, column by column, shape (B, p, p).

    Column ``j`` of ``K`` is ``K_jj = 1 / (W_jj - w_j' β_j)`` and ``K_-j,j = -β_j K_jj``; ``beta[b, j]``
    holds column j's lasso coefficients (zero at index j). The result is symmetric only up to the
    convergence tolerance, like R's ``wi``.
    """
    diag_w = np.einsum("bjj->bj", W)
    k_diag = 1.0 / (diag_w - np.einsum("bjk,bjk->bj", W, beta))
    # K[b, i, j] = -beta[b, j, i] * k_diag[b, j]  (column j from lasso j)
    K = -np.swapaxes(beta, 1, 2) * k_diag[:, None, :]
    idx = np.arange(W.shape[1])
    K[:, idx, idx] = k_diag
    return K


def _glasso_sweeps(S: np.ndarray, W: np.ndarray, beta: np.ndarray, lam: np.ndarray,
                   tol: float, max_sweeps: int) -> int:
    """Block coordinate descent for a batch of correlation matrices, one λ per matrix.

    Arrays are batch-last, shape (p, p, B), and updated in place: ``W`` the covariance estimate,
    ``beta[j, :, b]`` the lasso coefficients of column j (zero at j). For each column j the lasso
    ``min_β ½ β'W₁₁β - β's₁₂ + λ‖β‖₁`` (W₁₁ = W without row/column j) is solved by cyclic
    coordinate descent, then ``w₁₂ = W₁₁ β`` (Friedman et al. 2008). ``S`` has a unit diagonal and the
    diagonal is unpenalized, so ``W_kk = 1`` throughout and no division is needed.

    Convergence follows R glasso: a matrix is done when the mean absolute change of its off-diagonal
    ``W`` over a sweep is below ``tol`` times the mean absolute off-diagonal correlation; matrices that
    are done leave the batch so stragglers do not cost the others. Returns the number of sweeps run.
    """
    p, _, B = S.shape
    off = ~np.eye(p, dtype=bool)
    scale = np.abs(S[off]).mean(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    active = np.arange(B)
    for sweep in range(1, max_sweeps + 1):
        full = active.size == B
        Sa = S if full else S[:, :, active]
        Wa = W if full else W[:, :, active]
        Ba = beta if full else beta[:, :, active]
        la = lam[active]
        neg_la = -la
        z, clipped, delta, max_delta = (np.empty(active.size) for _ in range(4))
        step = np.empty((p, active.size))
        inner_tol = tol * float(scale[active].min())
        change = np.zeros(active.size)
        for j in range(p):
            b = Ba[j]                                  # (p, B) view; b[j] == 0
            wb = np.einsum("klb,lb->kb", Wa, b)        # running W @ b
            s = Sa[j]
            others = [k for k in range(p) if k != j]
            for _ in range(10_000):
                max_delta.fill(0.0)
                for k in others:
                    bk = b[k]
                    np.subtract(s[k], wb[k], out=z)
                    z += bk
                    np.minimum(z, la, out=clipped)     # soft threshold at λ: z - clip(z, -λ, λ)
                    np.maximum(clipped, neg_la, out=clipped)
                    z -= clipped
                    np.subtract(z, bk, out=delta)
                    bk[...] = z
                    np.multiply(Wa[k], delta, out=step)
                    wb += step
                    np.abs(delta, out=delta)
                    np.maximum(max_delta, delta, out=max_delta)
                if max_delta.max() < inner_tol:
                    break
            wb[j] = 1.0
            change += np.abs(wb - Wa[j]).sum(axis=0)
            Wa[j] = wb
            Wa[:, j] = wb
        if not full:
            W[:, :, active] = Wa
            beta[:, :, active] = Ba
        still = change >= tol * scale[active] * (p * (p - 1))
        active = active[still]
        if active.size == 0:
            return sweep
    return max_sweeps


def graphical_lasso(corr: np.ndarray, lam: float, tol: float = 1e-8) -> np.ndarray:
    """Graphical lasso at one λ with unpenalized diagonal (R ``glasso(S, rho, penalize.diagonal=FALSE)``).

    Parameters
    ----------
    corr : ndarray, shape (p, p)
        Correlation matrix (unit diagonal).
    lam : float
        Penalty on the off-diagonal entries of the precision matrix.
    tol : float
        Convergence threshold (R's ``thr``).

    Returns
    -------
    ndarray, shape (p, p)
        The precision matrix, built column by column as R's ``wi`` (symmetric to within ``tol``).
    """
    S = np.asarray(corr, dtype=float)[:, :, None].copy()
    W, beta = S.copy(), np.zeros_like(S)
    _glasso_sweeps(S, W, beta, np.array([float(lam)]), tol, _MAX_SWEEPS)
    return _precision_from_beta(np.moveaxis(W, -1, 0), np.moveaxis(beta, -1, 0))[0]


def glasso_ebic_batch(corr: np.ndarray, n_obs: np.ndarray | int, gamma: float = 0.5,
                      n_lambda: int = 100, lambda_min_ratio: float = 0.01,
                      tol: float = _TOL_RESAMPLE, return_path: bool = False) -> dict:
    """EBIC-selected graphical lasso for a stack of correlation matrices.

    Parameters
    ----------
    corr : ndarray, shape (B, p, p)
        Correlation matrices (unit diagonal, positive definite).
    n_obs : int or ndarray, shape (B,)
        Sample size behind each matrix (enters the EBIC).
    gamma, n_lambda, lambda_min_ratio
        As in :func:`ebicglasso`.
    tol : float
        Convergence threshold, R glasso's ``thr`` semantics (default 1e-4, R's default).
    return_path : bool
        Also return EBIC, number of edges and log-likelihood for every λ.

    Returns
    -------
    dict
        ``partial`` (B, p, p) partial correlations of the selected model, ``precision`` (B, p, p),
        ``lambda`` (B,) the selected λ, ``lambda_index`` (B,) its index in the path (0 = largest λ),
        and with ``return_path``: ``lambdas``, ``ebic``, ``n_edges``, ``loglik``, each (B, n_lambda).
    """
    S = np.array(corr, dtype=float, copy=True)
    if S.ndim == 2:
        S = S[None]
    B, p, _ = S.shape
    S_last = np.ascontiguousarray(np.moveaxis(S, 0, -1))    # (p, p, B) for the sweeps
    n_obs = np.broadcast_to(np.asarray(n_obs, dtype=float), (B,))
    lambdas = lambda_path(S, n_lambda, lambda_min_ratio)           # (B, L), largest first
    W_last = S_last.copy()
    beta_last = np.zeros((p, p, B))
    lower = np.tril_indices(p, -1)
    ebic = np.empty((B, n_lambda))
    n_edges = np.empty((B, n_lambda))
    loglik = np.empty((B, n_lambda))
    best_ebic = np.full(B, np.inf)
    best_K = np.zeros((B, p, p))
    best_index = np.zeros(B, dtype=int)
    log_p = np.log(p)
    for step in range(n_lambda):
        lam = lambdas[:, step]
        _glasso_sweeps(S_last, W_last, beta_last, lam, tol, _MAX_SWEEPS)
        K = _precision_from_beta(np.moveaxis(W_last, -1, 0), np.moveaxis(beta_last, -1, 0))
        sign, logdet = np.linalg.slogdet(K)
        logdet = np.where(sign > 0, logdet, -np.inf)
        ll = n_obs / 2.0 * (logdet - np.einsum("bij,bji->b", K, S))
        edges = (K[:, lower[0], lower[1]] != 0).sum(axis=1)
        value = -2.0 * ll + edges * np.log(n_obs) + 4.0 * edges * gamma * log_p
        ebic[:, step], n_edges[:, step], loglik[:, step] = value, edges, ll
        # which.min in R keeps the first minimum along the increasing-λ order, i.e. the *last* one
        # we meet going from large to small λ on an exact tie.
        better = value <= best_ebic
        best_ebic = np.where(better, value, best_ebic)
        best_K[better] = K[better]
        best_index[better] = step
    d = np.sqrt(np.einsum("bjj->bj", best_K))
    partial = -best_K / (d[:, :, None] * d[:, None, :])
    # Matrix::forceSymmetric keeps the upper triangle.
    iu = np.triu_indices(p, 1)
    partial[:, iu[1], iu[0]] = partial[:, iu[0], iu[1]]
    idx = np.arange(p)
    partial[:, idx, idx] = 0.0
    partial[partial == 0] = 0.0  # no negative zeros in outputs
    result = {
        "partial": partial,
        "precision": best_K,
        "lambda": lambdas[np.arange(B), best_index],
        "lambda_index": best_index,
    }
    if return_path:
        result.update(lambdas=lambdas, ebic=ebic, n_edges=n_edges, loglik=loglik)
    return result


def _check_positive_definite(corr: np.ndarray, names: Sequence[str]) -> None:
    eigenvalues = np.linalg.eigvalsh(corr)
    if eigenvalues.min() <= 1e-10:
        raise BadInputError(
            "the correlation matrix is not positive definite (some nodes are linear combinations of "
            "others, or there are too few rows); remove redundant columns",
            [f"nodes: {', '.join(map(str, names))}", f"smallest eigenvalue {eigenvalues.min():.3g}"],
        )


def ebicglasso_from_correlation(corr: pd.DataFrame | np.ndarray, n_obs: int, gamma: float = 0.5,
                                n_lambda: int = 100, lambda_min_ratio: float = 0.01,
                                tol: float = _TOL_SINGLE) -> pd.DataFrame:
    """:func:`ebicglasso` on a given correlation matrix and sample size (qgraph's ``EBICglasso(S, n)``).

    Parameters
    ----------
    corr : DataFrame or ndarray, shape (p, p)
        Correlation (or covariance; it is standardized first, as qgraph does) matrix.
    n_obs : int
        Number of observations behind ``corr``.

    Returns
    -------
    DataFrame, shape (p, p)
        Partial correlations of the EBIC-selected model, zero diagonal. ``attrs`` holds ``lambda``
        and ``lambda_index`` (0 = largest λ) of the selected model.
    """
    names = list(corr.columns) if isinstance(corr, pd.DataFrame) else [f"V{i + 1}" for i in range(len(corr))]
    S = np.asarray(corr, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise BadInputError(f"corr: expected a square matrix, got shape {S.shape}")
    if not np.allclose(S, S.T, atol=1e-10):
        raise BadInputError("corr: the matrix is not symmetric")
    if not np.all(np.isfinite(S)):
        raise BadInputError("corr: the matrix has missing or infinite values")
    if int(n_obs) <= 1:
        raise BadInputError(f"n_obs: expected a sample size above 1, got {n_obs}")
    d = np.sqrt(np.diag(S))
    if np.any(d <= 0):
        raise BadInputError("corr: the diagonal must be positive")
    S = S / np.outer(d, d)
    _check_positive_definite(S, names)
    _check_path_arguments(gamma, n_lambda, lambda_min_ratio)
    fit = glasso_ebic_batch(S[None], int(n_obs), gamma, n_lambda, lambda_min_ratio, tol=tol)
    network = pd.DataFrame(fit["partial"][0], index=names, columns=names)
    network.attrs["lambda"] = float(fit["lambda"][0])
    network.attrs["lambda_index"] = int(fit["lambda_index"][0])
    if fit["lambda_index"][0] == n_lambda - 1:
        warnings.warn("EBICglasso selected the smallest λ of the path: the sparsity assumption may be "
                      "violated (as qgraph notes)", UserWarning, stacklevel=2)
    return network


def _check_path_arguments(gamma: float, n_lambda: int, lambda_min_ratio: float) -> None:
    if not (gamma >= 0):
        raise BadInputError(f"gamma: expected a non-negative EBIC hyperparameter, got {gamma}")
    if int(n_lambda) < 1:
        raise BadInputError(f"n_lambda: expected at least 1, got {n_lambda}")
    if not (0 < lambda_min_ratio < 1):
        raise BadInputError(f"lambda_min_ratio: expected a value in (0, 1), got {lambda_min_ratio}")


def ebicglasso(data: pd.DataFrame | np.ndarray, gamma: float = 0.5, n_lambda: int = 100,
               lambda_min_ratio: float = 0.01, corr: str = "pearson") -> pd.DataFrame:
    """Regularized partial-correlation network selected by EBIC, as qgraph's ``EBICglasso``.

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_nodes)
        Item responses or scores, one column per node. Rows with missing values are dropped
        (listwise deletion, with a warning).
    gamma : float
        EBIC hyperparameter γ (0 gives BIC; 0.5 is qgraph's default).
    n_lambda : int
        Number of λ values in the path.
    lambda_min_ratio : float
        Smallest λ as a fraction of the largest (qgraph: 0.01).
    corr : {"pearson", "spearman", "polychoric"}
        Correlation the network is estimated from; polychoric for ordinal items.

    Returns
    -------
    DataFrame, shape (n_nodes, n_nodes)
        Partial correlations (edge weights), symmetric, zero diagonal; absent edges are exactly 0.
        ``attrs``: ``lambda``, ``lambda_index``, ``n_obs``, ``corr``.

    Notes
    -----
    Differences from R are bounded by R glasso's own convergence threshold (1e-4); see the module
    docstring for the algorithm and the tests for the agreement reached on psych::bfi.
    """
    frame = prepare_items(data)
    S = correlation_matrix(frame, corr)
    network = ebicglasso_from_correlation(S, len(frame), gamma, n_lambda, lambda_min_ratio)
    network.attrs.update(n_obs=len(frame), corr=corr)
    return network


# --------------------------------------------------------------------------------------------------
# Centrality
# --------------------------------------------------------------------------------------------------
def shortest_paths(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs shortest path lengths and path counts on distances ``1/|w|``, batched.

    Parameters
    ----------
    weights : ndarray, shape (B, p, p)
        Symmetric edge weights; zero means no edge.

    Returns
    -------
    dist : ndarray, shape (B, p, p)
        Shortest path lengths (``inf`` between unconnected nodes, 0 on the diagonal).
    count : ndarray, shape (B, p, p)
        Number of distinct shortest paths (1 on the diagonal, 0 when unconnected).
    """
    absw = np.abs(np.asarray(weights, dtype=float))
    B, p, _ = absw.shape
    with np.errstate(divide="ignore"):
        length = np.where(absw > 0, 1.0 / np.where(absw > 0, absw, 1.0), np.inf)
    idx = np.arange(p)
    length[:, idx, idx] = np.inf
    dist = length.copy()
    dist[:, idx, idx] = 0.0
    for k in range(p):  # Floyd–Warshall, vectorized over the batch and all (i, j)
        np.minimum(dist, dist[:, :, k, None] + dist[:, None, k, :], out=dist)
    # Tight edges u→t on a shortest path from s: dist[s,u] + length[u,t] == dist[s,t].
    scale = np.where(np.isfinite(dist), dist, 0.0)
    with np.errstate(invalid="ignore"):
        tight = np.abs(dist[:, :, :, None] + length[:, None, :, :] - dist[:, :, None, :]) <= (
            1e-9 * (1.0 + scale[:, :, None, :]))
    tight &= np.isfinite(length)[:, None, :, :]
    count = np.zeros((B, p, p))
    count[:, idx, idx] = 1.0
    for _ in range(p):  # path counts propagate along the shortest-path DAG; p steps reach every node
        new = np.einsum("bsu,bsut->bst", count, tight)
        new[:, idx, idx] = 1.0
        if np.array_equal(new, count):
            break
        count = new
    return dist, count


def centrality_arrays(weights: np.ndarray, communities: np.ndarray | None = None,
                      measures: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Centrality of a batch of networks, each measure of shape (B, p).

    See :func:`centrality` for the definitions. ``communities`` is an integer code per node (p,).
    ``measures`` limits the computation (closeness and betweenness need all shortest paths).
    """
    W = np.array(weights, dtype=float, copy=True)
    if W.ndim == 2:
        W = W[None]
    B, p, _ = W.shape
    idx = np.arange(p)
    W[:, idx, idx] = 0.0
    wanted = set(measures) if measures is not None else {
        "strength", "closeness", "betweenness", "expected_influence"}
    out: dict[str, np.ndarray] = {}
    if "strength" in wanted:
        out["strength"] = np.abs(W).sum(axis=2)
    if "expected_influence" in wanted:
        out["expected_influence"] = W.sum(axis=2)
    if wanted & {"closeness", "betweenness"}:
        # path arrays are (B, p, p, p): process in chunks of about 2 million entries
        chunk = max(1, 2_000_000 // p ** 3)
        if B > chunk:
            parts = [centrality_arrays(W[i:i + chunk], None, sorted(wanted & {"closeness", "betweenness"}))
                     for i in range(0, B, chunk)]
            for name in parts[0]:
                out[name] = np.concatenate([part[name] for part in parts])
            wanted = wanted - {"closeness", "betweenness"}
    if wanted & {"closeness", "betweenness"}:
        dist, count = shortest_paths(W)
        if "closeness" in wanted:
            finite = np.isfinite(dist)
            total = np.where(finite, dist, 0.0).sum(axis=2)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["closeness"] = np.where(total > 0, 1.0 / total, np.nan)
        if "betweenness" in wanted:
            # fraction of shortest s–t paths through v, summed over unordered pairs s < t
            on_path = np.isclose(dist[:, :, :, None] + dist[:, None, :, :], dist[:, :, None, :],
                                 rtol=1e-9, atol=0.0) & np.isfinite(dist[:, :, None, :])
            through = count[:, :, :, None] * count[:, None, :, :] * on_path      # [b, s, v, t]
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(count[:, :, None, :] > 0, through / count[:, :, None, :], 0.0)
            frac[:, idx, idx, :] = 0.0   # v == s
            frac[:, :, idx, idx] = 0.0   # v == t
            frac[:, idx, :, idx] = 0.0   # s == t
            out["betweenness"] = frac.sum(axis=(1, 3)) / 2.0
    if communities is not None:
        codes = np.asarray(communities)
        other = codes[:, None] != codes[None, :]                      # (p, p) node i vs node k
        out["bridge_strength"] = (np.abs(W) * other).sum(axis=2)
        bei1 = (W * other).sum(axis=2)
        out["bridge_expected_influence_1step"] = bei1
        # networktools: influence of node k on community c = Σ_{m in c} w_km; the 2-step value adds,
        # for each community c other than i's, Σ_k w_ik · influence(k → c).
        levels = np.unique(codes)
        member = (codes[None, :] == levels[:, None]).astype(float)   # (C, p)
        influence = np.einsum("bkm,cm->bck", W, member)              # (B, C, p)
        two_step = np.einsum("bik,bck->bci", W, influence)           # (B, C, p)
        not_own = (codes[None, :] != levels[:, None]).astype(float)  # (C, p)
        out["bridge_expected_influence_2step"] = bei1 + (two_step * not_own[None]).sum(axis=1)
    return out


def _as_network(network: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    if isinstance(network, np.ndarray):
        network = pd.DataFrame(network, index=[f"V{i + 1}" for i in range(network.shape[0])],
                               columns=[f"V{i + 1}" for i in range(network.shape[0])])
    if not isinstance(network, pd.DataFrame):
        raise BadInputError("network: expected a square DataFrame of edge weights, got "
                            f"{type(network).__name__}")
    values = network.to_numpy(dtype=float)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise BadInputError(f"network: expected a square matrix, got shape {values.shape}")
    if list(network.index) != list(network.columns):
        raise BadInputError("network: row and column labels must be the same nodes in the same order")
    if not np.all(np.isfinite(values)):
        raise BadInputError("network: edge weights must be finite")
    if not np.allclose(values, values.T, atol=1e-12):
        raise BadInputError("network: expected a symmetric (undirected) weight matrix")
    return network


def community_codes(nodes: Sequence[str], communities: Mapping[str, object]) -> np.ndarray:
    """Integer community code per node; raises when a node has no community or only one exists."""
    missing = [str(n) for n in nodes if n not in communities]
    if missing:
        raise BadInputError("communities: every node needs a community",
                            [f"node {m!r} missing" for m in missing])
    labels = [communities[n] for n in nodes]
    uniques = list(dict.fromkeys(labels))
    if len(uniques) < 2:
        raise BadInputError("communities: bridge centrality needs at least 2 communities")
    return np.array([uniques.index(label) for label in labels])


def centrality(network: pd.DataFrame | np.ndarray,
               communities: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Node centrality of a weighted undirected network.

    Parameters
    ----------
    network : DataFrame, shape (p, p)
        Symmetric edge weights (partial correlations from :func:`ebicglasso`), labelled by node.
    communities : mapping node → community, optional
        Adds the bridge centralities (networktools' ``bridge``).

    Returns
    -------
    DataFrame
        One row per node (column ``node``) with
        ``strength`` (Σ_j |w_ij|), ``expected_influence`` (Σ_j w_ij),
        ``closeness`` (1 / Σ_j d_ij, raw, d the shortest path length on edge lengths 1/|w|; only
        reachable nodes count, NaN for an isolated node — igraph's ``closeness`` as called by
        qgraph's ``centrality_auto``), ``betweenness`` (Σ over unordered pairs s, t ≠ v of the
        fraction of shortest s–t paths through v, raw — the undirected count qgraph's
        ``centrality_auto`` reports), and with communities ``community``, ``bridge_strength``
        (Σ |w_ij| over j in other communities), ``bridge_expected_influence_1step`` (Σ w_ij over j in
        other communities) and ``bridge_expected_influence_2step``
        (BEI1_i + Σ_{c ≠ C(i)} Σ_k w_ik Σ_{m ∈ c} w_km, networktools' definition).
    """
    network = _as_network(network)
    nodes = list(network.columns)
    codes = community_codes(nodes, communities) if communities is not None else None
    values = centrality_arrays(network.to_numpy(dtype=float), codes,
                               measures=["strength", "closeness", "betweenness", "expected_influence"])
    table = pd.DataFrame({"node": nodes})
    for name in ("strength", "expected_influence", "closeness", "betweenness"):
        table[name] = values[name][0]
    if communities is not None:
        table.insert(1, "community", [communities[n] for n in nodes])
        for name in ("bridge_strength", "bridge_expected_influence_1step", "bridge_expected_influence_2step"):
            table[name] = values[name][0]
    return table
