"""Multiple-comparison control for mass-univariate group statistics.

- :func:`fdr_bh`: Benjamini–Hochberg q-values.
- :func:`max_t_permutation`: family-wise error control by the max-statistic permutation test for
  an OLS contrast, with Freedman–Lane handling of nuisance covariates, sign-flips for paired change
  scores and exchangeability blocks (PALM's conventions; Winkler et al. 2014, NeuroImage 92:381).
- :func:`nbs`: the network-based statistic (Zalesky et al. 2010, NeuroImage 53:1197) for two
  groups or paired sessions, and :func:`nbs_glm` for any OLS contrast (t, or F for a contrast
  matrix).

Every permutation engine here is vectorized over features and over batches of permutations; the
unpermuted statistic counts as one member of the null distribution, so p >= 1/(n_permutations+1).
Numpy is the reference backend; torch and cupy run the same arithmetic on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from theramark._progress import progress
from theramark.errors import BadInputError
from theramark.group._permutation_backend import PermutedOLS, get_backend
from theramark.group._permutation_schemes import (
    ExchangeabilityScheme,
    RandomLike,
    as_random_source,
    block_codes,
)

__all__ = [
    "NBSResult",
    "PermutationResult",
    "fdr_bh",
    "max_t_permutation",
    "nbs",
    "nbs_glm",
]

_TAILS = {"both": "both", "greater": "greater", "right": "greater", "less": "less",
          "left": "less"}
# Bytes of working memory one batch of permutations may use (float64 projections and t maps).
_BATCH_BYTES = 256 * 2**20
# Relative tolerance when comparing permuted and observed statistics, so that a permutation
# equal to the identity counts as "at least as extreme" despite rounding (1e-5 in single
# precision).
_TIE_RTOL = 1e-10


# --------------------------------------------------------------------------------------------
# False discovery rate
# --------------------------------------------------------------------------------------------
def fdr_bh(p_values: Any) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values).

    Parameters
    ----------
    p_values : array_like of float, any shape
        p-values in [0, 1]; NaNs are allowed, are left out of the number of tests and stay NaN.

    Returns
    -------
    ndarray of float, same shape as ``p_values``
        ``q_i = min_{j >= i} (m / j) p_(j)`` capped at 1, with m the number of non-NaN p-values;
        equal to ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    finite = ~np.isnan(p)
    values = p[finite]
    if np.any((values < 0) | (values > 1)):
        raise BadInputError("p-values must lie in [0, 1] (NaN allowed for missing tests)")
    q = np.full(p.shape, np.nan)
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    ranked = values[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked, 1.0)
    q[finite] = adjusted
    return q


# --------------------------------------------------------------------------------------------
# Max-statistic permutation test
# --------------------------------------------------------------------------------------------
@dataclass
class PermutationResult:
    """Result of :func:`max_t_permutation`.

    Attributes
    ----------
    statistic : ndarray, shape (n_features,)
        Observed t statistic of the contrast (signed).
    p_uncorrected : ndarray, shape (n_features,)
        Permutation p-value of each feature on its own.
    p_fwe : ndarray, shape (n_features,)
        Family-wise error corrected p-value (max-statistic).
    null_max : ndarray, shape (n_permutations,)
        Maximum over features of the (tail-transformed) statistic in each permutation, the
        unpermuted data excluded.
    n_permutations : int
    tail : str
        "both", "greater" or "less".
    """

    statistic: np.ndarray
    p_uncorrected: np.ndarray
    p_fwe: np.ndarray
    null_max: np.ndarray
    n_permutations: int
    tail: str = "both"
    parameters: dict = field(default_factory=dict)

    def to_frame(self, feature_names: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy table with columns ``feature, t, p_uncorrected, p_fwe`` (one row per feature)."""
        n = self.statistic.shape[0]
        if feature_names is None:
            feature_names = [f"feature_{i}" for i in range(n)]
        names = list(feature_names)
        if len(names) != n:
            raise BadInputError(f"feature_names has {len(names)} names for {n} features")
        return pd.DataFrame({"feature": names, "t": self.statistic,
                             "p_uncorrected": self.p_uncorrected, "p_fwe": self.p_fwe})


def _tail_transform(t, tail: str, backend=None):
    """Statistic whose large values are evidence for ``tail`` (in place on backend arrays)."""
    if tail == "both":
        return np.abs(t) if backend is None else backend.abs_(t)
    if tail == "less":
        return -t
    return t


def _check_tail(tail: str) -> str:
    if tail not in _TAILS:
        raise BadInputError(f"tail must be one of {sorted(_TAILS)}, got {tail!r}")
    return _TAILS[tail]


def _as_matrix(values: Any, name: str, n_rows: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise BadInputError(f"{name} must be a 2-D array (observations x columns), got shape "
                            f"{np.shape(values)}")
    if n_rows is not None and array.shape[0] != n_rows:
        raise BadInputError(f"{name} has {array.shape[0]} rows; expected {n_rows} (one per "
                            "observation, in the order of data)")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[:5].tolist()
        raise BadInputError(f"{name} contains NaN or infinite values (first at row, column "
                            f"{bad}); drop or impute them before inference")
    return array


def _prepare_engine(data, design, contrast, nuisance, method, backend, exchange_args,
                    precision="double", allow_f=False):
    y = _as_matrix(data, "data")
    n_obs = y.shape[0]
    x = _as_matrix(design, "design", n_obs)
    c = np.asarray(contrast, dtype=np.float64)
    if c.ndim == 2 and c.shape[0] == 1:
        c = c[0]
    if c.ndim == 2 and not allow_f:
        raise BadInputError("max_t_permutation tests one contrast: give a vector of "
                            f"{x.shape[1]} weights, got shape {c.shape}")
    if c.ndim not in (1, 2):
        raise BadInputError(f"contrast must be a vector or a matrix (rows = contrasts), got "
                            f"shape {c.shape}")
    if c.shape[-1] != x.shape[1]:
        raise BadInputError(f"contrast has {c.shape[-1]} weights for {x.shape[1]} design columns")
    if not np.all(np.any(np.atleast_2d(c) != 0, axis=1)):
        raise BadInputError("contrast (or one of its rows) is all zeros")
    if nuisance is not None:
        z = _as_matrix(nuisance, "nuisance", n_obs)
        x = np.hstack([x, z])
        c = np.concatenate([c, np.zeros(c.shape[:-1] + (z.shape[1],))], axis=-1)
    if method not in ("freedman_lane", "manly"):
        raise BadInputError(f"method must be 'freedman_lane' or 'manly', got {method!r}")
    scheme, blocks, whole_blocks = exchange_args
    exchange = ExchangeabilityScheme(n_obs, scheme, block_codes(blocks, n_obs), whole_blocks)
    engine = PermutedOLS(y, x, c, method, get_backend(backend), exchange.invariant_basis(),
                         precision)
    return engine, exchange


def _batch_size(chunk_size: int | None, n_obs: int, n_features: int, rank: int) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise BadInputError(f"chunk_size must be a positive integer, got {chunk_size}")
        return int(chunk_size)
    per_permutation = 8 * n_features * (2 * rank + 4) + 8 * rank * n_obs
    return int(np.clip(_BATCH_BYTES // max(per_permutation, 1), 1, 4096))


def _check_n_permutations(n_permutations: int) -> int:
    if int(n_permutations) < 1:
        raise BadInputError(f"n_permutations must be >= 1, got {n_permutations}")
    return int(n_permutations)


def max_t_permutation(
    data: Any,
    design: Any,
    contrast: Any,
    n_permutations: int = 5000,
    scheme: str = "permute",
    blocks: Any = None,
    nuisance: Any = None,
    method: str = "freedman_lane",
    tail: str = "both",
    random_state: RandomLike = None,
    backend: str = "numpy",
    chunk_size: int | None = None,
    *,
    whole_blocks: bool = False,
    precision: str = "double",
) -> PermutationResult:
    """Max-statistic permutation test of an OLS contrast over many features.

    Fits ``data ~ [design, nuisance]`` by OLS for every feature at once and tests
    ``contrast' beta = 0`` with a t statistic. Family-wise error is controlled by the distribution
    of the maximum statistic over features under permutation (Nichols & Holmes 2002).

    Parameters
    ----------
    data : array_like, shape (n_obs, n_features)
        One row per observation (a participant, or a participant's change score), one column per
        feature (edge, ROI, ...).
    design : array_like, shape (n_obs, n_regressors)
        Design matrix; include an intercept column when the model needs one.
    contrast : array_like, shape (n_regressors,)
        Weights over the design columns.
    n_permutations : int
        Number of random permutations (the unpermuted data are counted in addition).
    scheme : {"permute", "sign_flip"}
        "permute" exchanges rows (whole participants when data are one row per participant);
        "sign_flip" flips the sign of rows, for one-sample or paired tests on change scores whose
        errors are symmetric.
    blocks : array_like, shape (n_obs,), optional
        Exchangeability blocks (e.g. site, or participant for repeated rows). Permutations stay
        within blocks; with ``whole_blocks=True`` blocks of equal size are permuted as wholes, and
        sign-flips flip a whole block together.
    nuisance : array_like, shape (n_obs, n_nuisance), optional
        Nuisance covariates appended to the design with zero contrast weight.
    method : {"freedman_lane", "manly"}
        Freedman–Lane permutes the residuals of the reduced model (robust with nuisance; the
        default); Manly permutes the data.
    tail : {"both", "greater", "less"}
        Alternative; "both" uses |t|. "right"/"left" are accepted as aliases of greater/less.
    random_state : int, numpy Generator or RandomState, optional
        Seed; the same seed gives the same permutations on every backend.
    backend : {"numpy", "torch", "cupy", "auto"}
        Array backend; "auto" uses a CUDA GPU through torch or cupy when available.
    chunk_size : int, optional
        Permutations per batch (bounds memory: about 8 * n_features * (2 * rank + 4) bytes per
        permutation); by default a batch uses about 256 MiB.
    whole_blocks : bool
        See ``blocks``.
    precision : {"double", "single"}
        Precision of the permutation products. "single" halves time and memory (null maxima
        then carry about 1e-6 relative rounding); the observed t is always double.

    Returns
    -------
    PermutationResult
    """
    tail = _check_tail(tail)
    n_permutations = _check_n_permutations(n_permutations)
    engine, exchange = _prepare_engine(data, design, contrast, nuisance, method, backend,
                                       (scheme, blocks, whole_blocks), precision)
    n_obs = engine.n_obs
    rng = as_random_source(random_state)
    bk = engine.backend

    observed = engine.observed()
    observed_tail = _tail_transform(observed, tail)
    tie_rtol = _TIE_RTOL if precision == "double" else 1e-5
    threshold = observed_tail - tie_rtol * np.maximum(np.abs(observed_tail), 1.0)
    threshold_dev = bk.asarray(threshold)
    counts = bk.asarray(np.zeros(engine.n_features))
    null_max = np.empty(n_permutations)
    batch = _batch_size(chunk_size, n_obs, engine.n_features, engine.rank)
    starts = range(0, n_permutations, batch)
    for start in progress(starts, desc="max-T permutations", total=len(starts)):
        size = min(batch, n_permutations - start)
        draws = exchange.draw(rng, size)
        t = engine.batch(**{("signs" if scheme == "sign_flip" else "permutations"): draws})
        t = _tail_transform(t, tail, bk)
        null_max[start:start + size] = bk.to_numpy(bk.amax(t, axis=1))
        counts = counts + bk.count_ge(t, threshold_dev[None, :])
    counts = bk.to_numpy(counts)
    p_uncorrected = (1.0 + counts) / (n_permutations + 1.0)
    # Number of permutation maxima >= each observed statistic, via one sort of the null.
    n_ge = n_permutations - np.searchsorted(np.sort(null_max), threshold, side="left")
    p_fwe = (1.0 + n_ge) / (n_permutations + 1.0)
    return PermutationResult(
        statistic=observed, p_uncorrected=p_uncorrected, p_fwe=p_fwe, null_max=null_max,
        n_permutations=n_permutations, tail=tail,
        parameters={"scheme": scheme, "method": method, "backend": bk.name,
                    "whole_blocks": whole_blocks, "blocks": blocks is not None,
                    "df": engine.df, "precision": precision})


# --------------------------------------------------------------------------------------------
# Network-based statistic
# --------------------------------------------------------------------------------------------
_MEASURES = ("extent", "intensity")


@dataclass
class NBSResult:
    """Result of :func:`nbs` / :func:`nbs_glm`.

    Attributes
    ----------
    components : list of ndarray of bool, each shape (n_nodes, n_nodes)
        Symmetric edge mask of each observed supra-threshold component (single-edge components
        included, as bctpy does), ordered by decreasing component statistic.
    sizes : ndarray of int, shape (n_components,)
        Number of edges in each component.
    statistic : ndarray of float, shape (n_components,)
        Component statistic: the edge count ("extent") or the sum over its edges of
        (statistic - threshold) ("intensity", as in the NBS toolbox).
    p_values : ndarray of float, shape (n_components,)
        Family-wise corrected p-value: (1 + #{permutations whose largest component statistic is
        >= the component's}) / (n_permutations + 1).
    signs : ndarray of int, shape (n_components,)
        +1 for a component of positive t (x > y, or contrast > 0), -1 for negative t, 0 when the
        signs were pooled (``tail="both"`` with ``split_signs=False``, bctpy's convention).
    null_max : ndarray, shape (n_permutations,)
        Largest component statistic of each permutation.
    t : ndarray, shape (n_nodes, n_nodes)
        Observed edge statistics (t; F for a multi-row contrast in :func:`nbs_glm`), symmetric
        with a zero diagonal.
    """

    components: list[np.ndarray]
    sizes: np.ndarray
    statistic: np.ndarray
    p_values: np.ndarray
    signs: np.ndarray
    null_max: np.ndarray
    t: np.ndarray
    threshold: float
    n_permutations: int
    tail: str
    measure: str

    def to_frame(self, node_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per component: ``component, sign, n_edges, n_nodes, statistic, p_fwe, nodes``.

        ``nodes`` lists the component's nodes (``node_names``, or ``node_<index>``), ";"-joined.
        """
        names = self._node_names(node_names)
        rows = []
        for k, mask in enumerate(self.components):
            members = np.flatnonzero(mask.any(axis=0))
            rows.append({"component": k + 1, "sign": int(self.signs[k]),
                         "n_edges": int(self.sizes[k]), "n_nodes": int(members.size),
                         "statistic": float(self.statistic[k]), "p_fwe": float(self.p_values[k]),
                         "nodes": ";".join(str(n) for n in names[members])})
        return pd.DataFrame(rows, columns=["component", "sign", "n_edges", "n_nodes", "statistic",
                                           "p_fwe", "nodes"])

    def _node_names(self, node_names: Sequence[str] | None) -> np.ndarray:
        n_nodes = self.t.shape[0]
        names = np.asarray(list(node_names) if node_names is not None else
                           [f"node_{i}" for i in range(n_nodes)], dtype=object)
        if names.shape[0] != n_nodes:
            raise BadInputError(f"node_names has {names.shape[0]} names for {n_nodes} nodes")
        return names

    def edges_frame(self, node_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per component edge: ``component, node_a, node_b, t, p_fwe``."""
        names = self._node_names(node_names)
        frames = []
        for k, mask in enumerate(self.components):
            i, j = np.nonzero(np.triu(mask, 1))
            frames.append(pd.DataFrame({"component": k + 1, "node_a": names[i],
                                        "node_b": names[j], "t": self.t[i, j],
                                        "p_fwe": self.p_values[k]}))
        if not frames:
            return pd.DataFrame(columns=["component", "node_a", "node_b", "t", "p_fwe"])
        return pd.concat(frames, ignore_index=True)


def _signed_maps(t, tail: str, split_signs: bool, backend=None):
    """Stack of maps thresholded from above, shape (B, S, m), and the sign of each."""
    stack = (np if backend is None else backend.torch if backend.name == "torch" else
             getattr(backend, "xp", np)).stack
    if tail == "greater":
        return stack([t], 1), [1]
    if tail == "less":
        return stack([-t], 1), [-1]
    if split_signs:
        return stack([t, -t], 1), [1, -1]
    absolute = np.abs(t) if backend is None else backend.abs(t)
    return stack([absolute], 1), [0]


def _components(maps: np.ndarray, threshold: float, rows_iu: np.ndarray, cols_iu: np.ndarray,
                n_nodes: int, measure: str):
    """Connected components of every thresholded map at once.

    All maps (shape (G, m), m = n_nodes*(n_nodes-1)/2 upper-triangle edges) become one
    block-diagonal graph of G * n_nodes nodes, so one ``connected_components`` call labels the
    components of every permutation.

    Returns
    -------
    graph_max : ndarray, shape (G,)
        Largest component statistic of each map (0 when nothing is supra-threshold).
    details : tuple of ndarray
        ``(graph_of_edge, edge_index, edge_label, component_stat)``: for each supra-threshold
        edge its map, its upper-triangle index and its component label; and each label's
        statistic. Used to extract the observed components.
    """
    n_graphs, _ = maps.shape
    supra = maps > threshold
    graph_of_edge, edge_index = np.nonzero(supra)
    offset = graph_of_edge * n_nodes
    rows = offset + rows_iu[edge_index]
    cols = offset + cols_iu[edge_index]
    n_total = n_graphs * n_nodes
    graph = sparse.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)),
                              shape=(n_total, n_total))
    n_labels, labels = connected_components(graph, directed=False)
    edge_label = labels[rows]
    weights = None if measure == "extent" else maps[supra] - threshold
    component_stat = np.bincount(edge_label, weights=weights, minlength=n_labels)
    graph_of_label = np.empty(n_labels, dtype=np.intp)
    graph_of_label[labels] = np.arange(n_total) // n_nodes
    graph_max = np.zeros(n_graphs)
    np.maximum.at(graph_max, graph_of_label, component_stat)
    return graph_max, (graph_of_edge, edge_index, edge_label, component_stat)


def _run_nbs(engine: PermutedOLS, exchange: ExchangeabilityScheme, rng, n_nodes: int,
             threshold: float, tail: str, measure: str, split_signs: bool, n_permutations: int,
             chunk_size: int | None) -> NBSResult:
    if measure not in _MEASURES:
        raise BadInputError(f"measure must be one of {_MEASURES}, got {measure!r}")
    if not np.isfinite(threshold):
        raise BadInputError(f"threshold must be a finite number, got {threshold}")
    threshold = float(threshold)
    bk = engine.backend
    rows_iu, cols_iu = np.triu_indices(n_nodes, 1)

    observed = engine.observed()
    maps, signs = _signed_maps(observed[None, :], tail, split_signs)
    if engine.statistic == "F":
        signs = [0]
    n_signs = len(signs)
    _, (graph_of_edge, edge_index, edge_label, component_stat) = _components(
        maps.reshape(n_signs, -1), threshold, rows_iu, cols_iu, n_nodes, measure)
    components, sizes, stats, comp_signs = [], [], [], []
    for label in np.unique(edge_label):
        in_component = edge_label == label
        edges = edge_index[in_component]
        mask = np.zeros((n_nodes, n_nodes), dtype=bool)
        mask[rows_iu[edges], cols_iu[edges]] = True
        components.append(mask | mask.T)
        sizes.append(edges.size)
        stats.append(component_stat[label])
        comp_signs.append(signs[graph_of_edge[in_component][0]])
    order = sorted(range(len(components)),
                   key=lambda k: (-stats[k], -comp_signs[k], int(np.argmax(components[k]))))

    null_max = np.empty(n_permutations)
    per_permutation = 8 * engine.n_features * (2 * engine.rank + 4 + 3 * n_signs)
    batch = int(chunk_size) if chunk_size else int(np.clip(_BATCH_BYTES // per_permutation, 1, 2048))
    starts = range(0, n_permutations, batch)
    use_signs = exchange.scheme == "sign_flip"
    for start in progress(starts, desc="NBS permutations", total=len(starts)):
        size = min(batch, n_permutations - start)
        draws = exchange.draw(rng, size)
        t = engine.batch(**{("signs" if use_signs else "permutations"): draws})
        perm_maps, _ = _signed_maps(t, tail, split_signs, bk)
        perm_maps = bk.to_numpy(perm_maps).reshape(size * n_signs, -1)
        graph_max, _ = _components(perm_maps, threshold, rows_iu, cols_iu, n_nodes, measure)
        null_max[start:start + size] = graph_max.reshape(size, n_signs).max(axis=1)

    stats_sorted = np.array([stats[k] for k in order], dtype=np.float64)
    tolerance = _TIE_RTOL * np.maximum(np.abs(stats_sorted), 1.0)
    sorted_null = np.sort(null_max)
    n_ge = n_permutations - np.searchsorted(sorted_null, stats_sorted - tolerance, side="left")
    t_matrix = np.zeros((n_nodes, n_nodes))
    t_matrix[rows_iu, cols_iu] = observed
    t_matrix += t_matrix.T
    return NBSResult(
        components=[components[k] for k in order],
        sizes=np.array([sizes[k] for k in order], dtype=np.int64),
        statistic=stats_sorted,
        p_values=(1.0 + n_ge) / (n_permutations + 1.0),
        signs=np.array([comp_signs[k] for k in order], dtype=np.int64),
        null_max=null_max, t=t_matrix, threshold=threshold, n_permutations=n_permutations,
        tail=tail, measure=measure)


def _edges_from_matrices(matrices: Any, name: str) -> tuple[np.ndarray, int]:
    """Upper-triangle edge vectors (n, m) of a stack of symmetric (n, N, N) matrices."""
    array = np.asarray(matrices, dtype=np.float64)
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise BadInputError(f"{name} must have shape (n_participants, n_nodes, n_nodes), got "
                            f"{array.shape}")
    n_nodes = array.shape[1]
    if n_nodes < 2:
        raise BadInputError(f"{name} needs at least 2 nodes, got {n_nodes}")
    rows_iu, cols_iu = np.triu_indices(n_nodes, 1)
    upper = array[:, rows_iu, cols_iu]
    lower = array[:, cols_iu, rows_iu]
    if not np.all(np.isfinite(upper)):
        participant, edge = np.argwhere(~np.isfinite(upper))[0]
        raise BadInputError(f"{name} has NaN or infinite edge values (first: participant index "
                            f"{participant}, nodes {rows_iu[edge]}-{cols_iu[edge]})")
    if not np.allclose(upper, lower, rtol=1e-6, atol=1e-8, equal_nan=True):
        raise BadInputError(f"{name} must hold symmetric connectivity matrices")
    return upper, n_nodes


def nbs(
    x: Any,
    y: Any,
    threshold: float,
    n_permutations: int = 5000,
    tail: str = "both",
    paired: bool = False,
    random_state: RandomLike = None,
    *,
    measure: str = "extent",
    split_signs: bool = True,
    backend: str = "numpy",
    chunk_size: int | None = None,
) -> NBSResult:
    """Network-based statistic for two groups (or two paired sessions) of connectivity matrices.

    Edge statistics are Student's t with pooled variance (two-sample) or the paired t (``paired``:
    x - y per participant, null by sign-flips), the same statistics as ``bct.nbs_bct``. Edges whose
    statistic exceeds ``threshold`` form components; the family-wise p-value of a component is
    the fraction of permutations whose largest component is at least as large.

    Parameters
    ----------
    x, y : array_like, shape (n_participants, n_nodes, n_nodes)
        Symmetric connectivity matrices of the two groups (or sessions, same participant order
        when ``paired``). Only the upper triangle is used.
    threshold : float
        Primary t threshold (edges with statistic > threshold are kept).
    n_permutations : int
    tail : {"both", "right", "left"} (or "greater"/"less")
        "right": x > y; "left": x < y; "both": either, with positive and negative components kept
        apart (``split_signs=True``) or pooled on |t| as bctpy does (``split_signs=False``).
    paired : bool
    random_state : int, Generator or RandomState, optional
        A ``numpy.random.RandomState`` draws permutations exactly as ``bct.nbs_bct(seed=...)``
        does, which reproduces its null distribution.
    measure : {"extent", "intensity"}
        Component size as edge count, or sum of (t - threshold) over its edges.
    split_signs : bool
    backend : {"numpy", "torch", "cupy", "auto"}
    chunk_size : int, optional
        Permutations per batch.

    Returns
    -------
    NBSResult
        p-values count the unpermuted data in the null (bctpy does not: its p-values equal
        ``(n_permutations + 1) * p - 1`` divided by ``n_permutations`` here).
    """
    tail = _check_tail(tail)
    n_permutations = _check_n_permutations(n_permutations)
    x_edges, n_nodes = _edges_from_matrices(x, "x")
    y_edges, n_nodes_y = _edges_from_matrices(y, "y")
    if n_nodes != n_nodes_y:
        raise BadInputError(f"x has {n_nodes} nodes but y has {n_nodes_y}")
    n_x, n_y = x_edges.shape[0], y_edges.shape[0]
    if paired:
        if n_x != n_y:
            raise BadInputError(f"paired NBS needs the same participants in x and y; got {n_x} "
                                f"and {n_y} matrices")
        data = x_edges - y_edges
        design = np.ones((n_x, 1))
        contrast = np.ones(1)
        scheme = "sign_flip"
    else:
        if min(n_x, n_y) < 1 or n_x + n_y < 3:
            raise BadInputError(f"two-sample NBS needs participants in both groups and at least 3 "
                                f"in all; got {n_x} and {n_y}")
        data = np.vstack([x_edges, y_edges])
        design = np.column_stack([np.ones(n_x + n_y),
                                  np.r_[np.ones(n_x), np.zeros(n_y)]])
        contrast = np.array([0.0, 1.0])
        scheme = "permute"
    exchange = ExchangeabilityScheme(data.shape[0], scheme)
    engine = PermutedOLS(data, design, contrast, "freedman_lane", get_backend(backend),
                         exchange.invariant_basis())
    return _run_nbs(engine, exchange, as_random_source(random_state), n_nodes, threshold, tail,
                    measure, split_signs, n_permutations, chunk_size)


def nbs_glm(
    data: Any,
    design: Any,
    contrast: Any,
    threshold: float,
    n_permutations: int = 5000,
    scheme: str = "permute",
    blocks: Any = None,
    nuisance: Any = None,
    method: str = "freedman_lane",
    tail: str = "both",
    random_state: RandomLike = None,
    *,
    measure: str = "extent",
    split_signs: bool = True,
    whole_blocks: bool = False,
    backend: str = "numpy",
    chunk_size: int | None = None,
) -> NBSResult:
    """Network-based statistic for any OLS contrast (covariates, change scores, blocks).

    The edge statistic is the t of ``contrast`` in ``data ~ [design, nuisance]`` fitted per edge,
    or the F of a contrast matrix (one row per contrast, e.g. the differences between three
    arms), with the null made exactly as in :func:`max_t_permutation` (Freedman–Lane, sign-flips,
    exchangeability blocks). With F the threshold applies to F, the test is one-sided and
    components have sign 0.

    Parameters
    ----------
    data : array_like, shape (n_obs, n_nodes, n_nodes)
        Symmetric connectivity matrices (e.g. post - pre change per participant).
    contrast : array_like, shape (n_regressors,) or (n_contrasts, n_regressors)
        A vector gives a t statistic; a matrix with several rows gives an F statistic.
    design, scheme, blocks, nuisance, method, tail, random_state, whole_blocks, backend,
    chunk_size :
        As in :func:`max_t_permutation`.
    threshold, measure, split_signs :
        As in :func:`nbs`.

    Returns
    -------
    NBSResult
    """
    tail = _check_tail(tail)
    n_permutations = _check_n_permutations(n_permutations)
    edges, n_nodes = _edges_from_matrices(data, "data")
    engine, exchange = _prepare_engine(edges, design, contrast, nuisance, method, backend,
                                       (scheme, blocks, whole_blocks), allow_f=True)
    if engine.statistic == "F":
        tail, split_signs = "greater", False  # F is one-sided; components carry sign 0
    return _run_nbs(engine, exchange, as_random_source(random_state), n_nodes, threshold, tail,
                    measure, split_signs, n_permutations, chunk_size)
