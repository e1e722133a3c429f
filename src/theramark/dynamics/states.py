"""Dynamic functional-connectivity states: windowed FC + k-means, and LEiDA.

Two feature spaces, one clustering engine:

- ``"kmeans"`` (Allen et al. 2014): sliding-window Pearson correlation of every series (rectangular
  or Gaussian-tapered windows, :func:`theramark.imaging.connectivity.sliding_window_fc`), Fisher z of
  the upper triangle as one vector per window. Clustering starts on *exemplars* — per series, the
  windows at local maxima of the across-edge variance of FC — and their centroids initialise the
  k-means of all windows.
- ``"leida"`` (Cabral et al. 2017): Hilbert phase of each standardized (optionally band-passed) ROI
  signal, phase coherence ``cos(θi − θj)`` per volume and its leading eigenvector, one per volume.
  The coherence matrix is ``c cᵀ + s sᵀ`` (``c = cos θ``, ``s = sin θ``), of rank 2, so its leading
  eigenvector is ``A u / ‖A u‖`` with ``A = [c, s]`` and ``u`` the leading eigenvector of the 2 × 2
  matrix ``AᵀA`` — exact, and computed for all volumes at once.

Distances: ``"euclidean"`` (scikit-learn :class:`~sklearn.cluster.KMeans`) or ``"cityblock"`` (L1,
as Allen et al. 2014), run as k-medians Lloyd iterations (assign by L1 distance, update to the
component-wise median, which minimises the summed L1 distance; MATLAB's ``kmeans`` does the same).

States of different fits (sessions, sites, k) are put in correspondence by :func:`match_states`
(Hungarian assignment on centroid correlation) and :meth:`StateFit.relabel`.

References
----------
Allen EA, Damaraju E, Plis SM, et al. (2014). Tracking whole-brain connectivity dynamics in the
resting state. Cerebral Cortex 24:663–676.
Cabral J, Vidaurre D, Marques P, et al. (2017). Cognitive performance in healthy older adults relates
to spontaneous switching between states of functional connectivity during rest. Scientific Reports
7:5135.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import signal
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from theramark._blas import blas_threads
from theramark.errors import BadInputError
from theramark.imaging.connectivity import sliding_window_fc

__all__ = [
    "StateFit",
    "centroid_correlation",
    "cluster_vectors",
    "exemplar_windows",
    "fit_features",
    "fit_states",
    "leading_eigenvectors",
    "match_states",
    "state_features",
    "subsample_rows",
    "window_vectors",
]

METHODS = ("kmeans", "leida")
DISTANCES = ("euclidean", "cityblock")
# |r| is clipped below 1 before Fisher z so that a window with a perfectly collinear pair stays finite.
_R_MAX = 1.0 - 1e-7
# Exemplars clustered by default (a seeded subsample when there are more), see fit_states.
MAX_EXEMPLARS = 5000
# Below this many multiply-adds per Lloyd iteration clustering runs on one thread.
_MIN_WORK_PER_THREAD = 1 << 24


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _check_series(series: Sequence[np.ndarray], min_volumes: int = 3) -> list[np.ndarray]:
    if isinstance(series, np.ndarray) and series.ndim == 2:
        raise BadInputError(
            "series: expected a list of (n_volumes, n_rois) arrays (one per run); got one 2-D array — "
            "wrap it in a list"
        )
    out = [np.asarray(s, dtype=np.float64) for s in series]
    if not out:
        raise BadInputError("series: empty list; at least one (n_volumes, n_rois) array is needed")
    n_rois = out[0].shape[-1] if out[0].ndim == 2 else None
    problems = []
    for i, s in enumerate(out):
        if s.ndim != 2:
            problems.append(f"series[{i}]: shape {s.shape}; expected (n_volumes, n_rois)")
        elif s.shape[1] != n_rois:
            problems.append(f"series[{i}]: {s.shape[1]} ROIs; series[0] has {n_rois}")
        elif s.shape[0] < min_volumes:
            problems.append(f"series[{i}]: {s.shape[0]} volumes; at least {min_volumes} are needed")
        elif not np.isfinite(s).all():
            problems.append(f"series[{i}]: holds NaN or infinite values")
    if problems:
        raise BadInputError("series: invalid time series", problems)
    if n_rois is None or n_rois < 2:
        raise BadInputError(f"series: {n_rois} ROI(s); at least 2 are needed")
    return out


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise BadInputError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------
def window_vectors(
    series: Sequence[np.ndarray],
    window: int = 30,
    step: int = 1,
    taper: str = "rectangular",
    sigma: float = 3.0,
    dtype: type | np.dtype = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Fisher-z upper-triangle FC vectors of every sliding window of every series.

    Parameters
    ----------
    series : list of ndarray, each (n_volumes, n_rois)
        ROI time series, one array per run.
    window : int
        Window length in volumes.
    step : int
        Shift between windows in volumes; windows start at ``0, step, …`` with no padding.
    taper : {"rectangular", "gaussian"}
        Window shape (see :func:`theramark.imaging.connectivity.window_weights`).
    sigma : float
        SD of the Gaussian taper, in volumes.
    dtype : dtype
        Dtype of the vectors (float32 halves memory; correlations are computed in float64).

    Returns
    -------
    vectors : ndarray, shape (n_windows_total, n_rois (n_rois − 1) / 2)
        ``arctanh(r)`` of the upper triangle (row-major ``np.triu_indices(n_rois, 1)`` order), the
        windows of series 0 first.
    lengths : ndarray of int, shape (n_series,)
        Windows per series: ``(n_volumes − window) // step + 1``.
    """
    xs = _check_series(series)
    window, step = int(window), int(step)
    short = [f"series[{i}]: {len(x)} volumes" for i, x in enumerate(xs) if len(x) < window]
    if window < 3 or short:
        raise BadInputError(f"window={window} volumes: expected 3 ≤ window ≤ n_volumes", short)
    if step < 1:
        raise BadInputError(f"step={step}: expected ≥ 1")
    n_rois = xs[0].shape[1]
    iu = np.triu_indices(n_rois, 1)
    lengths = np.array([(len(x) - window) // step + 1 for x in xs])
    out = np.empty((int(lengths.sum()), iu[0].size), dtype=dtype)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for i, x in enumerate(xs):
        fc = sliding_window_fc(x, window, step, taper, sigma=sigma)
        edges = fc[:, iu[0], iu[1]]
        if np.isnan(edges).any():
            raise BadInputError(
                f"series[{i}]: a window has a constant ROI (Pearson r undefined); remove or fix the "
                "flat ROI signal"
            )
        np.clip(edges, -_R_MAX, _R_MAX, out=edges)
        out[offsets[i] : offsets[i + 1]] = np.arctanh(edges)
    return out, lengths


def leading_eigenvectors(
    series: np.ndarray,
    t_r: float | None = None,
    band: tuple[float, float] | None = None,
    filter_order: int = 2,
) -> np.ndarray:
    """Leading eigenvector of the BOLD phase-coherence matrix at every volume (LEiDA).

    Parameters
    ----------
    series : ndarray, shape (n_volumes, n_rois)
        One run's ROI time series.
    t_r : float, optional
        Repetition time in seconds; needed with ``band``.
    band : (low, high), optional
        Band-pass in Hz (e.g. ``(0.02, 0.1)``, Cabral et al. 2017) applied before the Hilbert
        transform (zero-phase Butterworth, ``scipy.signal.sosfiltfilt``).
    filter_order : int
        Butterworth order.

    Returns
    -------
    ndarray, shape (n_volumes, n_rois)
        Unit leading eigenvectors of ``P_t[i, j] = cos(θ_i(t) − θ_j(t))``, signed so that most
        elements are negative (ties: the side with the larger summed magnitude is negative).

    Notes
    -----
    Each signal is standardized (mean 0, SD 1), optionally band-passed, and its instantaneous phase
    is ``angle(hilbert(x))``. ``P_t = c cᵀ + s sᵀ`` has rank ≤ 2, so the leading eigenvector comes
    from the 2 × 2 matrix ``AᵀA`` (``A = [c, s]``) in closed form: the same vector as
    ``numpy.linalg.eigh(P_t)``, without a per-volume decomposition. Edge volumes carry the Hilbert
    transform's edge effects; drop them downstream if needed.
    """
    x = np.asarray(series, dtype=np.float64)
    sd = x.std(axis=0)
    if (sd == 0).any():
        raise BadInputError(f"leading_eigenvectors: ROI(s) {np.flatnonzero(sd == 0).tolist()} are constant")
    x = (x - x.mean(axis=0)) / sd
    if band is not None:
        if t_r is None or t_r <= 0:
            raise BadInputError("leading_eigenvectors: band-pass needs a positive t_r (seconds)")
        low, high = band
        nyquist = 0.5 / t_r
        if not 0 < low < high < nyquist:
            raise BadInputError(
                f"band={band} Hz: expected 0 < low < high < Nyquist ({nyquist:.4g} Hz at TR {t_r} s)"
            )
        sos = signal.butter(filter_order, [low, high], btype="band", fs=1.0 / t_r, output="sos")
        x = signal.sosfiltfilt(sos, x, axis=0)
    theta = np.angle(signal.hilbert(x, axis=0))
    c, s = np.cos(theta), np.sin(theta)
    a = np.einsum("tr,tr->t", c, c)
    d = np.einsum("tr,tr->t", s, s)
    b = np.einsum("tr,tr->t", c, s)
    half = 0.5 * (a - d)
    lam = 0.5 * (a + d) + np.sqrt(half**2 + b**2)
    # Of the two equivalent forms of the 2 × 2 eigenvector, take the one with the larger entries.
    use_first = a >= d
    u1 = np.where(use_first, lam - d, b)
    u2 = np.where(use_first, b, lam - a)
    degenerate = (np.abs(u1) + np.abs(u2)) == 0
    u1 = np.where(degenerate, 1.0, u1)
    v = c * u1[:, None] + s * u2[:, None]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return _leida_sign(v)


def _leida_sign(v: np.ndarray) -> np.ndarray:
    """Flip rows so that most elements are negative (ties: larger positive mass is flipped)."""
    n = v.shape[1]
    n_pos = (v > 0).sum(axis=1)
    pos_mass = np.where(v > 0, v, 0.0).sum(axis=1)
    neg_mass = -np.where(v < 0, v, 0.0).sum(axis=1)
    flip = (2 * n_pos > n) | ((2 * n_pos == n) & (pos_mass > neg_mass))
    return np.where(flip[:, None], -v, v)


def state_features(
    series: Sequence[np.ndarray],
    method: str = "kmeans",
    window: int = 30,
    step: int = 1,
    *,
    taper: str = "rectangular",
    sigma: float = 3.0,
    t_r: float | None = None,
    band: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors that :func:`fit_states` clusters, and how many come from each series.

    ``"kmeans"``: :func:`window_vectors` (float32). ``"leida"``: :func:`leading_eigenvectors` of
    every volume (``window``/``step`` unused). Computing them once lets :mod:`.selection` try many k.
    """
    _check_choice("method", method, METHODS)
    if method == "kmeans":
        return window_vectors(series, window, step, taper, sigma)
    xs = _check_series(series)
    vectors = [leading_eigenvectors(x, t_r=t_r, band=band) for x in xs]
    return np.concatenate(vectors), np.array([len(v) for v in vectors])


def exemplar_windows(
    vectors: np.ndarray,
    lengths: np.ndarray,
    max_exemplars: int | None = None,
    random_state: int | None = 0,
) -> np.ndarray:
    """Indices of the windows at local maxima of the across-edge FC variance, per series.

    Allen et al. (2014) cluster these exemplars first (about 8 per participant there). A window is
    a local maximum when its variance exceeds the previous window's and is at least the next
    one's; a series without an interior maximum contributes its highest-variance window.

    Parameters
    ----------
    vectors : ndarray, shape (n_windows_total, n_features)
        Window vectors of all series, series after series (:func:`window_vectors`).
    lengths : ndarray of int, shape (n_series,)
        Windows per series.
    max_exemplars : int, optional
        Keep at most this many exemplars: a seeded uniform subsample without replacement (all of
        them when None or when there are fewer).
    random_state : int or None
        Seed of the subsample.

    Returns
    -------
    ndarray of int
        Sorted row indices into ``vectors``.
    """
    # In row chunks: a float64 temporary of all windows would double the memory of the features.
    chunk = max(1, (32 * 2**20) // max(1, 8 * vectors.shape[1]))
    variance = np.concatenate(
        [vectors[i : i + chunk].var(axis=1, dtype=np.float64) for i in range(0, len(vectors), chunk)]
    ) if len(vectors) else np.zeros(0)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    series_id = np.repeat(np.arange(len(lengths)), lengths)
    prev_same = np.r_[False, series_id[1:] == series_id[:-1]]
    next_same = np.r_[series_id[:-1] == series_id[1:], False]
    prev = np.r_[np.inf, variance[:-1]]
    nxt = np.r_[variance[1:], -np.inf]
    peak = prev_same & next_same & (variance > prev) & (variance >= nxt)
    has_peak = np.bincount(series_id[peak], minlength=len(lengths)) > 0
    missing = np.flatnonzero(~has_peak & (lengths > 0))
    extra = [offsets[i] + int(np.argmax(variance[offsets[i] : offsets[i + 1]])) for i in missing]
    found = np.sort(np.concatenate([np.flatnonzero(peak), np.asarray(extra, dtype=int)]))
    return subsample_rows(found, max_exemplars, random_state)


def subsample_rows(rows: np.ndarray, max_rows: int | None, random_state: int | None = 0) -> np.ndarray:
    """``rows`` itself, or a seeded sorted subsample of ``max_rows`` of them without replacement."""
    rows = np.asarray(rows, dtype=np.int64)
    if max_rows is None or len(rows) <= int(max_rows):
        return rows
    if int(max_rows) < 1:
        raise BadInputError(f"max_exemplars={max_rows}: expected ≥ 1 (or None for all exemplars)")
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(rows, size=int(max_rows), replace=False))


# --------------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------------
def _l1_distances(x: np.ndarray, centroids: np.ndarray, max_bytes: int = 64 * 2**20) -> np.ndarray:
    """(n, k) L1 distances, in row chunks that bound the (chunk, k, d) work space."""
    n, d = x.shape
    k = len(centroids)
    out = np.empty((n, k))
    chunk = max(1, int(max_bytes // max(1, k * d * x.itemsize)))
    for begin in range(0, n, chunk):
        part = x[begin : begin + chunk]
        out[begin : begin + chunk] = np.abs(part[:, None, :] - centroids[None, :, :]).sum(axis=2)
    return out


def _kmedians(
    x: np.ndarray, init: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Lloyd iterations under L1: assign to the nearest centroid, move it to the cluster median."""
    centroids = np.array(init, dtype=x.dtype, copy=True)
    k = len(centroids)
    labels = np.full(len(x), -1)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        dist = _l1_distances(x, centroids)
        new = dist.argmin(axis=1)
        counts = np.bincount(new, minlength=k)
        if (counts == 0).any():
            # An empty cluster takes the point farthest from its own centroid.
            nearest = dist[np.arange(len(x)), new]
            for empty in np.flatnonzero(counts == 0):
                far = int(np.argmax(nearest))
                new[far] = empty
                nearest[far] = -np.inf
        if np.array_equal(new, labels):
            break
        labels = new
        centroids = np.stack([np.median(x[labels == j], axis=0) for j in range(k)]).astype(x.dtype)
    dist = _l1_distances(x, centroids)
    labels = dist.argmin(axis=1)
    inertia = float(dist[np.arange(len(x)), labels].sum())
    return labels, centroids, inertia, n_iter


def _kmedians_multi(
    x: np.ndarray, k: int, n_init: int, rng: np.random.Generator, max_iter: int
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Best of ``n_init`` k-medians runs from k distinct random points."""
    best = None
    for _ in range(n_init):
        init = x[rng.choice(len(x), size=k, replace=False)]
        run = _kmedians(x, init, max_iter)
        if best is None or run[2] < best[2]:
            best = run
    return best


def cluster_vectors(
    vectors: np.ndarray,
    n_states: int,
    distance: str = "euclidean",
    *,
    init: np.ndarray | None = None,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """k-means (euclidean, scikit-learn) or k-medians (cityblock) of the rows of ``vectors``.

    With ``init`` (k, d) one run starts from those centroids (``n_init`` is ignored); otherwise the
    best of ``n_init`` runs (k-means++ for euclidean, k distinct random rows for cityblock). ``tol``
    is scikit-learn's: the centroid shift, relative to the mean per-feature variance, below which
    the euclidean iterations stop (k-medians stops when no label changes).

    Returns ``labels (n,), centroids (k, d), inertia, n_iter``; inertia is the within-cluster sum
    of squared euclidean distances, or of L1 distances for cityblock.
    """
    _check_choice("distance", distance, DISTANCES)
    if not 1 <= n_states <= len(vectors):
        raise BadInputError(f"n_states={n_states}: expected 1 ≤ n_states ≤ {len(vectors)} (vectors)")
    if distance == "euclidean":
        if init is None:
            km = KMeans(n_states, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state)
        else:
            km = KMeans(n_states, init=np.asarray(init, dtype=vectors.dtype), n_init=1,
                        max_iter=max_iter, tol=tol, random_state=random_state)
        # scikit-learn's OpenMP threads cost far more than they save on small problems (seconds
        # instead of milliseconds on a busy machine); a joblib worker's one-thread limit also holds.
        small = vectors.shape[0] * vectors.shape[1] * n_states < _MIN_WORK_PER_THREAD
        with threadpool_limits(1 if small else blas_threads(), user_api="openmp"):
            km.fit(vectors)
        return km.labels_.astype(np.int64), km.cluster_centers_, float(km.inertia_), int(km.n_iter_)
    if init is not None:
        return _kmedians(vectors, init, max_iter)
    return _kmedians_multi(vectors, n_states, n_init, np.random.default_rng(random_state), max_iter)


# --------------------------------------------------------------------------------------------
# Matching states across fits
# --------------------------------------------------------------------------------------------
def _as_state_vectors(centroids: np.ndarray, name: str) -> np.ndarray:
    c = np.asarray(centroids, dtype=np.float64)
    if c.ndim == 3:
        if c.shape[1] != c.shape[2]:
            raise BadInputError(f"{name}: expected (n_states, n_rois, n_rois), got {c.shape}")
        iu = np.triu_indices(c.shape[1], 1)
        return c[:, iu[0], iu[1]]
    if c.ndim != 2:
        raise BadInputError(f"{name}: expected (n_states, n_rois, n_rois) or (n_states, n_features)")
    return c


def centroid_correlation(reference_centroids: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Pearson r between every reference and every other centroid, (n_ref, n) — upper triangles
    of matrices, or the vectors themselves for 2-D input."""
    a = _as_state_vectors(reference_centroids, "reference_centroids")
    b = _as_state_vectors(centroids, "centroids")
    if a.shape[1] != b.shape[1]:
        raise BadInputError(
            f"centroids have {b.shape[1]} features; reference_centroids have {a.shape[1]}"
        )
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def match_states(reference_centroids: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Order of ``centroids`` that best matches ``reference_centroids`` (Hungarian assignment).

    Parameters
    ----------
    reference_centroids : ndarray, (n_ref, n_rois, n_rois) or (n_ref, n_features)
        States whose labels are to be kept.
    centroids : ndarray, (n, n_rois, n_rois) or (n, n_features)
        States to relabel (another session, site, half of the sample or k).

    Returns
    -------
    permutation : ndarray of int, shape (n,)
        ``centroids[permutation]`` is in reference order: ``permutation[i]`` is the state matched
        to reference state ``i`` (maximising the summed Pearson correlation of the centroids'
        upper triangles, ``scipy.optimize.linear_sum_assignment``). With ``n > n_ref`` the
        unmatched states follow in their original order; with ``n < n_ref`` the states are
        ordered by the reference state they matched.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).standard_normal((3, 10))
    >>> match_states(ref, ref[[2, 0, 1]]).tolist()
    [1, 2, 0]
    """
    r = centroid_correlation(reference_centroids, centroids)
    rows, cols = linear_sum_assignment(r, maximize=True)
    order = cols[np.argsort(rows)]
    rest = np.setdiff1d(np.arange(r.shape[1]), order)
    return np.concatenate([order, rest]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateFit:
    """Result of :func:`fit_states`.

    Attributes
    ----------
    labels : list of ndarray of int
        One array per series: a state per window (``"kmeans"``: ``(n_volumes − window) // step + 1``
        windows) or per volume (``"leida"``).
    centroids : ndarray, shape (n_states, n_rois, n_rois)
        ``"kmeans"``: the centroid's Fisher-z FC matrix (diagonal 0). ``"leida"``: the outer product
        ``v vᵀ`` of the centroid eigenvector.
    centroid_vectors : ndarray, shape (n_states, n_features)
        The centroids in the clustered space: Fisher-z edges (upper triangle) or eigenvectors
        (``n_features = n_rois``).
    method, distance : str
    window, step : int
        Window length and step in volumes (``"leida"``: 1 and 1, a state per volume).
    inertia : float
        Within-cluster sum of squared (euclidean) or absolute (cityblock) distances.
    n_iter : int
        Iterations of the final clustering.
    """

    labels: list[np.ndarray]
    centroids: np.ndarray
    centroid_vectors: np.ndarray
    method: str
    distance: str
    window: int
    step: int
    inertia: float
    n_iter: int

    @property
    def n_states(self) -> int:
        return len(self.centroid_vectors)

    def relabel(self, permutation: np.ndarray) -> StateFit:
        """The same fit with state ``permutation[i]`` renamed ``i`` (see :func:`match_states`)."""
        perm = np.asarray(permutation, dtype=np.int64)
        if sorted(perm.tolist()) != list(range(self.n_states)):
            raise BadInputError(
                f"permutation {perm.tolist()}: expected a permutation of 0..{self.n_states - 1}"
            )
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(perm.size)
        return replace(
            self,
            labels=[inverse[lab] for lab in self.labels],
            centroids=self.centroids[perm],
            centroid_vectors=self.centroid_vectors[perm],
        )

    def match_to(self, reference_centroids: np.ndarray) -> StateFit:
        """Relabel so that state ``i`` is the one matching reference state ``i`` (:func:`match_states`)."""
        return self.relabel(match_states(reference_centroids, self.centroids))


def _vectors_to_matrices(vectors: np.ndarray, n_rois: int, method: str) -> np.ndarray:
    if method == "leida":
        return np.einsum("ki,kj->kij", vectors, vectors)
    iu = np.triu_indices(n_rois, 1)
    m = np.zeros((len(vectors), n_rois, n_rois))
    m[:, iu[0], iu[1]] = vectors
    m[:, iu[1], iu[0]] = vectors
    return m


def _n_rois_from_edges(n_edges: int) -> int:
    return int(round((1 + np.sqrt(1 + 8 * n_edges)) / 2))


def fit_features(
    vectors: np.ndarray,
    lengths: np.ndarray,
    n_states: int,
    method: str = "kmeans",
    *,
    distance: str = "euclidean",
    exemplars: bool = True,
    max_exemplars: int | None = MAX_EXEMPLARS,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | None = 0,
    window: int = 30,
    step: int = 1,
) -> StateFit:
    """:func:`fit_states` on features already computed by :func:`state_features`."""
    _check_choice("method", method, METHODS)
    n_states = int(n_states)
    init = None
    if method == "kmeans" and exemplars:
        ex = vectors[exemplar_windows(vectors, lengths, max_exemplars, random_state)]
        if len(ex) >= n_states:
            _, init, _, _ = cluster_vectors(
                ex, n_states, distance, n_init=n_init, max_iter=max_iter, tol=tol,
                random_state=random_state,
            )
    labels, cvec, inertia, n_iter = cluster_vectors(
        vectors, n_states, distance, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
        random_state=random_state,
    )
    cvec = np.asarray(cvec, dtype=np.float64)
    n_rois = cvec.shape[1] if method == "leida" else _n_rois_from_edges(cvec.shape[1])
    offsets = np.cumsum(lengths)[:-1]
    return StateFit(
        labels=np.split(labels.astype(np.int64), offsets),
        centroids=_vectors_to_matrices(cvec, n_rois, method),
        centroid_vectors=cvec,
        method=method,
        distance=distance,
        window=window if method == "kmeans" else 1,
        step=step if method == "kmeans" else 1,
        inertia=inertia,
        n_iter=n_iter,
    )


def fit_states(
    series: Sequence[np.ndarray],
    n_states: int,
    method: str = "kmeans",
    window: int = 30,
    step: int = 1,
    random_state: int | None = 0,
    *,
    distance: str = "euclidean",
    taper: str = "rectangular",
    sigma: float = 3.0,
    exemplars: bool = True,
    max_exemplars: int | None = MAX_EXEMPLARS,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    t_r: float | None = None,
    band: tuple[float, float] | None = None,
    reference: np.ndarray | None = None,
) -> StateFit:
    """Recurring dynamic-FC states of a set of ROI time series.

    Parameters
    ----------
    series : list of ndarray, each (n_volumes, n_rois)
        ROI time series (standardized after denoising), one per run; all share the ROIs. Cluster
        all participants and sessions together so that the states are common to them.
    n_states : int
        Number of states k (see :func:`theramark.dynamics.selection.select_n_states`).
    method : {"kmeans", "leida"}
        Windowed FC + k-means (Allen et al. 2014) or leading eigenvectors of phase coherence
        (Cabral et al. 2017).
    window, step : int
        Window length and step in volumes (``"kmeans"`` only).
    random_state : int or None
        Seed of the k-means initialisations.
    distance : {"euclidean", "cityblock"}
        k-means (scikit-learn) or L1 k-medians.
    taper, sigma : str, float
        Window shape and the Gaussian taper's SD in volumes (``"kmeans"``).
    exemplars : bool
        ``"kmeans"``: cluster the exemplar windows first (:func:`exemplar_windows`) and start the
        k-means of all windows from their centroids (one run, ``max_iter`` iterations at most,
        stopping at ``tol``); otherwise best of ``n_init`` runs on all windows.
    max_exemplars : int or None
        ``"kmeans"`` with exemplars: cluster at most this many exemplars, a seeded random subsample
        (default 5000; about 19 % of all windows are exemplars at window 30, 14,000 for 200
        participants × 400 volumes, and the centroids of 5000 are as good a start). None: all.
    n_init, max_iter : int
        Initialisations (k-means++) of the first clustering (exemplars, or all windows) and the
        iterations of each clustering. Three restarts reached the same inertia as ten on 4,300
        exemplars (k = 8) in 2.8× less time, and the restarts dominate the cost of k selection.
    tol : float
        Convergence tolerance of the euclidean k-means (scikit-learn's, relative to the data's
        variance).
    t_r, band : float, (float, float)
        ``"leida"``: TR in seconds and an optional band-pass in Hz.
    reference : ndarray, optional
        Centroids (n_states, n_rois, n_rois) of an earlier fit: states are relabelled to match
        them (:func:`match_states`), so a state keeps its label across sessions, sites and k.

    Returns
    -------
    StateFit
        ``.labels`` (one int array per series), ``.centroids`` (n_states, n_rois, n_rois) and more.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fit = fit_states([rng.standard_normal((100, 5)) for _ in range(3)], 2, window=20)
    >>> [len(lab) for lab in fit.labels], fit.centroids.shape
    ([81, 81, 81], (2, 5, 5))
    """
    vectors, lengths = state_features(
        series, method, window, step, taper=taper, sigma=sigma, t_r=t_r, band=band
    )
    if not 1 <= int(n_states) <= len(vectors):
        raise BadInputError(f"n_states={n_states}: expected 1 ≤ n_states ≤ {len(vectors)} (the windows)")
    fit = fit_features(
        vectors, lengths, n_states, method, distance=distance, exemplars=exemplars,
        max_exemplars=max_exemplars, n_init=n_init, max_iter=max_iter, tol=tol,
        random_state=random_state, window=window, step=step,
    )
    if reference is not None:
        fit = fit.match_to(reference)
    return fit
