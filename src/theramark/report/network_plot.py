"""Figures for symptom networks in the style of R's qgraph and bootnet.

- :func:`plot_network` — nodes placed by a seeded Fruchterman–Reingold layout (edge weights pull
  connected nodes together, as qgraph's ``layout = "spring"``), green positive and red negative
  edges with width and opacity proportional to |w|, nodes coloured by community;
- :func:`plot_centrality` — qgraph's ``centralityPlot``: one panel per measure, z-scored across nodes;
- :func:`plot_stability` — bootnet's case-dropping plot: mean correlation with the original
  centrality against the proportion of cases retained, with 2.5–97.5% quantile bands.

These functions draw; they compute nothing the analysis functions did not already return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

__all__ = ["plot_centrality", "plot_network", "plot_stability", "spring_layout"]

POSITIVE_EDGE = "#009900"   # qgraph "classic" theme
NEGATIVE_EDGE = "#CC0000"
_COMMUNITY_COLOURS = ["#A6CEE3", "#FDBF6F", "#B2DF8A", "#FB9A99", "#CAB2D6", "#FFFF99",
                      "#8DD3C7", "#BEBADA", "#FCCDE5", "#D9D9D9"]
_MEASURE_LABELS = {
    "strength": "Strength", "expected_influence": "Expected influence", "closeness": "Closeness",
    "betweenness": "Betweenness", "bridge_strength": "Bridge strength",
    "bridge_expected_influence_1step": "Bridge EI (1-step)",
    "bridge_expected_influence_2step": "Bridge EI (2-step)", "edge": "Edge weights",
}


def spring_layout(weights: np.ndarray, n_iter: int = 500, random_state: int = 0) -> np.ndarray:
    """Fruchterman–Reingold positions of a weighted network, shape (p, 2), in [-1, 1]².

    Attraction between connected nodes is ``|w| d² / k`` and repulsion between all pairs ``k² / d``
    (k the ideal distance); the step size cools linearly. Seeded, so the same network always gets the
    same picture.
    """
    W = np.abs(np.asarray(weights, dtype=float))
    p = W.shape[0]
    rng = np.random.default_rng(random_state)
    pos = rng.uniform(-1.0, 1.0, size=(p, 2))
    if p == 1:
        return np.zeros((1, 2))
    scale = W.max() if W.max() > 0 else 1.0
    A = W / scale
    np.fill_diagonal(A, 0.0)
    k = np.sqrt(4.0 / p)
    temperature = 0.2
    # A weak pull towards the centre keeps nodes without edges (and separate components) near the
    # rest: without it they drift away, and scaling the picture to fit them collapses the others
    # onto one point.
    gravity = 0.1 / k
    for step in range(n_iter):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt((delta ** 2).sum(axis=2)) + 1e-9
        repulsion = (k * k / dist ** 2)[:, :, None] * delta   # delta is 0 on the diagonal
        attraction = (A * dist / k)[:, :, None] * delta
        force = (repulsion - attraction).sum(axis=1) - gravity * pos * np.sqrt(
            (pos ** 2).sum(axis=1, keepdims=True))
        length = np.sqrt((force ** 2).sum(axis=1, keepdims=True)) + 1e-12
        t = temperature * (1.0 - step / n_iter)
        pos += force / length * np.minimum(length, t)
    pos -= pos.mean(axis=0)
    extent = np.abs(pos).max()
    return pos / extent if extent > 0 else pos


def _network_frame(network: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(network, pd.DataFrame) or network.shape[0] != network.shape[1]:
        raise BadInputError("network: expected a square DataFrame of edge weights labelled by node")
    return network


def plot_network(network: pd.DataFrame, communities: Mapping[str, object] | None = None,
                 layout: str | np.ndarray = "spring", ax=None, *, title: str | None = None,
                 max_weight: float | None = None, random_state: int = 0):
    """Draw a network the way qgraph does.

    Parameters
    ----------
    network : DataFrame, shape (p, p)
        Symmetric edge weights labelled by node (e.g. from :func:`ebicglasso`).
    communities : mapping node → community, optional
        Node fill colours and legend.
    layout : {"spring", "circle"} or ndarray of shape (p, 2)
        Fruchterman–Reingold (seeded), a circle, or given coordinates.
    ax : matplotlib Axes, optional
    max_weight : float, optional
        |w| drawn at full width (qgraph's ``maximum``); default the largest |w|, so that several
        networks can be drawn on one scale.
    random_state : int
        Seed of the spring layout.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    network = _network_frame(network)
    nodes = [str(n) for n in network.columns]
    W = network.to_numpy(dtype=float)
    p = len(nodes)
    if isinstance(layout, np.ndarray):
        if layout.shape != (p, 2):
            raise BadInputError(f"layout: expected coordinates of shape ({p}, 2), got {layout.shape}")
        pos = layout
    elif layout == "spring":
        pos = spring_layout(W, random_state=random_state)
    elif layout == "circle":
        angle = np.pi / 2 - 2 * np.pi * np.arange(p) / p
        pos = np.column_stack([np.cos(angle), np.sin(angle)])
    else:
        raise BadInputError(f"layout={layout!r}: expected 'spring', 'circle' or a (p, 2) array")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 6.5))
    else:
        fig = ax.figure
    top = max_weight if max_weight is not None else (np.abs(W).max() or 1.0)
    iu = np.triu_indices(p, 1)
    order = np.argsort(np.abs(W[iu]))            # strongest edges drawn last, on top
    for e in order:
        i, j = iu[0][e], iu[1][e]
        w = W[i, j]
        if w == 0:
            continue
        strength = min(abs(w) / top, 1.0)
        ax.plot(pos[[i, j], 0], pos[[i, j], 1], color=POSITIVE_EDGE if w > 0 else NEGATIVE_EDGE,
                linewidth=0.5 + 7.5 * strength, alpha=0.25 + 0.75 * strength,
                solid_capstyle="round", zorder=1)
    if communities is not None:
        labels = [communities.get(n, communities.get(c)) for n, c in zip(nodes, network.columns, strict=True)]
        groups = list(dict.fromkeys(labels))
        colours = [_COMMUNITY_COLOURS[groups.index(g) % len(_COMMUNITY_COLOURS)] for g in labels]
    else:
        groups, colours = [], ["#FFFFFF"] * p
    ax.scatter(pos[:, 0], pos[:, 1], s=900 if p <= 25 else 400, c=colours, edgecolors="#333333",
               linewidths=1.2, zorder=2)
    for (x, y), name in zip(pos, nodes, strict=True):
        ax.text(x, y, name if len(name) <= 6 else name[:6], ha="center", va="center",
                fontsize=8 if p <= 25 else 6, zorder=3)
    handles = [Line2D([], [], color=POSITIVE_EDGE, lw=3, label="positive"),
               Line2D([], [], color=NEGATIVE_EDGE, lw=3, label="negative")]
    handles += [Patch(facecolor=_COMMUNITY_COLOURS[i % len(_COMMUNITY_COLOURS)], edgecolor="#333333",
                      label=str(g)) for i, g in enumerate(groups)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig


def plot_centrality(centrality_table: pd.DataFrame,
                    measures: Sequence[str] = ("strength", "closeness", "betweenness", "expected_influence"),
                    scale: str = "z-scores"):
    """qgraph ``centralityPlot``: one panel per measure, nodes on the vertical axis.

    Parameters
    ----------
    centrality_table : DataFrame
        Output of :func:`theramark.psychosocial.centrality` (column ``node`` plus measures).
    measures : sequence of str
        Columns to show (those absent from the table are skipped).
    scale : {"z-scores", "raw"}
        qgraph's default standardizes each measure across nodes (sample SD); a measure that is
        constant across nodes is shown as 0.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    if "node" not in centrality_table.columns:
        raise BadInputError("centrality_table: expected a 'node' column (output of centrality())")
    shown = [m for m in measures if m in centrality_table.columns]
    if not shown:
        raise BadInputError(f"centrality_table: none of the measures {list(measures)} is a column")
    if scale not in ("z-scores", "raw"):
        raise BadInputError(f"scale={scale!r}: expected 'z-scores' or 'raw'")
    nodes = centrality_table["node"].astype(str).tolist()
    y = np.arange(len(nodes))[::-1]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.4 * len(shown) + 1, 0.3 * len(nodes) + 1.5),
                             sharey=True, squeeze=False)
    for ax, measure in zip(axes[0], shown, strict=True):
        values = centrality_table[measure].to_numpy(dtype=float)
        if scale == "z-scores" and np.isfinite(values).sum() >= 2:
            # an undefined measure (e.g. closeness of isolated nodes) stays NaN: no point is drawn
            sd = np.nanstd(values, ddof=1)
            values = (values - np.nanmean(values)) / sd if sd > 0 else np.zeros_like(values)
        ax.plot(values, y, "-o", color="#23395d", markersize=4)
        ax.set_title(_MEASURE_LABELS.get(measure, measure), fontsize=9)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_yticks(y)
        ax.set_yticklabels(nodes, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].set_ylabel("")
    fig.supxlabel("z-score" if scale == "z-scores" else "value", fontsize=9)
    fig.tight_layout()
    return fig


def plot_stability(summary: pd.DataFrame, cor_level: float | None = 0.7):
    """bootnet's case-dropping plot from :func:`case_drop_stability`'s summary table.

    Parameters
    ----------
    summary : DataFrame
        Columns ``statistic``, ``drop_proportion``, ``mean``, ``q025``, ``q975`` (and optionally
        ``cs_coefficient``, shown in the legend).
    cor_level : float, optional
        Horizontal reference line (the CS threshold).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    needed = {"statistic", "drop_proportion", "mean", "q025", "q975"}
    missing = needed - set(summary.columns)
    if missing:
        raise BadInputError(f"summary: missing columns {sorted(missing)} (use case_drop_stability's summary)")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    palette = ["#E41A1C", "#377EB8", "#4DAF4A", "#984EA3", "#FF7F00", "#A65628"]
    for i, (stat, block) in enumerate(summary.groupby("statistic", sort=False)):
        block = block.sort_values("drop_proportion")
        retained = 1.0 - block["drop_proportion"].to_numpy()
        colour = palette[i % len(palette)]
        label = _MEASURE_LABELS.get(stat, stat)
        if "cs_coefficient" in block.columns:
            label += f" (CS = {block['cs_coefficient'].iloc[0]:.2f})"
        ax.fill_between(retained, block["q025"], block["q975"], color=colour, alpha=0.15, linewidth=0)
        ax.plot(retained, block["mean"], "-o", color=colour, markersize=3, label=label)
    if cor_level is not None:
        ax.axhline(cor_level, color="#777777", linestyle="--", linewidth=0.8)
    ax.set_xlim(1.0, 0.0)  # bootnet draws the retained share decreasing to the right
    ax.set_ylim(-1.0, 1.0)
    ax.set_xlabel("Sampled cases (proportion retained)")
    ax.set_ylabel("Average correlation with original sample")
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    ax.grid(True, color="#eeeeee")
    fig.tight_layout()
    return fig
