"""Choosing the number of dynamic-FC states k.

For each k of a range, from features computed once (:func:`~theramark.dynamics.states.state_features`):

- ``inertia``: within-cluster sum of squares (L1 distances for cityblock), for an elbow plot;
- ``silhouette``: mean silhouette on a seeded subsample of the clustered vectors (the full score is
  quadratic in their number);
- ``split_half_r``: reproducibility — the series are split at random into two halves (a
  participant's series stay together when ``groups`` is given), states are fitted on each half,
  Hungarian-matched (:func:`~theramark.dynamics.states.match_states`), and the matched centroids'
  correlations are averaged (``split_half_r_min``: the least reproducible state).

Which vectors are clustered (``windows``): by default, for ``"kmeans"``, the *exemplar* windows
(local maxima of FC variance, :func:`~theramark.dynamics.states.exemplar_windows`), as Allen et al.
(2014) chose k — the elbow of the exemplars' clustering, and split halves from the exemplars of each
half of the participants. That is the first stage of :func:`~theramark.dynamics.states.fit_states`,
whose centroids start the final k-means of all windows; ``windows="all"`` clusters every window
instead (three full fits per k: many times slower on large samples). LEiDA has no exemplars and
always clusters every volume's eigenvector.

No single criterion decides k (Allen et al. 2014 used the elbow; reproducibility across halves
protects against states that one sample alone produces).

References
----------
Allen EA, Damaraju E, Plis SM, et al. (2014). Tracking whole-brain connectivity dynamics in the
resting state. Cerebral Cortex 24:663–676.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import silhouette_score

from theramark.dynamics.states import (
    DISTANCES,
    MAX_EXEMPLARS,
    METHODS,
    centroid_correlation,
    cluster_vectors,
    exemplar_windows,
    fit_features,
    match_states,
    state_features,
    subsample_rows,
)
from theramark.errors import BadInputError

__all__ = ["select_n_states", "split_half_reproducibility"]

WINDOWS = ("exemplars", "all")


def _halves(
    n_series: int, groups: Sequence | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Series indices of two random halves of the units (participants if ``groups`` is given)."""
    if groups is None:
        units = np.arange(n_series)
    else:
        if len(groups) != n_series:
            raise BadInputError(f"groups: {len(groups)} labels for {n_series} series")
        _, units = np.unique(np.asarray(groups), return_inverse=True)
    n_units = int(units.max()) + 1
    if n_units < 2:
        raise BadInputError("split-half reproducibility needs at least 2 participants (series)")
    order = rng.permutation(n_units)
    first = np.isin(units, order[: n_units // 2])
    return np.flatnonzero(first), np.flatnonzero(~first)


def _subset(vectors: np.ndarray, lengths: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in which])
    return vectors[rows], lengths[which]


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise BadInputError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def _exemplar_sets(
    vectors: np.ndarray,
    lengths: np.ndarray,
    groups: Sequence | None,
    max_exemplars: int | None,
    random_state: int | None,
    halves: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Row indices of the exemplars used for k (the same subsample as ``fit_features``'s first stage),
    and those of the two participant halves (each at most ``max_exemplars // 2``) when asked."""
    full = exemplar_windows(vectors, lengths, max_exemplars, random_state)
    if not halves:
        return full, None, None
    every = exemplar_windows(vectors, lengths)
    series_of = np.searchsorted(np.cumsum(lengths), every, side="right")
    a, b = _halves(len(lengths), groups, np.random.default_rng(random_state))
    cap = None if max_exemplars is None else max(1, int(max_exemplars) // 2)
    rows = [subsample_rows(every[np.isin(series_of, half)], cap, random_state) for half in (a, b)]
    return full, rows[0], rows[1]


def _matched_r(c_a: np.ndarray, c_b: np.ndarray) -> np.ndarray:
    perm = match_states(c_a, c_b)
    return np.diag(centroid_correlation(c_a, c_b[perm]))


def split_half_reproducibility(
    vectors: np.ndarray,
    lengths: np.ndarray,
    n_states: int,
    method: str = "kmeans",
    *,
    groups: Sequence | None = None,
    random_state: int | None = 0,
    windows: str = "exemplars",
    max_exemplars: int | None = MAX_EXEMPLARS,
    **fit_kwargs,
) -> np.ndarray:
    """Correlation of each state's centroid between fits on two random halves of the series.

    Parameters
    ----------
    vectors, lengths : ndarray
        Features and windows per series (:func:`~theramark.dynamics.states.state_features`).
    n_states : int
    method : {"kmeans", "leida"}
    groups : sequence, optional
        Participant of each series, so that a participant's series fall in the same half.
    random_state : int or None
        Seed of the split, the exemplar subsamples and the clusterings.
    windows : {"exemplars", "all"}
        ``"kmeans"``: cluster the exemplar windows of each half (at most ``max_exemplars // 2``
        each, seeded), or fit every window of each half (:func:`fit_features`). LEiDA: all.
    max_exemplars : int or None
        Cap on the exemplars of both halves together (None: all exemplars).
    **fit_kwargs
        ``distance``, ``n_init``, ``max_iter``, ``tol`` (and, with ``windows="all"``, any other
        argument of :func:`~theramark.dynamics.states.fit_features`).

    Returns
    -------
    ndarray, shape (n_states,)
        Pearson r of matched centroids (first half's state order).
    """
    _check("windows", windows, WINDOWS)
    _check("method", method, METHODS)
    if windows == "exemplars" and method == "kmeans":
        _, a, b = _exemplar_sets(vectors, lengths, groups, max_exemplars, random_state, halves=True)
        keys = ("distance", "n_init", "max_iter", "tol")
        opts = {key: fit_kwargs[key] for key in keys if key in fit_kwargs}
        cents = []
        for rows in (a, b):
            if len(rows) < n_states:
                raise BadInputError(
                    f"n_states={n_states}: a half of the series has only {len(rows)} exemplar windows; "
                    "use fewer states or windows='all'"
                )
            cents.append(cluster_vectors(vectors[rows], n_states, random_state=random_state, **opts)[1])
        return _matched_r(*cents)
    fit_kwargs.setdefault("max_exemplars", max_exemplars)
    rng = np.random.default_rng(random_state)
    a, b = _halves(len(lengths), groups, rng)
    fits = []
    for half in (a, b):
        v, n = _subset(vectors, lengths, half)
        fits.append(fit_features(v, n, n_states, method, random_state=random_state, **fit_kwargs))
    return _matched_r(fits[0].centroids, fits[1].centroids)


def select_n_states(
    series: Sequence[np.ndarray],
    k_range: Iterable[int] = range(2, 11),
    method: str = "kmeans",
    window: int = 30,
    step: int = 1,
    random_state: int | None = 0,
    *,
    distance: str = "euclidean",
    taper: str = "rectangular",
    sigma: float = 3.0,
    windows: str = "exemplars",
    exemplars: bool = True,
    max_exemplars: int | None = MAX_EXEMPLARS,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    t_r: float | None = None,
    band: tuple[float, float] | None = None,
    silhouette_samples: int = 2000,
    split_half: bool = True,
    groups: Sequence | None = None,
) -> pd.DataFrame:
    """Criteria for the number of states, one row per k.

    Parameters
    ----------
    series : list of ndarray, each (n_volumes, n_rois)
    k_range : iterable of int
        Numbers of states to try (each ≥ 2).
    method, window, step, random_state, distance, taper, sigma, t_r, band
        As in :func:`~theramark.dynamics.states.fit_states`.
    windows : {"exemplars", "all"}
        ``"kmeans"``: compute the criteria on the exemplar windows (default; Allen et al. 2014) —
        the clustering of the exemplars is the first stage of ``fit_states``, and each split half
        clusters the exemplars of its participants — or on all windows (``fit_states`` on all
        windows per k and per half). LEiDA always uses every volume. When a k exceeds the
        exemplars (of a split half), a warning is issued and all windows are used.
    exemplars : bool
        With ``windows="all"``: start each fit from the exemplars' centroids (as ``fit_states``).
    max_exemplars : int or None
        At most this many exemplars (a seeded subsample; both halves together get as many).
    n_init, max_iter, tol
        Initialisations, iterations and tolerance of each clustering.
    silhouette_samples : int
        Vectors drawn (seeded) for the silhouette; all of them if fewer.
    split_half : bool
        Compute split-half reproducibility (two more clusterings per k).
    groups : sequence, optional
        Participant of each series, so that a participant's series fall in the same half.

    Returns
    -------
    DataFrame with columns ``k, inertia, silhouette, split_half_r, split_half_r_min, n_iter``
        (``split_half_*`` NaN when ``split_half=False``). ``inertia`` and ``silhouette`` are those of
        the clustered vectors (the exemplars by default), ``n_iter`` the iterations of that clustering.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> xs = [rng.standard_normal((80, 5)) for _ in range(4)]
    >>> select_n_states(xs, [2, 3], window=20).columns.tolist()
    ['k', 'inertia', 'silhouette', 'split_half_r', 'split_half_r_min', 'n_iter']
    """
    ks = [int(k) for k in k_range]
    if not ks or min(ks) < 2:
        raise BadInputError(f"k_range={ks}: expected numbers of states ≥ 2")
    _check("windows", windows, WINDOWS)
    _check("method", method, METHODS)
    _check("distance", distance, DISTANCES)
    vectors, lengths = state_features(
        series, method, window, step, taper=taper, sigma=sigma, t_r=t_r, band=band
    )
    on_exemplars = windows == "exemplars" and method == "kmeans"
    rows_a = rows_b = None
    if on_exemplars:
        rows_full, rows_a, rows_b = _exemplar_sets(
            vectors, lengths, groups, max_exemplars, random_state, halves=split_half
        )
        fewest = min(len(r) for r in (rows_full, rows_a, rows_b) if r is not None)
        if max(ks) > fewest:
            # Too few exemplars to cluster every k (a small sample): the criteria use all windows.
            warnings.warn(
                f"select_n_states: k up to {max(ks)} but only {fewest} exemplar windows (in the "
                "smaller split half); computing the criteria on all windows", UserWarning, stacklevel=2,
            )
            on_exemplars = False
    clustered = vectors[rows_full] if on_exemplars else vectors
    cluster_opts = {"distance": distance, "n_init": n_init, "max_iter": max_iter, "tol": tol,
                    "random_state": random_state}
    fit_kwargs = {"distance": distance, "exemplars": exemplars, "max_exemplars": max_exemplars,
                  "n_init": n_init, "max_iter": max_iter, "tol": tol, "window": window, "step": step}
    rng = np.random.default_rng(random_state)
    sample = None
    if len(clustered) > silhouette_samples:
        sample = np.sort(rng.choice(len(clustered), size=int(silhouette_samples), replace=False))
    metric = "manhattan" if distance == "cityblock" else "euclidean"
    out = []
    for k in ks:
        if on_exemplars:
            labels, _, inertia, n_iter = cluster_vectors(clustered, k, **cluster_opts)
        else:
            fit = fit_features(vectors, lengths, k, method, random_state=random_state, **fit_kwargs)
            labels, inertia, n_iter = np.concatenate(fit.labels), fit.inertia, fit.n_iter
        x, lab = (clustered, labels) if sample is None else (clustered[sample], labels[sample])
        sil = float(silhouette_score(x, lab, metric=metric)) if 1 < np.unique(lab).size < len(lab) else np.nan
        r = np.full(k, np.nan)
        if split_half and on_exemplars:
            r = _matched_r(*(cluster_vectors(vectors[rows], k, **cluster_opts)[1]
                             for rows in (rows_a, rows_b)))
        elif split_half:
            r = split_half_reproducibility(
                vectors, lengths, k, method, groups=groups, random_state=random_state, windows="all",
                **fit_kwargs,
            )
        out.append({"k": k, "inertia": inertia, "silhouette": sil,
                    "split_half_r": float(np.mean(r)), "split_half_r_min": float(np.min(r)),
                    "n_iter": n_iter})
    return pd.DataFrame(out)
