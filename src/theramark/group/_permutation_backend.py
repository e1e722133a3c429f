"""Array backends and the batched OLS t engine behind the permutation tests.

The engine computes, for a batch of B permutations (or sign-flips) at once, the t statistic of one
contrast for every feature. With the full model ``M = U S V'`` (thin SVD, rank r) and the contrast
``c``, ``c'beta = w' U' Y`` with ``w = S^-1 V' c`` and ``Var(c'beta) = sigma^2 ||w||^2``. For a
permuted response ``Y* = P R`` the projection ``U' P R = (P' U)' R`` is one matrix product of the
permuted basis (B*r x n) with the residuals (n x p); the residual sum of squares is the permutation
invariant ``||R||^2`` minus ``||U' P R||^2``. Model directions that every draw leaves unchanged
(the intercept under permutation; block indicators under within-block permutation) project onto a
constant, computed once. The cost per permutation is r'*n*p multiply-adds (r' the remaining rank)
and the Python loop runs over batches only.

The model's thin SVD and the reduced model's residuals come from
:class:`theramark.stats.Projection` (the least-squares engine's reusable projector), computed once
per test.

Backends: numpy (the reference), cupy and torch (CPU or CUDA). Permutations are always drawn on
the CPU with numpy so that every backend sees the same ones.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from theramark._blas import single_threaded_blas
from theramark.errors import BadInputError
from theramark.stats import Projection

BACKENDS = ("numpy", "torch", "cupy", "auto")
# Below this many multiply-adds a BLAS call runs faster on one thread: waking the BLAS thread pool
# costs more than the product itself, and far more on a busy machine.
_SINGLE_THREAD_MACS = 1 << 24


class NumpyBackend:
    """Reference backend on the CPU."""

    name = "numpy"

    def asarray(self, array: np.ndarray, dtype: Any = np.float64) -> Any:
        return np.ascontiguousarray(array, dtype=dtype)

    def as_index(self, array: np.ndarray) -> Any:
        return np.asarray(array, dtype=np.intp)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def matmul(self, a: Any, b: Any) -> Any:
        if a.shape[0] * a.shape[1] * b.shape[1] < _SINGLE_THREAD_MACS:
            with single_threaded_blas():
                return a @ b
        return a @ b

    def amax(self, array: Any, axis: int) -> Any:
        return array.max(axis=axis)

    def abs(self, array: Any) -> Any:
        return np.abs(array)

    def swap01(self, array: Any) -> Any:
        return array.transpose(1, 0, 2)

    def count_ge(self, array: Any, reference: Any) -> Any:
        return (array >= reference).sum(axis=0)

    def abs_(self, array: Any) -> Any:
        """Absolute value, in place."""
        return np.abs(array, out=array)

    def finish(self, projection, w, fixed_num, fixed_explained, total_ss, tiny_rss, df):
        """t (``w`` of shape (r,)) or F (``w`` of shape (r, q)) from the projections (B, r, p).

        Works in place to spare passes over memory.
        """
        if w.ndim == 1:
            num = np.einsum("brp,r->bp", projection, w)
        else:
            num = np.einsum("brp,rq->bqp", projection, w)
        num += fixed_num
        rss = np.einsum("brp,brp->bp", projection, projection)
        rss += fixed_explained
        np.subtract(total_ss, rss, out=rss)
        bad = rss <= tiny_rss
        rss /= df
        with np.errstate(invalid="ignore", divide="ignore"):
            if w.ndim == 1:
                np.sqrt(rss, out=rss)
                stat = np.divide(num, rss, out=num)
            else:
                stat = np.einsum("bqp,bqp->bp", num, num)
                stat /= w.shape[1]
                np.divide(stat, rss, out=stat)
        if bad.any():
            stat[bad] = 0.0
        return stat


class CupyBackend(NumpyBackend):
    """CuPy on a CUDA device (numpy's API)."""

    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def asarray(self, array: np.ndarray, dtype: Any = np.float64) -> Any:
        return self.xp.asarray(np.ascontiguousarray(array, dtype=dtype))

    def as_index(self, array: np.ndarray) -> Any:
        return self.xp.asarray(np.asarray(array, dtype=np.int64))

    def to_numpy(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array)

    def matmul(self, a: Any, b: Any) -> Any:
        return a @ b

    def abs(self, array: Any) -> Any:
        return self.xp.abs(array)


class TorchBackend:
    """PyTorch, on CUDA when available (else the CPU, which the tests use)."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

    def asarray(self, array: Any, dtype: Any = np.float64) -> Any:
        if self.torch.is_tensor(array):
            return array
        return self.torch.as_tensor(np.ascontiguousarray(array, dtype=np.dtype(dtype)),
                                    device=self.device)

    def as_index(self, array: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(array, dtype=np.int64), device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.detach().cpu().numpy()

    def matmul(self, a: Any, b: Any) -> Any:
        return a @ b

    def amax(self, array: Any, axis: int) -> Any:
        return array.amax(dim=axis)

    def abs(self, array: Any) -> Any:
        return self.torch.abs(array)

    def swap01(self, array: Any) -> Any:
        return array.permute(1, 0, 2)

    def count_ge(self, array: Any, reference: Any) -> Any:
        return (array >= reference).sum(dim=0)

    def abs_(self, array: Any) -> Any:
        return array.abs_()

    def finish(self, projection, w, fixed_num, fixed_explained, total_ss, tiny_rss, df):
        torch = self.torch
        if w.ndim == 1:
            num = torch.einsum("brp,r->bp", projection, w) + fixed_num
        else:
            num = torch.einsum("brp,rq->bqp", projection, w) + fixed_num
        rss = total_ss - (torch.einsum("brp,brp->bp", projection, projection) + fixed_explained)
        bad = rss <= tiny_rss
        variance = torch.clamp(rss, min=0.0) / df
        variance = torch.where(bad, torch.ones_like(variance), variance)
        if w.ndim == 1:
            stat = num / torch.sqrt(variance)
        else:
            stat = (num * num).sum(dim=1) / w.shape[1] / variance
        return torch.where(bad, torch.zeros_like(stat), stat)


def _torch_has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _cupy_has_cuda() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any CUDA runtime failure means "no usable GPU"
        return False


def get_backend(backend: str) -> NumpyBackend | CupyBackend | TorchBackend:
    """Return the array backend named ``backend`` ("auto": a GPU backend if one works, else numpy)."""
    if backend not in BACKENDS:
        raise BadInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if _torch_has_cuda():
            return TorchBackend("cuda")
        if _cupy_has_cuda():
            return CupyBackend()
        return NumpyBackend()
    if backend == "numpy":
        return NumpyBackend()
    if importlib.util.find_spec(backend) is None:
        extra = " (pip install 'theramark[gpu]')" if backend == "torch" else ""
        raise BadInputError(f"backend {backend!r} requested but {backend} is not installed{extra}")
    if backend == "torch":
        return TorchBackend()
    return CupyBackend()


#: Values (observations x features) of the data read and residualized at once (256 MiB in double).
_BLOCK_VALUES = 1 << 25
#: Relative tolerance on singular values for the rank of the model, nuisance and invariant spaces.
_RANK_RTOL = 1e-10


class PermutedOLS:
    """Batched t statistics of one contrast for permuted or sign-flipped residuals.

    Parameters
    ----------
    data : array_like, shape (n_obs, n_features)
        Any array that slices by columns (numpy, a memory map, a Dask or zarr array), read
        :data:`_BLOCK_VALUES` values at a time; float32 data are not copied to float64 as a whole.
    model : ndarray, shape (n_obs, n_regressors)
        Full design (effects of interest and nuisance).
    contrast : ndarray, shape (n_regressors,)
    method : {"freedman_lane", "manly"}
        Freedman–Lane permutes the residuals of the reduced model (the model with the contrast's
        space removed, Beckmann's partition); Manly permutes the data themselves.
    backend : backend object from :func:`get_backend`.
    invariant : ndarray, shape (n_obs, k), optional
        Columns spanning vectors that every draw leaves unchanged (the constant, or block
        indicators for within-block permutations). Model directions inside that span project the
        permuted residuals onto a constant, computed once instead of per permutation.
    precision : {"double", "single"}
        Floating-point precision of the permutation products (the observed statistic is always
        computed in double precision).
    """

    def __init__(self, data: np.ndarray, model: np.ndarray, contrast: np.ndarray, method: str,
                 backend: Any, invariant: np.ndarray | None = None,
                 precision: str = "double") -> None:
        if precision not in ("double", "single"):
            raise BadInputError(f"precision must be 'double' or 'single', got {precision!r}")
        n_obs = data.shape[0]
        full = Projection(model, rtol=_RANK_RTOL)
        u, s, vt = full.basis, full.singular_values, full.right
        rank = full.rank
        self.df = n_obs - rank
        if self.df < 1:
            raise BadInputError(
                f"design has rank {rank} with {n_obs} observations: no residual degrees of freedom")
        # Each contrast row must lie in the row space of the model to be estimable.
        contrasts = np.atleast_2d(contrast)
        projected = (vt.T @ (vt @ contrasts.T)).T
        if not np.allclose(projected, contrasts, atol=1e-8 * max(1.0, np.abs(contrasts).max())):
            raise BadInputError("contrast is not estimable from the design (it is not in the row "
                                "space of the design matrix; check for collinear columns)")
        weights = (vt @ contrasts.T) / s[:, None]                # (r, q): C beta = W' U' Y
        self.n_contrasts = q = contrasts.shape[0]
        gram = weights.T @ weights
        eigenvalues, eigenvectors = np.linalg.eigh(gram)
        if eigenvalues.min() <= 1e-10 * eigenvalues.max():
            raise BadInputError("contrast rows are linearly dependent: give independent rows")
        # L = W (W'W)^(-1/2): then ||L' U' Y||^2 / q is the F numerator (sigma^2 units) and, for
        # one row, L' U' Y / sigma is the t statistic.
        loadings = weights @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        self.rank = rank
        self.statistic = "t" if q == 1 else "F"
        # Reduced (nuisance) model: the model with the contrasts' row space removed.
        row_space = np.linalg.pinv(contrasts) @ contrasts
        reduced = Projection(model - model @ row_space, rtol=_RANK_RTOL)
        residualize = method == "freedman_lane" and reduced.rank
        self.n_obs = n_obs
        self.n_features = n_features = data.shape[1]
        self.loadings = loadings
        # Rotate the model basis so that its first columns span the directions every draw leaves
        # unchanged: their projections are the same for all permutations.
        u_fixed, u_moving, w_fixed, w_moving = _split_invariant(u, loadings, invariant)
        dtype = np.float64 if precision == "double" else np.float32
        # The data are read a block of features at a time (a numpy array, a memory map, a Dask or
        # zarr array), residualized in double precision and stored once in the working precision:
        # no double-precision copy of the whole table is ever held (at 2,000 x 79,800 in single
        # precision, the stored residuals are the only array of that size).
        residuals = np.empty((n_obs, n_features), dtype=dtype)
        total_ss = np.empty(n_features)
        observed = np.empty(n_features)
        fixed_num = np.empty((q, n_features))
        fixed_explained = np.empty(n_features)
        block = max(1, _BLOCK_VALUES // max(n_obs, 1))
        for first in range(0, n_features, block):
            last = min(first + block, n_features)
            values = np.asarray(data[:, first:last], dtype=np.float64)
            if not np.all(np.isfinite(values)):
                row, column = np.argwhere(~np.isfinite(values))[0]
                raise BadInputError(
                    f"data contains NaN or infinite values (first at row, column "
                    f"[{int(row)}, {first + int(column)}]); drop or impute them before inference")
            res = reduced.residualize(values) if residualize else values.copy()
            tss = np.einsum("ij,ij->j", res, res)
            scale = np.einsum("ij,ij->j", values, values)
            # Features the reduced model fits exactly (constant ones, say) leave only rounding
            # noise: zero them so that they get t = 0 (as bctpy does) instead of noise / noise.
            degenerate = tss <= 1e-24 * scale + 1e-300
            if degenerate.any():
                res[:, degenerate] = 0.0
                tss[degenerate] = 0.0
            observed[first:last] = _statistic(u.T @ res, loadings, tss, self.df)
            projection = u_fixed.T @ res
            fixed_num[:, first:last] = w_fixed.T @ projection
            fixed_explained[first:last] = np.einsum("ij,ij->j", projection, projection)
            total_ss[first:last] = tss
            residuals[:, first:last] = res
        self._observed = observed
        self.rank_moving = u_moving.shape[1]
        self.dtype = dtype
        self.backend = backend
        self.u_t = backend.asarray(u_moving.T, dtype)                    # (r', n)
        self.w = backend.asarray(w_moving[:, 0] if q == 1 else w_moving, dtype)  # (r',[q])
        self.residuals = backend.asarray(residuals, dtype)               # (n, p), no copy on numpy
        del residuals
        self.fixed_num = backend.asarray(fixed_num[0] if q == 1 else fixed_num, dtype)
        self.fixed_explained = backend.asarray(fixed_explained, dtype)
        self.total_ss = backend.asarray(total_ss, dtype)                 # (p,)
        self.tiny_rss = backend.asarray(1e-12 * total_ss if precision == "double"
                                        else 1e-5 * total_ss, dtype)

    def observed(self) -> np.ndarray:
        """t (or F) statistics of the unpermuted data, shape (n_features,), in double precision.

        Computed from the residuals of the reduced model, which gives the same t as the data for
        Freedman–Lane (the reduced model's fit lies in the full model's space) with less
        cancellation.
        """
        return self._observed.copy()

    def batch(self, permutations: np.ndarray | None = None,
              signs: np.ndarray | None = None) -> Any:
        """t statistics for a batch, shape (B, n_features), as a backend array.

        ``permutations[b]`` maps row i of the permuted residuals to row ``permutations[b, i]`` of
        the original ones; ``signs[b]`` multiplies row i by ±1.
        """
        bk = self.backend
        r, n = self.u_t.shape
        if permutations is not None:
            inverse = np.argsort(permutations, axis=1)
            basis = bk.swap01(self.u_t[:, bk.as_index(inverse)])          # (B, r, n)
        else:
            signs_dev = bk.asarray(signs, self.dtype)
            basis = self.u_t[None, :, :] * signs_dev[:, None, :]          # (B, r, n)
        n_batch = basis.shape[0]
        projection = bk.matmul(basis.reshape(n_batch * r, n), self.residuals)
        projection = projection.reshape(n_batch, r, -1)
        return bk.finish(projection, self.w, self.fixed_num, self.fixed_explained,
                         self.total_ss, self.tiny_rss, self.df)


def _statistic(g: np.ndarray, loadings: np.ndarray, total_ss: np.ndarray, df: int) -> np.ndarray:
    """t (one contrast) or F (several) from the projections ``g = U' R`` (r, p) of residuals whose
    sums of squares are ``total_ss``; 0 where the model leaves no residual."""
    num = loadings.T @ g                                                 # (q, p)
    rss = total_ss - np.einsum("ij,ij->j", g, g)
    bad = rss <= 1e-12 * total_ss
    with np.errstate(divide="ignore", invalid="ignore"):
        if num.shape[0] == 1:
            stat = num[0] / np.sqrt(rss / df)
        else:
            stat = np.einsum("qp,qp->p", num, num) / num.shape[0] / (rss / df)
    stat[bad] = 0.0
    return stat


def _split_invariant(u: np.ndarray, w: np.ndarray, invariant: np.ndarray | None):
    """Split the model basis into draw-invariant directions and the rest (rotating ``w``)."""
    r = u.shape[1]
    if invariant is None or r == 0:
        return u[:, :0], u, w[:0], w
    q = Projection(invariant, rtol=_RANK_RTOL).basis
    # Principal vectors between span(u) and span(q): cosines of 1 mark the shared directions.
    a, cosines, _ = np.linalg.svd(u.T @ q, full_matrices=True)
    n_shared = int(np.sum(cosines > 1 - 1e-9))
    rotated = u @ a
    w_rotated = a.T @ w
    return (rotated[:, :n_shared], rotated[:, n_shared:], w_rotated[:n_shared],
            w_rotated[n_shared:])
