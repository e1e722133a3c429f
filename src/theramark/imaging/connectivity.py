"""Static and dynamic functional connectivity of ROI (or voxel) time series.

Static FC is Pearson (or partial) correlation, Fisher z-transformed by default, with nilearn's
:class:`~nilearn.connectome.ConnectivityMeasure` (``EmpiricalCovariance``) semantics. Dynamic FC is
sliding-window Pearson correlation (rectangular or Gaussian-tapered windows, Allen et al. 2014),
computed for all windows at once as batched weighted cross-products of window-centred data, which
keeps full double precision (no running sums) and has no per-window Python loop.

Time is along the first axis of every time-series array: (n_volumes, n_rois).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import linalg

from theramark._blas import blas_threads
from theramark.errors import BadInputError

__all__ = [
    "dfc_variability",
    "edges_to_matrix",
    "fc_edges",
    "fc_matrix",
    "r_to_z",
    "seed_to_voxel",
    "sliding_window_fc",
    "window_length_volumes",
    "window_weights",
]

EDGE_SEPARATOR = "__"


def r_to_z(r: np.ndarray) -> np.ndarray:
    """Fisher z (arctanh) of correlations, clipped to [-1, 1] first (rounding can exceed 1)."""
    with np.errstate(divide="ignore"):
        return np.arctanh(np.clip(r, -1.0, 1.0))


def _as_timeseries(timeseries, name: str = "timeseries", min_volumes: int = 3) -> np.ndarray:
    x = np.asarray(timeseries, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise BadInputError(
            f"{name}: expected (n_volumes, n_rois) or (n_subjects, n_volumes, n_rois), got shape "
            f"{x.shape}"
        )
    if x.shape[-2] < min_volumes:
        raise BadInputError(f"{name}: {x.shape[-2]} volumes; at least {min_volumes} are needed")
    if not np.isfinite(x).all():
        raise BadInputError(f"{name}: time series hold NaN or infinite values")
    return x


def fc_matrix(
    timeseries: np.ndarray, kind: str = "correlation", fisher_z: bool = True  # noqa: FBT001
) -> np.ndarray:
    """Static functional connectivity matrix.

    Parameters
    ----------
    timeseries : ndarray, shape (n_volumes, n_rois) or (n_subjects, n_volumes, n_rois)
        ROI time series (censored volumes already removed). A 3-D stack is processed at once.
    kind : {"correlation", "partial correlation"}
        Pearson correlation, or partial correlation from the inverse covariance (needs more
        volumes than ROIs).
    fisher_z : bool
        Return arctanh of the correlations, with the diagonal set to 0; otherwise the diagonal is 1.

    Returns
    -------
    ndarray, shape (n_rois, n_rois) or (n_subjects, n_rois, n_rois)
        Equals nilearn's ``ConnectivityMeasure(kind=kind, cov_estimator=EmpiricalCovariance())``
        (followed by arctanh) to rounding.

    Raises
    ------
    BadInputError
        Wrong shape, non-finite values, an ROI with zero variance (named by column index), fewer
        volumes than ROIs for partial correlation.
    """
    x = _as_timeseries(timeseries)
    if kind not in ("correlation", "partial correlation"):
        raise BadInputError(f"kind={kind!r}: expected 'correlation' or 'partial correlation'")
    stack = x if x.ndim == 3 else x[None]
    n_volumes, n_rois = stack.shape[1:]
    if kind == "partial correlation" and n_volumes <= n_rois:
        raise BadInputError(
            f"timeseries: partial correlation needs more volumes than ROIs (got {n_volumes} "
            f"volumes for {n_rois} ROIs)"
        )
    out = np.empty((stack.shape[0], n_rois, n_rois))
    idx = np.arange(n_rois)
    # One subject at a time: a (n_volumes × n_rois) work space that stays in cache, and one
    # BLAS product written straight into the output (faster than a batched matmul here).
    for i, series in enumerate(stack):
        centered = series - series.mean(axis=0)
        norm = np.sqrt(np.einsum("tr,tr->r", centered, centered))
        dead = np.flatnonzero(norm < np.finfo(np.float64).eps * np.sqrt(n_volumes))
        if dead.size:
            where = f"subject {i}: " if x.ndim == 3 else ""
            raise BadInputError(
                f"timeseries: {where}ROI column(s) {dead.tolist()} have zero variance; "
                "correlation is undefined (is the ROI outside the brain mask?)"
            )
        if kind == "correlation":
            centered /= norm
            np.dot(centered.T, centered, out=out[i])
        else:
            precision = linalg.pinvh(np.dot(centered.T, centered) / n_volumes)
            d = np.sqrt(np.diag(precision))
            np.divide(-precision, np.outer(d, d), out=out[i])
        out[i, idx, idx] = 1.0
    np.clip(out, -1.0, 1.0, out=out)
    r = out if x.ndim == 3 else out[0]
    if not fisher_z:
        return r
    r[..., idx, idx] = 0.0
    with np.errstate(divide="ignore"):
        return np.arctanh(r, out=r)


def seed_to_voxel(
    seed_timeseries: np.ndarray,
    voxel_timeseries: np.ndarray,
    fisher_z: bool = True,  # noqa: FBT001
    block_size: int = 65536,
) -> np.ndarray:
    """Correlation of seed time series with every voxel.

    Parameters
    ----------
    seed_timeseries : ndarray, shape (n_volumes,) or (n_volumes, n_seeds)
    voxel_timeseries : ndarray, shape (n_volumes, n_voxels)
    fisher_z : bool
        Return arctanh(r).
    block_size : int
        Voxels processed at a time (float64 work space n_volumes × block_size).

    Returns
    -------
    ndarray, shape (n_seeds, n_voxels)
        Pearson r (or its Fisher z): the nilearn tutorial's dot product of z-scored (ddof=1)
        series divided by n_volumes − 1. Voxels with zero variance get NaN, with a warning.
    """
    seed = np.asarray(seed_timeseries, dtype=np.float64)
    if seed.ndim == 1:
        seed = seed[:, None]
    vox = np.asarray(voxel_timeseries)
    if seed.ndim != 2 or vox.ndim != 2 or seed.shape[0] != vox.shape[0]:
        raise BadInputError(
            f"seed_to_voxel: seed {seed.shape} and voxels {vox.shape} must be (n_volumes, ...) "
            "with the same number of volumes"
        )
    n = seed.shape[0]
    if n < 3:
        raise BadInputError(f"seed_to_voxel: {n} volumes; at least 3 are needed")
    seed = seed - seed.mean(axis=0)
    seed_sd = np.sqrt((seed**2).sum(axis=0))
    if (seed_sd < np.finfo(np.float64).eps).any():
        raise BadInputError("seed_to_voxel: a seed time series is constant")
    seed /= seed_sd
    out = np.empty((seed.shape[1], vox.shape[1]), dtype=np.float64)
    n_dead = 0
    for start in range(0, vox.shape[1], block_size):
        cols = slice(start, min(start + block_size, vox.shape[1]))
        block = np.array(vox[:, cols], dtype=np.float64)
        block -= block.mean(axis=0)
        norm = np.sqrt((block**2).sum(axis=0))
        dead = norm < np.finfo(np.float64).eps * np.sqrt(n)
        n_dead += int(dead.sum())
        norm[dead] = np.nan
        out[:, cols] = (seed.T @ block) / norm
    if n_dead:
        warnings.warn(
            f"seed_to_voxel: {n_dead} voxel(s) have zero variance; their correlation is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    np.clip(out, -1.0, 1.0, out=out)
    if fisher_z:
        with np.errstate(divide="ignore"):
            np.arctanh(out, out=out)
    return out


def _check_names(names: Sequence[str], n: int) -> list[str]:
    names = [str(x) for x in names]
    if len(names) != n:
        raise BadInputError(f"ROI names: {len(names)} names for a {n} × {n} matrix")
    problems = []
    if len(set(names)) != len(names):
        problems.append(f"duplicated: {sorted({x for x in names if names.count(x) > 1})}")
    bad = [x for x in names if EDGE_SEPARATOR in x or not x]
    if bad:
        problems.append(f"empty or containing {EDGE_SEPARATOR!r}: {bad}")
    if problems:
        raise BadInputError("ROI names must be unique, non-empty and free of '__'", problems)
    return names


def fc_edges(matrix: np.ndarray, names: Sequence[str]) -> pd.Series:
    """Upper-triangle edges of a symmetric matrix, named ``<roiA>__<roiB>`` (names sorted).

    Parameters
    ----------
    matrix : ndarray, shape (n_rois, n_rois)
    names : sequence of str
        ROI names in the matrix's order.

    Returns
    -------
    Series
        One value per unordered ROI pair, indexed by edge name, in the order of the upper triangle
        of ``matrix`` (row-major).
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise BadInputError(f"fc_edges: expected a square matrix, got shape {m.shape}")
    names = _check_names(names, m.shape[0])
    rows, cols = np.triu_indices(m.shape[0], k=1)
    labels = [
        EDGE_SEPARATOR.join(sorted((names[i], names[j]))) for i, j in zip(rows, cols, strict=True)
    ]
    return pd.Series(m[rows, cols], index=pd.Index(labels, name="feature"), name="value")


def edges_to_matrix(
    edges: pd.Series, names: Sequence[str] | None = None, diagonal: float = 0.0
) -> pd.DataFrame:
    """Inverse of :func:`fc_edges`: a symmetric matrix from named edges.

    Parameters
    ----------
    edges : Series
        Values indexed by ``<roiA>__<roiB>``.
    names : sequence of str, optional
        Row/column order; default: the ROI names found in the edges, sorted.
    diagonal : float
        Value on the diagonal (0 for Fisher z, 1 for r).

    Returns
    -------
    DataFrame, shape (n_rois, n_rois)
        Index and columns are the ROI names. Pairs absent from ``edges`` are NaN.
    """
    pairs = [str(label).split(EDGE_SEPARATOR) for label in edges.index]
    bad = [lab for lab, p in zip(edges.index, pairs, strict=True) if len(p) != 2]
    if bad:
        raise BadInputError(f"edges_to_matrix: edge names must be '<roiA>__<roiB>'; got {bad[:5]}")
    found = sorted({x for p in pairs for x in p})
    names = found if names is None else _check_names(names, len(list(names)))
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise BadInputError(f"edges_to_matrix: edges name ROIs not in names: {unknown}")
    position = {x: i for i, x in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    i = np.array([position[a] for a, _ in pairs], dtype=int)
    j = np.array([position[b] for _, b in pairs], dtype=int)
    values = edges.to_numpy(dtype=float)
    m[i, j] = values
    m[j, i] = values
    np.fill_diagonal(m, diagonal)
    return pd.DataFrame(m, index=list(names), columns=list(names))


# --------------------------------------------------------------------------------------------
# Dynamic FC
# --------------------------------------------------------------------------------------------


def window_length_volumes(seconds: float, t_r: float) -> int:
    """Window length in volumes closest to ``seconds`` (at least 3).

    Parameters
    ----------
    seconds : float
        Window length in seconds (e.g. 44 s, Allen et al. 2014: 22 TR of 2 s).
    t_r : float
        Repetition time in seconds.
    """
    if not t_r or t_r <= 0 or seconds <= 0:
        raise BadInputError(f"window of {seconds} s at TR {t_r} s: both must be positive")
    volumes = int(np.floor(seconds / t_r + 0.5))
    if volumes < 3:
        raise BadInputError(
            f"window of {seconds} s at TR {t_r} s spans {volumes} volume(s); at least 3 are needed"
        )
    return volumes


def window_weights(window: int, taper: str = "rectangular", sigma: float = 3.0) -> np.ndarray:
    """Weights of the volumes inside one window.

    ``"gaussian"``: a rectangle of ``window`` volumes convolved with a Gaussian of SD ``sigma``
    volumes (Allen et al. 2014 use σ = 3 TR), restricted to the window; the weights are the
    discrete convolution ``w[t] = Σ_{s<window} exp(-(t - s)² / 2σ²)``, scaled to a maximum of 1.
    """
    if taper == "rectangular":
        return np.ones(window)
    if taper != "gaussian":
        raise BadInputError(f"taper={taper!r}: expected 'rectangular' or 'gaussian'")
    if sigma <= 0:
        raise BadInputError(f"sigma={sigma}: must be positive")
    t = np.arange(window)
    w = np.exp(-((t[:, None] - t[None, :]) ** 2) / (2.0 * sigma**2)).sum(axis=1)
    return w / w.max()


_pools: dict[int, ThreadPoolExecutor] = {}
# A forked child inherits the pools but not their threads: it starts its own.
os.register_at_fork(after_in_child=_pools.clear)


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """One pool per size, kept for the process: starting threads on every call costs ~0.2 ms."""
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="theramark-dfc")
    return _pools[threads]


# Below this many multiply-adds a call runs on one thread: starting threads would cost more.
_MIN_MACS_PER_THREAD = 1 << 24


def sliding_window_fc(
    timeseries: np.ndarray,
    window: int,
    step: int = 1,
    taper: str = "rectangular",
    *,
    keep: np.ndarray | None = None,
    min_kept: int | None = None,
    sigma: float = 3.0,
    dtype: type | np.dtype = np.float64,
    return_info: bool = False,
    max_chunk_bytes: int = 4 * 2**20,
    n_threads: int | None = None,
) -> np.ndarray | tuple[np.ndarray, pd.DataFrame]:
    """Sliding-window Pearson correlation (dynamic FC).

    Windows start at volumes ``0, step, 2·step, …`` as long as ``window`` volumes fit; there is
    no padding at the edges, so ``n_windows = (n_volumes − window) // step + 1``.

    Parameters
    ----------
    timeseries : ndarray, shape (n_volumes, n_rois)
        ROI time series on the full time grid (censored volumes still in place, flagged by
        ``keep``), so that windows keep their meaning in time.
    window : int
        Window length in volumes (see :func:`window_length_volumes`).
    step : int
        Shift between consecutive windows, in volumes.
    taper : {"rectangular", "gaussian"}
        Equal weights, or the Gaussian-tapered window of Allen et al. (2014) (weighted Pearson;
        see :func:`window_weights`).
    keep : ndarray of bool (n_volumes,) or int indices, optional
        Volumes to use (e.g. the sample mask from denoising). A window is computed on its kept
        volumes only; censored volumes get weight 0.
    min_kept : int, optional
        Fewest kept volumes a window needs; windows with fewer are all-NaN, counted in a warning
        and flagged in the info table. Default: ``max(3, ceil(window / 2))``.
    sigma : float
        SD of the Gaussian taper, in volumes.
    dtype : dtype
        Output dtype (``np.float32`` halves storage; arithmetic is float64).
    return_info : bool
        Also return a table ``start, stop, n_kept, valid`` (one row per window; stop exclusive).
    max_chunk_bytes : int
        Work-space bound per thread: windows are processed in chunks of about this many bytes.
    n_threads : int, optional
        Threads sharing the windows. Default: as many as BLAS may use here (threadpoolctl), so
        that a joblib worker limited to one BLAS thread stays on one core (small inputs run on
        one thread). The result does not depend on it, bit for bit.

    Returns
    -------
    windows : ndarray, shape (n_windows, n_rois, n_rois)
        Pearson r per window (diagonal 1).
    info : DataFrame, only with ``return_info``
    """
    x = _as_timeseries(timeseries)
    if x.ndim != 2:
        raise BadInputError("sliding_window_fc: expected (n_volumes, n_rois)")
    n_volumes, n_rois = x.shape
    window, step = int(window), int(step)
    if window < 3 or window > n_volumes:
        raise BadInputError(
            f"sliding_window_fc: window={window} volumes; expected 3 ≤ window ≤ n_volumes "
            f"({n_volumes})"
        )
    if step < 1:
        raise BadInputError(f"sliding_window_fc: step={step}; expected ≥ 1")
    if n_threads is not None and int(n_threads) < 1:
        raise BadInputError(f"sliding_window_fc: n_threads={n_threads}; expected ≥ 1")
    taper_w = window_weights(window, taper, sigma)
    kept = np.ones(n_volumes, dtype=bool)
    if keep is not None:
        keep = np.asarray(keep)
        if keep.dtype == bool:
            if keep.shape != (n_volumes,):
                raise BadInputError(
                    f"keep: boolean mask of shape {keep.shape}; expected ({n_volumes},)"
                )
            kept = keep.copy()
        else:
            if keep.size and (keep.min() < 0 or keep.max() >= n_volumes):
                raise BadInputError(f"keep: indices must lie in [0, {n_volumes - 1}]")
            kept = np.zeros(n_volumes, dtype=bool)
            kept[keep.astype(int)] = True
    if min_kept is None:
        min_kept = max(3, int(np.ceil(window / 2)))
    starts = np.arange(0, n_volumes - window + 1, step)
    n_windows = starts.size

    # (n_windows, window) weights: taper × kept flag.
    kept_w = kept[starts[:, None] + np.arange(window)[None, :]]
    n_kept = kept_w.sum(axis=1)
    valid = n_kept >= min_kept
    uniform = taper == "rectangular" and bool(kept.all())
    if uniform:
        # Window means from running sums of the globally centred series. Their rounding errors
        # change r only at second order (r is exact for any centring constant up to a term in
        # the square of the centring error), so the result keeps double precision.
        grand_mean = x.mean(axis=0)
        centred_sum = np.concatenate([np.zeros((1, n_rois)), np.cumsum(x - grand_mean, axis=0)])
        means = (centred_sum[starts + window] - centred_sum[starts]) / window + grand_mean
        root_weights = None
    else:
        weights = taper_w[None, :] * kept_w
        total = weights.sum(axis=1)
        total[total == 0] = np.nan
        means = None
        root_weights = np.sqrt(weights)

    out = np.empty((n_windows, n_rois, n_rois), dtype=dtype)
    per_window = window * n_rois * 8 + n_rois * n_rois * 8
    chunk = max(1, int(max_chunk_bytes // per_window))
    # (n_starts, window, n_rois) strided view: each chunk is read from it once.
    views = np.swapaxes(np.lib.stride_tricks.sliding_window_view(x, window, axis=0), 1, 2)
    diag = np.arange(n_rois)

    def process(first: int, last: int) -> None:
        """Windows ``first:last``, chunk by chunk, in one work space of this thread's own."""
        work = np.empty((min(chunk, last - first), window, n_rois))
        for begin in range(first, last, chunk):
            sel = slice(begin, min(begin + chunk, last))
            size = sel.stop - sel.start
            seg = views[starts[sel.start] : starts[sel.stop - 1] + 1 : step]
            centred = work[:size]
            if uniform:
                np.subtract(seg, means[sel, None, :], out=centred)
            else:
                w = weights[sel]
                mean = np.einsum("cw,cwr->cr", w, seg) / total[sel, None]
                np.subtract(seg, mean[:, None, :], out=centred)
                centred *= root_weights[sel, :, None]
            with np.errstate(divide="ignore"):
                inverse_norm = 1.0 / np.sqrt(np.einsum("cwr,cwr->cr", centred, centred))
            # A constant ROI in a window: 0 × inf = NaN, as Pearson r is undefined there.
            with np.errstate(invalid="ignore"):
                centred *= inverse_norm[:, None, :]
            # Written straight into the output when it is float64 (the output dominates memory
            # traffic). |r| may exceed 1 by an ulp; r_to_z clips before arctanh.
            target = out[sel] if out.dtype == np.float64 else None
            r = np.matmul(np.swapaxes(centred, 1, 2), centred, out=target)
            r[:, diag, diag] = 1.0
            invalid = ~valid[sel]
            if invalid.any():
                r[invalid] = np.nan
            if target is None:
                out[sel] = r

    if n_threads is None:
        macs = n_windows * window * n_rois * n_rois
        threads = min(blas_threads(), max(1, macs // _MIN_MACS_PER_THREAD))
    else:
        threads = int(n_threads)
    threads = min(threads, -(-n_windows // chunk))  # at least one chunk per thread
    if threads == 1:
        process(0, n_windows)
    else:
        # numpy releases the GIL in the products and ufuncs, so the threads run in parallel.
        bounds = np.linspace(0, n_windows, threads + 1).astype(int)
        pool = _thread_pool(threads)
        for job in [pool.submit(process, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]:
            job.result()
    if (~valid).any():
        warnings.warn(
            f"sliding_window_fc: {int((~valid).sum())} of {n_windows} windows have fewer than "
            f"{min_kept} kept volumes; they are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    if not return_info:
        return out
    info = pd.DataFrame(
        {"start": starts, "stop": starts + window, "n_kept": n_kept, "valid": valid}
    )
    return out, info


def dfc_variability(windows: np.ndarray, fisher_z: bool = True) -> np.ndarray:  # noqa: FBT001
    """Per-edge variability of windowed FC: SD (ddof=1) over windows.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_rois, n_rois)
        Windowed Pearson r (NaN windows are ignored).
    fisher_z : bool
        Take the SD of arctanh(r) (default) rather than of r.

    Returns
    -------
    ndarray, shape (n_rois, n_rois)
        Diagonal 0.
    """
    w = np.asarray(windows)
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise BadInputError(f"dfc_variability: expected (n_windows, n_rois, n_rois), got {w.shape}")
    n_rois = w.shape[1]
    # Work on the upper triangle only: half the memory traffic of the full stack, and the
    # float64 copy is made of the edges, not of the (n_windows, n_rois, n_rois) array.
    upper = np.triu_indices(n_rois, 1)
    edges = w[:, upper[0], upper[1]]
    valid = ~np.isnan(edges).all(axis=1) if edges.shape[1] else np.ones(len(w), dtype=bool)
    if valid.sum() < 2:
        raise BadInputError(
            f"dfc_variability: {int(valid.sum())} valid window(s); at least 2 are needed"
        )
    values = edges[valid].astype(np.float64, copy=False)
    if fisher_z:
        values = r_to_z(values)
    variability = np.zeros((n_rois, n_rois))
    sd = values.std(axis=0, ddof=1)
    variability[upper] = sd
    variability[upper[1], upper[0]] = sd
    return variability
