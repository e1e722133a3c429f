"""Accuracy and stability of EBICglasso networks: edge bootstrap and case-dropping (bootnet's methods).

Epskamp, Borsboom & Fried (2018), *Behavior Research Methods* 50:195–212:

- :func:`bootstrap_edges` — non-parametric bootstrap (rows resampled with replacement) of every edge
  weight, with percentile confidence intervals;
- :func:`case_drop_stability` — the case-dropping subset bootstrap: networks re-estimated on subsets
  with a growing proportion of participants removed, the correlation of their centrality with the
  original's, and the CS-coefficient.

Every resampled network is fitted by the batched glasso of :mod:`theramark.psychosocial.network`;
resample indices are drawn up front from one seeded generator, so results do not depend on
``n_jobs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from theramark.errors import BadInputError
from theramark.psychosocial.network import (
    _TOL_RESAMPLE,
    CORRELATIONS,
    _check_path_arguments,
    centrality_arrays,
    community_codes,
    ebicglasso,
    glasso_ebic_batch,
    prepare_items,
)

__all__ = [
    "CASE_DROP_STATISTICS",
    "bootstrap_edges",
    "case_drop_stability",
    "fit_correlation_stack",
    "resampled_networks",
    "summarize_case_drop",
]

CASE_DROP_STATISTICS = ("strength", "expected_influence", "closeness", "betweenness", "edge",
                        "bridge_strength", "bridge_expected_influence_1step",
                        "bridge_expected_influence_2step")
_BRIDGE = ("bridge_strength", "bridge_expected_influence_1step", "bridge_expected_influence_2step")
_CORR_CHUNK = 100
_FIT_CHUNK = 500   # networks per batched fit (larger batches amortize more; 500 ≈ 0.3 MB each)


def _correlations(values: np.ndarray, rows: np.ndarray, corr: str) -> np.ndarray:
    """Correlation matrices of the row subsets ``rows`` (B, m) of ``values`` (n, p) → (B, p, p)."""
    if corr == "polychoric":
        from theramark.psychosocial.polychoric import polychoric_matrix

        return np.stack([polychoric_matrix(values[r]).to_numpy() for r in rows])
    out = np.empty((len(rows), values.shape[1], values.shape[1]))
    for start in range(0, len(rows), _CORR_CHUNK):      # bounds memory to _CORR_CHUNK · m · p floats
        sub = values[rows[start:start + _CORR_CHUNK]]    # (b, m, p)
        if corr == "spearman":
            from scipy import stats

            sub = stats.rankdata(sub, axis=1)
        centred = sub - sub.mean(axis=1, keepdims=True)
        cov = np.einsum("bmi,bmj->bij", centred, centred)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.sqrt(np.einsum("bii->bi", cov))
            out[start:start + _CORR_CHUNK] = cov / (scale[:, :, None] * scale[:, None, :])
    return out


def _fit_stack(S: np.ndarray, n_obs: np.ndarray, gamma: float, n_lambda: int, lambda_min_ratio: float,
               tol: float) -> np.ndarray:
    partial = np.full(S.shape, np.nan)
    # a resample with a constant column has no correlation matrix: its network stays NaN
    good = np.isfinite(S).all(axis=(1, 2))
    if good.any():
        fit = glasso_ebic_batch(S[good], n_obs[good], gamma, n_lambda, lambda_min_ratio, tol=tol)
        partial[good] = fit["partial"]
    return partial


def fit_correlation_stack(S: np.ndarray, n_obs: np.ndarray | int, gamma: float = 0.5, n_lambda: int = 100,
                          lambda_min_ratio: float = 0.01, n_jobs: int = 1,
                          tol: float = _TOL_RESAMPLE) -> np.ndarray:
    """EBICglasso networks of a stack of correlation matrices, split over ``n_jobs`` processes.

    Parameters
    ----------
    S : ndarray, shape (B, p, p)
        Correlation matrices; a matrix with NaN (undefined correlation) gives an all-NaN network.
    n_obs : int or ndarray, shape (B,)
        Sample size behind each matrix.

    Returns
    -------
    ndarray, shape (B, p, p)
        Partial correlations.
    """
    n_obs = np.broadcast_to(np.asarray(n_obs, dtype=float), (len(S),))
    # Fixed-size chunks, whatever n_jobs: a batch's convergence path depends on its members, so the
    # partition must not change with the number of processes for seeded results to be reproducible.
    bounds = list(range(0, len(S), _FIT_CHUNK)) + [len(S)]
    pieces = [(S[a:b], n_obs[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    if n_jobs == 1 or len(pieces) == 1:
        parts = [_fit_stack(s, n, gamma, n_lambda, lambda_min_ratio, tol) for s, n in pieces]
    else:
        parts = Parallel(n_jobs=n_jobs)(
            delayed(_fit_stack)(s, n, gamma, n_lambda, lambda_min_ratio, tol) for s, n in pieces)
    return np.concatenate(parts, axis=0)


def resampled_networks(values: np.ndarray, rows: np.ndarray, corr: str = "pearson", gamma: float = 0.5,
                       n_lambda: int = 100, lambda_min_ratio: float = 0.01, n_jobs: int = 1,
                       tol: float = _TOL_RESAMPLE) -> np.ndarray:
    """EBICglasso networks of many row subsets of one data matrix.

    Parameters
    ----------
    values : ndarray, shape (n, p)
        Complete data.
    rows : ndarray of int, shape (B, m)
        Row indices of each resample (all resamples of one call have the same size m).
    n_jobs : int
        joblib processes.

    Returns
    -------
    ndarray, shape (B, p, p)
        Partial correlations; a resample with a constant column (undefined correlation) is all NaN.
    """
    S = _correlations(values, rows, corr)
    return fit_correlation_stack(S, rows.shape[1], gamma, n_lambda, lambda_min_ratio, n_jobs, tol)


def _check_common(corr: str, n_boot: int, gamma: float, n_lambda: int, lambda_min_ratio: float) -> None:
    if corr not in CORRELATIONS:
        raise BadInputError(f"corr={corr!r} is not a known correlation; expected one of {CORRELATIONS}")
    if int(n_boot) < 2:
        raise BadInputError(f"n_boot: expected at least 2 resamples, got {n_boot}")
    _check_path_arguments(gamma, n_lambda, lambda_min_ratio)


def _edge_labels(nodes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    iu = np.triu_indices(len(nodes), 1)
    return iu[0], iu[1], [nodes[i] for i in iu[0]], [nodes[j] for j in iu[1]]


def bootstrap_edges(data: pd.DataFrame, n_boot: int = 1000, *, gamma: float = 0.5, n_lambda: int = 100,
                    lambda_min_ratio: float = 0.01, corr: str = "pearson", ci: float = 0.95,
                    n_jobs: int = 1, random_state: int | np.random.Generator | None = None) -> pd.DataFrame:
    """Non-parametric bootstrap of EBICglasso edge weights (bootnet ``type = "nonparametric"``).

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_nodes)
        Items; rows with missing values are dropped (listwise, with a warning).
    n_boot : int
        Bootstrap resamples (rows drawn with replacement, n of them).
    gamma, n_lambda, lambda_min_ratio, corr
        As in :func:`theramark.psychosocial.ebicglasso`; every resample is re-estimated in full,
        including λ selection.
    ci : float
        Coverage of the percentile interval.
    n_jobs : int
        joblib processes.
    random_state : int or Generator, optional
        Seed; the same seed gives the same table for any ``n_jobs``.

    Returns
    -------
    DataFrame
        One row per edge (``node_a``, ``node_b``): ``weight`` (original sample), ``boot_mean``,
        ``boot_sd``, ``ci_lower``/``ci_upper`` (percentile interval of the bootstrapped weights),
        ``prop_nonzero`` (share of resamples in which the edge is estimated non-zero) and
        ``n_valid`` (resamples that could be estimated).
    """
    frame = prepare_items(data)
    _check_common(corr, n_boot, gamma, n_lambda, lambda_min_ratio)
    if not 0 < ci < 1:
        raise BadInputError(f"ci: expected a coverage in (0, 1), got {ci}")
    rng = np.random.default_rng(random_state)
    values = frame.to_numpy()
    n = len(values)
    original = ebicglasso(frame, gamma, n_lambda, lambda_min_ratio, corr)
    rows = rng.integers(0, n, size=(int(n_boot), n))
    boots = resampled_networks(values, rows, corr, gamma, n_lambda, lambda_min_ratio, n_jobs)
    nodes = list(frame.columns)
    ia, ib, names_a, names_b = _edge_labels(nodes)
    edges = boots[:, ia, ib]                                    # (B, n_edges)
    valid = np.isfinite(edges).all(axis=1)
    edges = edges[valid]
    alpha = (1.0 - ci) / 2.0
    return pd.DataFrame({
        "node_a": names_a,
        "node_b": names_b,
        "weight": original.to_numpy()[ia, ib],
        "boot_mean": edges.mean(axis=0),
        "boot_sd": edges.std(axis=0, ddof=1),
        "ci_lower": np.quantile(edges, alpha, axis=0),
        "ci_upper": np.quantile(edges, 1.0 - alpha, axis=0),
        "prop_nonzero": (edges != 0).mean(axis=0),
        "n_valid": int(valid.sum()),
    })


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between each row of ``a`` (B, k) and the vector ``b`` (k,); NaN if constant."""
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all()
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean()
    denom = np.sqrt((ac ** 2).sum(axis=1) * (bc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac @ bc) / denom
    r[~finite | (denom <= 1e-300)] = np.nan
    return r


def case_drop_stability(data: pd.DataFrame, n_boot: int = 1000, *,
                        drop_proportions: Sequence[float] = tuple(np.round(np.linspace(0.05, 0.75, 10), 4)),
                        statistics: Sequence[str] = ("strength", "expected_influence", "closeness",
                                                     "betweenness", "edge"),
                        cor_level: float = 0.7, certainty: float = 0.95, gamma: float = 0.5,
                        n_lambda: int = 100, lambda_min_ratio: float = 0.01, corr: str = "pearson",
                        communities: Mapping[str, object] | None = None, n_jobs: int = 1,
                        random_state: int | np.random.Generator | None = None,
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Case-dropping subset bootstrap and the CS-coefficient (bootnet ``type = "case"``).

    For each proportion ``d`` in ``drop_proportions``, ``n_boot / len(drop_proportions)`` subsets of
    ``round((1 - d) n)`` rows are drawn without replacement (an equal share of the resamples per
    proportion), the network is re-estimated and each statistic is
    correlated (Pearson, across nodes or, for ``"edge"``, across edges) with the original network's.

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_nodes)
    n_boot : int
        Total number of subset networks.
    drop_proportions : sequence of float in (0, 1)
        Proportions of rows dropped (bootnet: 10 values from 0.05 to 0.75).
    statistics : sequence of str
        Any of ``"strength"``, ``"expected_influence"``, ``"closeness"``, ``"betweenness"``,
        ``"edge"`` and, given ``communities``, ``"bridge_strength"``,
        ``"bridge_expected_influence_1step"``, ``"bridge_expected_influence_2step"``.
    cor_level : float
        Correlation with the original required (bootnet: 0.7).
    certainty : float
        Probability with which it must be reached (bootnet: 0.95).
    gamma, n_lambda, lambda_min_ratio, corr
        As in :func:`theramark.psychosocial.ebicglasso`.
    communities : mapping node → community, optional
        Needed for the bridge statistics.
    n_jobs : int
        joblib processes.
    random_state : int or Generator, optional

    Returns
    -------
    correlations : DataFrame
        Long table, one row per subset network × statistic: ``boot``, ``drop_proportion``,
        ``n_rows``, ``statistic``, ``correlation`` (NaN when a centrality is constant across nodes in
        the subset network or in the original, e.g. an empty network).
    summary : DataFrame
        One row per statistic × drop proportion (the proportion actually dropped, ``1 - m/n``):
        ``mean``, ``q025``, ``q975`` of the correlations, ``prop_above`` (share of subsets with
        correlation > ``cor_level``; NaN counts as below) and ``cs_coefficient`` (repeated on every
        row of the statistic): the largest drop proportion with ``prop_above > certainty``, 0 if
        none — Epskamp et al.'s CS(cor = 0.7), see :func:`summarize_case_drop`; they advise
        CS ≥ 0.25 at least and preferably ≥ 0.5 before interpreting a centrality order.
    """
    frame = prepare_items(data)
    _check_common(corr, n_boot, gamma, n_lambda, lambda_min_ratio)
    unknown = [s for s in statistics if s not in CASE_DROP_STATISTICS]
    if unknown or not statistics:
        raise BadInputError(f"statistics: expected a non-empty subset of {CASE_DROP_STATISTICS}",
                            [f"unknown statistic {s!r}" for s in unknown])
    proportions = np.asarray(drop_proportions, dtype=float)
    if proportions.ndim != 1 or proportions.size == 0 or np.any((proportions <= 0) | (proportions >= 1)):
        raise BadInputError("drop_proportions: expected proportions strictly between 0 and 1")
    if not (-1 < cor_level < 1) or not (0 < certainty < 1):
        raise BadInputError("cor_level must lie in (-1, 1) and certainty in (0, 1)")
    rng = np.random.default_rng(random_state)
    values = frame.to_numpy()
    n, p = values.shape
    original = ebicglasso(frame, gamma, n_lambda, lambda_min_ratio, corr).to_numpy()
    codes = None
    if any(s in _BRIDGE for s in statistics):
        if communities is None:
            raise BadInputError("statistics: bridge statistics need the node communities (communities=...)")
        codes = community_codes(list(frame.columns), communities)
    node_measures = [s for s in statistics if s != "edge"]
    orig_cent = centrality_arrays(original, codes, measures=node_measures) if node_measures else {}
    iu = np.triu_indices(p, 1)
    per_level = np.full(proportions.size, int(n_boot) // proportions.size)
    per_level[: int(n_boot) - per_level.sum()] += 1
    stacks, sizes, levels = [], [], []
    for proportion, count in zip(proportions, per_level, strict=True):
        if count == 0:
            continue
        m = int(round((1.0 - proportion) * n))
        if m < p + 1:
            raise BadInputError(
                f"drop_proportions: dropping {proportion:.2f} of {n} rows leaves {m}, fewer than "
                f"{p + 1} needed for {p} nodes")
        rows = np.argsort(rng.random((count, n)), axis=1)[:, :m]
        stacks.append(_correlations(values, rows, corr))
        sizes.append(np.full(count, m))
        levels.append(np.full(count, 1.0 - m / n))   # the proportion actually dropped (bootnet's prop)
    sizes_all, levels_all = np.concatenate(sizes), np.concatenate(levels)
    nets = fit_correlation_stack(np.concatenate(stacks), sizes_all, gamma, n_lambda, lambda_min_ratio, n_jobs)
    invalid = ~np.isfinite(nets).all(axis=(1, 2))
    cent = centrality_arrays(np.nan_to_num(nets), codes, measures=node_measures) if node_measures else {}
    records = []
    for stat in statistics:
        if stat == "edge":
            r = _row_correlation(nets[:, iu[0], iu[1]], original[iu])
        else:
            r = _row_correlation(cent[stat], orig_cent[stat][0])
        r[invalid] = np.nan
        records.append(pd.DataFrame({
            "boot": np.arange(len(nets)), "drop_proportion": levels_all, "n_rows": sizes_all,
            "statistic": stat, "correlation": r}))
    correlations = pd.concat(records, ignore_index=True)
    summary = summarize_case_drop(correlations, cor_level, certainty)
    summary.attrs["n_rows"] = n
    return correlations, summary


def summarize_case_drop(correlations: pd.DataFrame, cor_level: float = 0.7,
                        certainty: float = 0.95) -> pd.DataFrame:
    """Summary and CS-coefficient of a case-dropping correlations table.

    Parameters
    ----------
    correlations : DataFrame
        Columns ``statistic``, ``drop_proportion``, ``correlation`` (one row per subset network).
    cor_level, certainty : float
        CS(cor = ``cor_level``) is the largest drop proportion at which more than ``certainty`` of
        the subset networks correlate above ``cor_level`` with the original (strict inequalities and
        the largest such proportion, even past a failing one, exactly as bootnet's ``corStability``);
        0 when there is none. A NaN correlation (a centrality constant across nodes) counts as a
        failure, as in bootnet ≤ 1.5 where it was set to 0.

    Returns
    -------
    DataFrame
        See :func:`case_drop_stability`.
    """
    grouped = correlations.groupby(["statistic", "drop_proportion"], sort=False)["correlation"]
    summary = grouped.agg(
        mean="mean",
        q025=lambda x: np.nanquantile(x, 0.025) if x.notna().any() else np.nan,
        q975=lambda x: np.nanquantile(x, 0.975) if x.notna().any() else np.nan,
        prop_above=lambda x: float((x.fillna(-np.inf) > cor_level).mean()),
    ).reset_index()
    cs = {}
    for stat, block in summary.groupby("statistic", sort=False):
        ok = block.loc[block["prop_above"] > certainty, "drop_proportion"]
        cs[stat] = float(ok.max()) if len(ok) else 0.0
    summary["cs_coefficient"] = summary["statistic"].map(cs)
    summary.attrs.update(cor_level=cor_level, certainty=certainty)
    return summary
