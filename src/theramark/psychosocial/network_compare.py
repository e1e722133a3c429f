"""Network comparison test between two independent groups (NetworkComparisonTest semantics).

van Borkulo et al. (2022), *Psychological Methods* 28:1273–1285: both groups' EBICglasso networks
are estimated; group labels are permuted (participants reassigned at random, group sizes kept) and the
networks re-estimated to build the null distribution of

- global strength invariance ``S = | Σ_{i<j} |w^A_ij| - Σ_{i<j} |w^B_ij| |``,
- network structure invariance ``M = max_{i<j} |w^A_ij - w^B_ij|``,
- and, per edge, ``|w^A_ij - w^B_ij|``.

p-values are ``(#{perm ≥ observed} + 1) / (n_permutations + 1)`` as in NCT.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.psychosocial.network import (
    CORRELATIONS,
    _check_path_arguments,
    ebicglasso,
    prepare_items,
)
from theramark.psychosocial.network_stability import _correlations, fit_correlation_stack

__all__ = ["network_comparison_test"]


def _invariance(net_a: np.ndarray, net_b: np.ndarray, iu: tuple[np.ndarray, np.ndarray]):
    ea = net_a[..., iu[0], iu[1]]
    eb = net_b[..., iu[0], iu[1]]
    global_strength = np.abs(np.abs(ea).sum(axis=-1) - np.abs(eb).sum(axis=-1))
    diff = np.abs(ea - eb)
    return global_strength, diff.max(axis=-1), diff


def network_comparison_test(data_a: pd.DataFrame, data_b: pd.DataFrame, n_permutations: int = 1000, *,
                            gamma: float = 0.5, n_lambda: int = 100, lambda_min_ratio: float = 0.01,
                            corr: str = "pearson", n_jobs: int = 1,
                            random_state: int | np.random.Generator | None = None) -> dict:
    """Permutation test of network invariance between two groups (e.g. women vs men).

    Parameters
    ----------
    data_a, data_b : DataFrame, shapes (n_a, p) and (n_b, p)
        The same item columns for the two groups; rows with missing values are dropped (listwise,
        with a warning) before permuting.
    n_permutations : int
        Random reassignments of participants to groups.
    gamma, n_lambda, lambda_min_ratio, corr
        As in :func:`theramark.psychosocial.ebicglasso`.
    n_jobs : int
        joblib processes.
    random_state : int or Generator, optional

    Returns
    -------
    dict
        ``global_strength`` (DataFrame, one row: ``strength_a``, ``strength_b``, ``statistic``,
        ``p_value``), ``network_structure`` (one row: ``statistic`` = max |edge difference|,
        ``p_value``), ``edges`` (one row per edge: ``weight_a``, ``weight_b``, ``difference``
        = a − b, ``p_value`` uncorrected and ``p_holm`` Holm-adjusted across edges), ``network_a``,
        ``network_b`` (the two estimated networks), ``n_a``, ``n_b``, ``n_permutations``.
    """
    frame_a = prepare_items(data_a, what="data_a")
    frame_b = prepare_items(data_b, what="data_b")
    if list(frame_a.columns) != list(frame_b.columns):
        raise BadInputError("data_a and data_b must have the same columns in the same order",
                            [f"data_a: {list(frame_a.columns)}", f"data_b: {list(frame_b.columns)}"])
    if corr not in CORRELATIONS:
        raise BadInputError(f"corr={corr!r} is not a known correlation; expected one of {CORRELATIONS}")
    if int(n_permutations) < 1:
        raise BadInputError(f"n_permutations: expected at least 1, got {n_permutations}")
    _check_path_arguments(gamma, n_lambda, lambda_min_ratio)
    rng = np.random.default_rng(random_state)
    nodes = list(frame_a.columns)
    p = len(nodes)
    iu = np.triu_indices(p, 1)
    net_a = ebicglasso(frame_a, gamma, n_lambda, lambda_min_ratio, corr)
    net_b = ebicglasso(frame_b, gamma, n_lambda, lambda_min_ratio, corr)
    obs_global, obs_max, obs_diff = _invariance(net_a.to_numpy(), net_b.to_numpy(), iu)

    pooled = np.vstack([frame_a.to_numpy(), frame_b.to_numpy()])
    n_a, n_b = len(frame_a), len(frame_b)
    order = np.argsort(rng.random((int(n_permutations), n_a + n_b)), axis=1)
    stack = np.concatenate([_correlations(pooled, order[:, :n_a], corr),
                            _correlations(pooled, order[:, n_a:], corr)])
    sizes = np.repeat([n_a, n_b], len(order))
    nets = fit_correlation_stack(stack, sizes, gamma, n_lambda, lambda_min_ratio, n_jobs)
    perm_a, perm_b = nets[: len(order)], nets[len(order):]
    # A permutation whose network cannot be estimated (constant column in a group) counts as
    # reaching the observed statistic: conservative.
    perm_global, perm_max, perm_diff = _invariance(perm_a, perm_b, iu)
    perm_global = np.nan_to_num(perm_global, nan=np.inf)
    perm_max = np.nan_to_num(perm_max, nan=np.inf)
    perm_diff = np.nan_to_num(perm_diff, nan=np.inf)
    denom = int(n_permutations) + 1
    tol = 1e-12  # observed values recomputed in a permutation must count as "as extreme"
    p_global = ((perm_global >= obs_global - tol).sum() + 1) / denom
    p_max = ((perm_max >= obs_max - tol).sum() + 1) / denom
    p_edges = ((perm_diff >= obs_diff[None, :] - tol).sum(axis=0) + 1) / denom
    from statsmodels.stats.multitest import multipletests

    p_holm = multipletests(p_edges, method="holm")[1]
    wa, wb = net_a.to_numpy()[iu], net_b.to_numpy()[iu]
    return {
        "global_strength": pd.DataFrame({
            "strength_a": [float(np.abs(wa).sum())], "strength_b": [float(np.abs(wb).sum())],
            "statistic": [float(obs_global)], "p_value": [float(p_global)]}),
        "network_structure": pd.DataFrame({"statistic": [float(obs_max)], "p_value": [float(p_max)]}),
        "edges": pd.DataFrame({
            "node_a": [nodes[i] for i in iu[0]], "node_b": [nodes[j] for j in iu[1]],
            "weight_a": wa, "weight_b": wb, "difference": wa - wb, "p_value": p_edges, "p_holm": p_holm}),
        "network_a": net_a,
        "network_b": net_b,
        "n_a": n_a,
        "n_b": n_b,
        "n_permutations": int(n_permutations),
    }
