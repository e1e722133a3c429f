"""Array backends and the batched OLS t engine behind the permutation tests.

The engine computes, for a batch of B permutations (or sign-flips) at once, the t statistic of one
contrast for every feature. With the full model ``M = U S V'`` (thin SVD, rank r) and the contrast
``c``, ``c'beta = w' U' Y`` with ``w = S^-1 V' c`` and ``Var(c'beta) = sigma^2 ||w||^2``. For a
permuted response ``Y* = P R`` the projection ``U' P R = (P' U)' R`` is one matrix product of the
permuted basis (B*r x n) with the residuals (n x p); the residual sum of squares is the permutation
invariant ``||R||^2`` minus ``||U' P R||^2``. The cost per permutation is r*n*p multiply-adds and the
Python loop runs over batches only.

Backends: numpy (the reference), cupy and torch (CPU or CUDA). Permutations are always drawn on
the CPU with numpy so that every backend sees the same ones.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from theramark.errors import BadInputError

BACKENDS = ("numpy", "torch", "cupy", "auto")


class NumpyBackend:
    """Reference backend on the CPU."""

    name = "numpy"

    def asarray(self, array: np.ndarray) -> Any:
        return np.ascontiguousarray(array, dtype=np.float64)

    def as_index(self, array: np.ndarray) -> Any:
        return np.asarray(array, dtype=np.intp)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def sum(self, array: Any, axis: int) -> Any:
        return array.sum(axis=axis)

    def einsum(self, subscripts: str, *operands: Any) -> Any:
        return np.einsum(subscripts, *operands)

    def amax(self, array: Any, axis: int) -> Any:
        return array.max(axis=axis)

    def sqrt(self, array: Any) -> Any:
        return np.sqrt(array)

    def abs(self, array: Any) -> Any:
        return np.abs(array)

    def clip_min(self, array: Any, low: float) -> Any:
        return np.maximum(array, low)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return np.where(condition, a, b)

    def swap01(self, array: Any) -> Any:
        return array.transpose(1, 0, 2)

    def count_ge(self, array: Any, reference: Any) -> Any:
        return (array >= reference).sum(axis=0)


class CupyBackend(NumpyBackend):
    """CuPy on a CUDA device (numpy's API)."""

    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def asarray(self, array: np.ndarray) -> Any:
        return self.xp.asarray(np.ascontiguousarray(array, dtype=np.float64))

    def as_index(self, array: np.ndarray) -> Any:
        return self.xp.asarray(np.asarray(array, dtype=np.int64))

    def to_numpy(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array)

    def einsum(self, subscripts: str, *operands: Any) -> Any:
        return self.xp.einsum(subscripts, *operands)

    def sqrt(self, array: Any) -> Any:
        return self.xp.sqrt(array)

    def abs(self, array: Any) -> Any:
        return self.xp.abs(array)

    def clip_min(self, array: Any, low: float) -> Any:
        return self.xp.maximum(array, low)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return self.xp.where(condition, a, b)


class TorchBackend:
    """PyTorch, on CUDA when available (else the CPU, which the tests use)."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

    def asarray(self, array: np.ndarray) -> Any:
        return self.torch.as_tensor(np.ascontiguousarray(array, dtype=np.float64), device=self.device)

    def as_index(self, array: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(array, dtype=np.int64), device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.detach().cpu().numpy()

    def sum(self, array: Any, axis: int) -> Any:
        return array.sum(dim=axis)

    def einsum(self, subscripts: str, *operands: Any) -> Any:
        return self.torch.einsum(subscripts, *operands)

    def amax(self, array: Any, axis: int) -> Any:
        return array.amax(dim=axis)

    def sqrt(self, array: Any) -> Any:
        return self.torch.sqrt(array)

    def abs(self, array: Any) -> Any:
        return self.torch.abs(array)

    def clip_min(self, array: Any, low: float) -> Any:
        return self.torch.clamp(array, min=low)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        if not self.torch.is_tensor(b):
            b = self.torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return self.torch.where(condition, a, b)

    def swap01(self, array: Any) -> Any:
        return array.permute(1, 0, 2)

    def count_ge(self, array: Any, reference: Any) -> Any:
        return (array >= reference).sum(dim=0)


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


def _orthonormal_basis(matrix: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """Thin SVD of ``matrix`` truncated to its numerical rank: (U, s, Vt)."""
    if matrix.shape[1] == 0:
        return (np.zeros((matrix.shape[0], 0)), np.zeros(0), np.zeros((0, 0)))
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    keep = s > rtol * max(s.max(initial=0.0), 1e-300) if s.size else np.zeros(0, bool)
    return u[:, keep], s[keep], vt[keep]


class PermutedOLS:
    """Batched t statistics of one contrast for permuted or sign-flipped residuals.

    Parameters
    ----------
    data : ndarray, shape (n_obs, n_features)
    model : ndarray, shape (n_obs, n_regressors)
        Full design (effects of interest and nuisance).
    contrast : ndarray, shape (n_regressors,)
    method : {"freedman_lane", "manly"}
        Freedman–Lane permutes the residuals of the reduced model (the model with the contrast's
        space removed, Beckmann's partition); Manly permutes the data themselves.
    backend : backend object from :func:`get_backend`.
    """

    def __init__(self, data: np.ndarray, model: np.ndarray, contrast: np.ndarray, method: str,
                 backend: Any) -> None:
        n_obs = data.shape[0]
        u, s, vt = _orthonormal_basis(model)
        rank = u.shape[1]
        self.df = n_obs - rank
        if self.df < 1:
            raise BadInputError(
                f"design has rank {rank} with {n_obs} observations: no residual degrees of freedom")
        # The contrast must lie in the row space of the model to be estimable.
        projected = vt.T @ (vt @ contrast)
        if not np.allclose(projected, contrast, atol=1e-8 * max(1.0, np.abs(contrast).max())):
            raise BadInputError("contrast is not estimable from the design (it is not in the row "
                                "space of the design matrix; check for collinear columns)")
        w = (vt @ contrast) / s
        self.rank = rank
        self.w_norm2 = float(w @ w)
        # Reduced (nuisance) model: the model with the contrast direction removed.
        c_pinv = contrast / float(contrast @ contrast)
        nuisance = model - np.outer(model @ contrast, c_pinv)
        uz, _, _ = _orthonormal_basis(nuisance)
        if method == "freedman_lane" and uz.shape[1]:
            residuals = data - uz @ (uz.T @ data)
        else:
            residuals = data
        total_ss = np.einsum("ij,ij->j", residuals, residuals)
        scale = np.einsum("ij,ij->j", data, data)
        # Features the reduced model fits exactly (constant ones, say) leave only rounding noise:
        # they get t = 0 (as bctpy does) instead of noise / noise.
        self.degenerate = total_ss <= 1e-24 * scale + 1e-300
        self.backend = backend
        self.u_t = backend.asarray(u.T)                       # (r, n)
        self.w = backend.asarray(w)                          # (r,)
        self.residuals = backend.asarray(residuals)          # (n, p)
        self.total_ss = backend.asarray(total_ss)            # (p,)
        self.degenerate_dev = backend.asarray(self.degenerate.astype(np.float64)) > 0.5
        self.n_obs = n_obs
        self.n_features = data.shape[1]
        self._observed_inputs = (u, w, residuals, total_ss)

    def observed(self) -> np.ndarray:
        """t statistics of the unpermuted data, shape (n_features,).

        Computed from the residuals of the reduced model, which gives the same t as the data for
        Freedman–Lane (the reduced model's fit lies in the full model's space) with less
        cancellation.
        """
        u, w, residuals, total_ss = self._observed_inputs
        g = u.T @ residuals
        num = w @ g
        rss = np.maximum(total_ss - np.einsum("ij,ij->j", g, g), 0.0)
        se = np.sqrt(rss / self.df * self.w_norm2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / se
        return np.where(self.degenerate | (rss <= 1e-12 * total_ss), 0.0, t)

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
            basis = self.u_t[None, :, :] * bk.asarray(signs)[:, None, :]  # (B, r, n)
        n_batch = basis.shape[0]
        projection = (basis.reshape(n_batch * r, n) @ self.residuals).reshape(n_batch, r, -1)
        num = bk.einsum("brp,r->bp", projection, self.w)
        explained = bk.einsum("brp,brp->bp", projection, projection)
        rss = bk.clip_min(self.total_ss[None, :] - explained, 0.0)
        se = bk.sqrt(rss * (self.w_norm2 / self.df))
        bad = self.degenerate_dev[None, :] | (rss <= 1e-12 * self.total_ss[None, :])
        se = bk.where(bad, 1.0, se)
        return bk.where(bad, 0.0, num / se)
