"""Report section for symptom / psychosocial networks (order 62).

Builds :class:`~theramark.report.Section` objects from the result tables of
:mod:`theramark.psychosocial.network` and friends; computes nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text

__all__ = ["ORDER", "network_sections"]

ORDER = 62


def _edge_list(network: pd.DataFrame) -> pd.DataFrame:
    nodes = list(network.columns)
    W = network.to_numpy(dtype=float)
    iu = np.triu_indices(len(nodes), 1)
    table = pd.DataFrame({"node_a": [nodes[i] for i in iu[0]], "node_b": [nodes[j] for j in iu[1]],
                          "weight": W[iu]})
    table = table[table["weight"] != 0]
    return table.reindex(table["weight"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def network_sections(network: pd.DataFrame, centrality_table: pd.DataFrame,
                     stability_summary: pd.DataFrame | None = None, *,
                     edge_intervals: pd.DataFrame | None = None,
                     communities: Mapping[str, object] | None = None,
                     comparison: Mapping[str, object] | None = None,
                     title: str = "Symptom network", gamma: float = 0.5) -> list[Section]:
    """Sections describing an EBICglasso network, its centrality and stability.

    Parameters
    ----------
    network : DataFrame, shape (p, p)
        Partial correlations from :func:`theramark.psychosocial.ebicglasso` (its ``attrs`` —
        ``n_obs``, ``corr``, ``lambda`` — are quoted in the methods text when present).
    centrality_table : DataFrame
        From :func:`theramark.psychosocial.centrality`.
    stability_summary : DataFrame, optional
        The summary table of :func:`case_drop_stability` (CS-coefficients and the case-drop plot).
    edge_intervals : DataFrame, optional
        From :func:`bootstrap_edges` (table of edges with their bootstrap intervals).
    communities : mapping node → community, optional
        Colours nodes in the network plot.
    comparison : dict, optional
        Result of :func:`network_comparison_test`.
    gamma : float
        The EBIC hyperparameter the network was estimated with (stated in the methods text).

    Returns
    -------
    list of Section
        One section (id ``psychosocial-network``, order 62).
    """
    from theramark.report.network_plot import plot_centrality, plot_network, plot_stability

    section = Section(id="psychosocial-network", title=title, order=ORDER)
    attrs = network.attrs
    p = network.shape[0]
    n_edges = int((np.triu(network.to_numpy(dtype=float), 1) != 0).sum())
    corr = attrs.get("corr", "pearson")
    n_obs = attrs.get("n_obs")
    lam = attrs.get("lambda")
    text = (
        f"A Gaussian graphical model of {p} nodes was estimated with the graphical lasso, the tuning "
        f"parameter selected by the extended Bayesian information criterion (EBICglasso, γ = {gamma:g}, "
        "100 λ values with λ_min/λ_max = 0.01, as in R's qgraph; Epskamp & Fried 2018) from "
        f"{corr} correlations"
        + (f" of {n_obs} complete cases" if n_obs is not None else "")
        + f". {n_edges} of {p * (p - 1) // 2} possible edges are non-zero"
        + (f" (selected λ = {lam:.4g})" if lam is not None else "")
        + ". Edges are regularized partial correlations: green positive, red negative, width "
        "proportional to |weight|. Centrality: strength Σ|w|, expected influence Σw, closeness and "
        "betweenness on distances 1/|w| (qgraph's centrality_auto)."
    )
    section.add(Text(text))
    section.add(Figure(plot_network(network, communities), caption="EBICglasso network"))
    section.add(Figure(plot_centrality(centrality_table), caption="Centrality (z-scores across nodes)"))
    section.add(Table(centrality_table, caption="Centrality per node"))
    if edge_intervals is not None:
        section.add(Table(edge_intervals.reindex(edge_intervals["weight"].abs().sort_values(
            ascending=False).index), caption="Edges with non-parametric bootstrap percentile intervals"))
    else:
        section.add(Table(_edge_list(network), caption="Non-zero edges, strongest first"))
    if stability_summary is not None:
        cs = stability_summary.groupby("statistic", sort=False)["cs_coefficient"].first()
        cs_text = ", ".join(f"{k} {v:.2f}" for k, v in cs.items())
        section.add(Text(
            f"Case-dropping bootstrap: correlation-stability coefficients CS(cor = "
            f"{stability_summary.attrs.get('cor_level', 0.7)}) — {cs_text}. Epskamp et al. (2018) "
            "advise not interpreting a centrality order with CS below 0.25, and prefer CS ≥ 0.5."))
        section.add(Figure(plot_stability(stability_summary), caption="Case-dropping stability"))
    if comparison is not None:
        gs = comparison["global_strength"].iloc[0]
        ns = comparison["network_structure"].iloc[0]
        section.add(Text(
            f"Network comparison test ({comparison['n_permutations']} permutations; groups of "
            f"{comparison['n_a']} and {comparison['n_b']}): global strength "
            f"{gs['strength_a']:.3f} vs {gs['strength_b']:.3f} (difference {gs['statistic']:.3f}, "
            f"p = {gs['p_value']:.3g}); largest edge difference {ns['statistic']:.3f} "
            f"(p = {ns['p_value']:.3g})."))
    return [section]
