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

Permutations are drawn in batches of :data:`PERMUTATION_STREAM`, each from its own stream: the
k-th child of ``numpy.random.SeedSequence(random_state)`` (``SeedSequence.spawn``). A batch is
therefore the same wherever it is computed, and the result is the same in one process and on a
Dask cluster of any size (``client=``), and whatever ``chunk_size`` bounds the memory of a
computation. A legacy ``numpy.random.RandomState`` is drawn from in order instead (bctpy's
sequence), by the calling process, and the draws are shipped to the workers.
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
#: Permutations drawn from one seeded stream (one ``SeedSequence`` child): the unit of work sent
#: to a Dask worker. Fixed, so that results do not depend on how the work is split.
PERMUTATION_STREAM = 200
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
# Seeded permutation streams, in one process or on a Dask cluster
# --------------------------------------------------------------------------------------------
def _seed_source(random_state: RandomLike) -> np.random.SeedSequence | np.random.RandomState:
    """The root of the permutation streams: a SeedSequence, or a legacy RandomState drawn in
    order. A Generator contributes its seed sequence (spawning from it, so a second call with the
    same Generator draws new permutations, as drawing from it would)."""
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        seed_seq = getattr(random_state.bit_generator, "seed_seq", None)
        if isinstance(seed_seq, np.random.SeedSequence):
            return seed_seq.spawn(1)[0]
        return np.random.SeedSequence(random_state.integers(0, 2**63, size=4).tolist())
    if random_state is None or isinstance(random_state, int | np.integer):
        return np.random.SeedSequence(None if random_state is None else int(random_state))
    raise BadInputError(f"random_state must be None, an int, a numpy Generator or RandomState, "
                        f"got {type(random_state).__name__}")


def _stream_plan(source, n_permutations: int) -> list[tuple[int, int, Any]]:
    """``(first, size, seed)`` of each batch of :data:`PERMUTATION_STREAM` permutations; ``seed``
    is the batch's SeedSequence child, or None for a RandomState (drawn in order)."""
    starts = range(0, n_permutations, PERMUTATION_STREAM)
    sizes = [min(PERMUTATION_STREAM, n_permutations - first) for first in starts]
    seeds = (source.spawn(len(sizes)) if isinstance(source, np.random.SeedSequence)
             else [None] * len(sizes))
    return list(zip(starts, sizes, seeds, strict=True))


class _MaxTKernel:
    """Per batch of permutations: the maximum statistic of each and the per-feature counts of
    permuted statistics at least as extreme as the observed one."""

    def __init__(self, tail: str, threshold: np.ndarray) -> None:
        self.tail, self.threshold = tail, threshold

    def __call__(self, engine: PermutedOLS, t) -> tuple[np.ndarray, np.ndarray]:
        bk = engine.backend
        t = _tail_transform(t, self.tail, bk)
        counts = bk.to_numpy(bk.count_ge(t, bk.asarray(self.threshold)[None, :]))
        return bk.to_numpy(bk.amax(t, axis=1)), counts.astype(np.int64)

    @staticmethod
    def combine(parts):
        return np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts)


class _NBSKernel:
    """Per batch of permutations: the largest component statistic of each."""

    def __init__(self, tail, split_signs, threshold, n_nodes, measure) -> None:
        self.tail, self.split_signs, self.threshold = tail, split_signs, threshold
        self.n_nodes, self.measure = n_nodes, measure

    def __call__(self, engine: PermutedOLS, t) -> np.ndarray:
        bk = engine.backend
        perm_maps, signs = _signed_maps(t, self.tail, self.split_signs, bk)
        size = t.shape[0]
        perm_maps = bk.to_numpy(perm_maps).reshape(size * len(signs), -1)
        rows_iu, cols_iu = np.triu_indices(self.n_nodes, 1)
        graph_max, _ = _components(perm_maps, self.threshold, rows_iu, cols_iu, self.n_nodes,
                                   self.measure)
        return graph_max.reshape(size, len(signs)).max(axis=1)

    @staticmethod
    def combine(parts):
        return np.concatenate(parts)


def _run_stream(engine: PermutedOLS, exchange: ExchangeabilityScheme, kernel, seed, draws,
                size: int, chunk: int):
    """One batch of permutations (drawn here from ``seed``, or given as ``draws``), computed
    ``chunk`` at a time. Runs in the calling process or on a Dask worker."""
    if draws is None:
        draws = exchange.draw(np.random.default_rng(seed), size)
    keyword = "signs" if exchange.scheme == "sign_flip" else "permutations"
    parts = [kernel(engine, engine.batch(**{keyword: draws[first:first + chunk]}))
             for first in range(0, size, chunk)]
    return kernel.combine(parts)


def _permutation_null(engine, exchange, kernel, source, plan, chunk: int, client, desc: str):
    """Every batch's kernel output in order: ``[(first, size, output), ...]``.

    ``plan`` comes from :func:`_stream_plan` (made once per test, so that every chunk of features
    sees the same batches). With a Dask ``client`` the engine is sent once to every worker and
    each batch is a task; the batches (and so the result) are the same as in one process.
    """

    def draws_of(seed, size):  # a RandomState is drawn from here, in order
        return exchange.draw(source, size) if seed is None else None

    if client is None:
        return [(first, size, _run_stream(engine, exchange, kernel, seed, draws_of(seed, size),
                                          size, chunk))
                for first, size, seed in progress(plan, desc=desc, total=len(plan))]
    if engine.backend.name != "numpy":
        raise BadInputError("client= distributes the numpy backend only; use backend='numpy' "
                            f"(got {engine.backend.name!r}) or run on one GPU without client")
    from distributed import as_completed

    engine_f, exchange_f, kernel_f = (client.scatter(obj, broadcast=True, hash=False)
                                      for obj in (engine, exchange, kernel))
    futures = {}
    for first, size, seed in plan:
        future = client.submit(_run_stream, engine_f, exchange_f, kernel_f, seed,
                               draws_of(seed, size), size, chunk, pure=False)
        futures[future] = (first, size)
    outputs = {}
    for future in progress(as_completed(futures), desc=desc, total=len(plan)):
        outputs[futures[future][0]] = future.result()
        future.release()
    return [(first, size, outputs[first]) for first, size, _ in plan]



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


def _data_matrix(data: Any) -> Any:
    """The data as a 2-D array without copying it (numpy, memory map, Dask or zarr arrays are kept:
    :class:`PermutedOLS` reads and checks them a block of features at a time)."""
    if not (hasattr(data, "shape") and hasattr(data, "__getitem__") and hasattr(data, "dtype")):
        data = np.asarray(data, dtype=np.float64)
    if len(data.shape) == 1:
        data = np.asarray(data, dtype=np.float64)[:, None]
    if len(data.shape) != 2:
        raise BadInputError(f"data must be a 2-D array (observations x features), got shape "
                            f"{tuple(data.shape)}")
    if np.dtype(data.dtype).kind not in "fiub":
        raise BadInputError(f"data must hold numbers, got dtype {data.dtype}")
    return data


def _prepare_engine(data, design, contrast, nuisance, method, backend, exchange_args,
                    precision="double", allow_f=False):
    y = _data_matrix(data)
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


def _batch_size(chunk_size: int | None, n_obs: int, n_features: int, rank: int,
                itemsize: int = 8) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise BadInputError(f"chunk_size must be a positive integer, got {chunk_size}")
        return int(chunk_size)
    # projections (rank), numerator, residual sum of squares and the comparison with the observed
    per_permutation = itemsize * n_features * (rank + 3) + n_features + 8 * rank * n_obs
    return int(np.clip(_BATCH_BYTES // max(per_permutation, 1), 1, PERMUTATION_STREAM))


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
    edge_chunk: int | None = None,
    client: Any = None,
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
    edge_chunk : int, optional
        Features processed in one pass. By default all at once; with fewer, every chunk of
        features runs all the permutations (the same draws) and the maxima are combined across
        chunks, so the result is identical while memory holds one chunk: for tables beyond
        memory (10,000+ participants x 80k edges), with ``data`` a memory map or a Dask or zarr
        array read a chunk at a time.
    client : distributed.Client, optional
        Spread the batches of :data:`PERMUTATION_STREAM` permutations over a Dask cluster. Each
        batch draws from its own seeded stream, so the result equals the single-process one for
        any number of workers (numpy backend).

    Returns
    -------
    PermutationResult

    Notes
    -----
    Memory: the data are read in blocks and held once, as residuals in the working precision
    (``n_obs * n_features * 4`` bytes in single precision), plus one batch of permutations
    (``chunk_size``). At 4,000 observations x 79,800 edges in single precision that is 1.3 GB
    of residuals besides the caller's copy of the data.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> design = np.column_stack([np.ones(40), np.repeat([0.0, 1.0], 20)])
    >>> data = rng.normal(size=(40, 300))
    >>> data[20:, :5] += 1.5                      # five features differ between the groups
    >>> result = max_t_permutation(data, design, [0, 1], n_permutations=500, random_state=0)
    >>> bool((result.p_fwe[:5] < 0.05).all()), int((result.p_fwe[5:] < 0.05).sum())
    (True, 0)
    """
    tail = _check_tail(tail)
    n_permutations = _check_n_permutations(n_permutations)
    y = _data_matrix(data)
    n_features = int(y.shape[1])
    if n_features == 0:
        raise BadInputError("data has no features (0 columns): nothing to test")
    if edge_chunk is not None and int(edge_chunk) < 1:
        raise BadInputError(f"edge_chunk must be a positive integer, got {edge_chunk}")
    width = n_features if edge_chunk is None else min(int(edge_chunk), n_features)
    source = _seed_source(random_state)
    plan = _stream_plan(source, n_permutations)
    legacy_state = source.get_state() if isinstance(source, np.random.RandomState) else None
    tie_rtol = _TIE_RTOL if precision == "double" else 1e-5
    observed = np.empty(n_features)
    threshold = np.empty(n_features)
    counts = np.zeros(n_features, dtype=np.int64)
    null_max = np.full(n_permutations, -np.inf)
    for first in range(0, n_features, width):
        last = min(first + width, n_features)
        if legacy_state is not None:  # every chunk of features sees the same permutations
            source.set_state(legacy_state)
        engine, exchange = _prepare_engine(y if width == n_features else y[:, first:last], design,
                                           contrast, nuisance, method, backend,
                                           (scheme, blocks, whole_blocks), precision)
        observed[first:last] = engine.observed()
        observed_tail = _tail_transform(observed[first:last], tail)
        threshold[first:last] = observed_tail - tie_rtol * np.maximum(np.abs(observed_tail), 1.0)
        batch = _batch_size(chunk_size, engine.n_obs, engine.n_features, engine.rank,
                            np.dtype(engine.dtype).itemsize)
        kernel = _MaxTKernel(tail, threshold[first:last])
        desc = "max-T permutations" + (f" (features {first}-{last - 1})" if width < n_features else "")
        for start, size, (maxima, chunk_counts) in _permutation_null(
                engine, exchange, kernel, source, plan, batch, client, desc):
            np.maximum(null_max[start:start + size], maxima, out=null_max[start:start + size])
            counts[first:last] += chunk_counts
        bk_name = engine.backend.name
        df = engine.df
        del engine
    p_uncorrected = (1.0 + counts) / (n_permutations + 1.0)
    # Number of permutation maxima >= each observed statistic, via one sort of the null.
    n_ge = n_permutations - np.searchsorted(np.sort(null_max), threshold, side="left")
    p_fwe = (1.0 + n_ge) / (n_permutations + 1.0)
    return PermutationResult(
        statistic=observed, p_uncorrected=p_uncorrected, p_fwe=p_fwe, null_max=null_max,
        n_permutations=n_permutations, tail=tail,
        parameters={"scheme": scheme, "method": method, "backend": bk_name,
                    "whole_blocks": whole_blocks, "blocks": blocks is not None,
                    "df": df, "precision": precision, "edge_chunk": width,
                    "permutation_stream": PERMUTATION_STREAM,
                    "workers": _n_workers(client)})


def _n_workers(client) -> int:
    """Workers of a Dask client (1 for the calling process alone)."""
    if client is None:
        return 1
    return len(client.scheduler_info().get("workers", {})) or 1


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


def _run_nbs(engine: PermutedOLS, exchange: ExchangeabilityScheme, random_state: RandomLike,
             n_nodes: int, threshold: float, tail: str, measure: str, split_signs: bool,
             n_permutations: int, chunk_size: int | None, client: Any = None) -> NBSResult:
    if measure not in _MEASURES:
        raise BadInputError(f"measure must be one of {_MEASURES}, got {measure!r}")
    if not np.isfinite(threshold):
        raise BadInputError(f"threshold must be a finite number, got {threshold}")
    threshold = float(threshold)
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
    if chunk_size is not None and int(chunk_size) < 1:
        raise BadInputError(f"chunk_size must be a positive integer, got {chunk_size}")
    batch = int(chunk_size) if chunk_size else int(np.clip(_BATCH_BYTES // per_permutation, 1,
                                                          PERMUTATION_STREAM))
    kernel = _NBSKernel(tail, split_signs, threshold, n_nodes, measure)
    source = _seed_source(random_state)
    for start, size, maxima in _permutation_null(engine, exchange, kernel, source,
                                                 _stream_plan(source, n_permutations), batch,
                                                 client, "NBS permutations"):
        null_max[start:start + size] = maxima

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
    """Upper-triangle edge vectors (n, m) of a stack of symmetric (n, N, N) matrices.

    The edges keep the input's floating-point type (float32 connectomes are not copied to float64
    as a whole: at 2,000 x 400 x 400 that copy alone is 2.6 GB); symmetry is checked a block of
    edges at a time.
    """
    array = np.asarray(matrices)
    if array.dtype.kind not in "fiub":
        raise BadInputError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise BadInputError(f"{name} must have shape (n_participants, n_nodes, n_nodes), got "
                            f"{array.shape}")
    n_nodes = array.shape[1]
    if n_nodes < 2:
        raise BadInputError(f"{name} needs at least 2 nodes, got {n_nodes}")
    rows_iu, cols_iu = np.triu_indices(n_nodes, 1)
    upper = array[:, rows_iu, cols_iu]
    if not np.all(np.isfinite(upper)):
        participant, edge = np.argwhere(~np.isfinite(upper))[0]
        raise BadInputError(f"{name} has NaN or infinite edge values (first: participant index "
                            f"{participant}, nodes {rows_iu[edge]}-{cols_iu[edge]})")
    block = max(1, (1 << 22) // max(array.shape[0], 1))
    for first in range(0, rows_iu.size, block):
        lower = array[:, cols_iu[first:first + block], rows_iu[first:first + block]]
        if not np.allclose(upper[:, first:first + block], lower, rtol=1e-6, atol=1e-8,
                           equal_nan=True):
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
    client: Any = None,
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
    client : distributed.Client, optional
        Spread the permutations over a Dask cluster; the result equals the single-process one
        (see :func:`max_t_permutation`).

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
        data = np.subtract(x_edges, y_edges, dtype=np.float64)
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
    return _run_nbs(engine, exchange, random_state, n_nodes, threshold, tail, measure,
                    split_signs, n_permutations, chunk_size, client)


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
    client: Any = None,
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
    chunk_size, client :
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
    return _run_nbs(engine, exchange, random_state, n_nodes, threshold, tail, measure,
                    split_signs, n_permutations, chunk_size, client)
