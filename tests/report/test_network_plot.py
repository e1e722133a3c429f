"""Network figures and the report section (drawing only; values come from the analysis functions)."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.psychosocial.network import centrality
from theramark.report import Report
from theramark.report.network_plot import (
    NEGATIVE_EDGE,
    POSITIVE_EDGE,
    plot_centrality,
    plot_network,
    plot_stability,
    spring_layout,
)
from theramark.report.sections.psychosocial_network import network_sections

NODES = ["lonely", "sleep", "mood", "worry"]


@pytest.fixture
def network() -> pd.DataFrame:
    W = np.array([[0, 0.4, 0.3, -0.2], [0.4, 0, 0.1, 0], [0.3, 0.1, 0, 0.05], [-0.2, 0, 0.05, 0]])
    return pd.DataFrame(W, index=NODES, columns=NODES)


@pytest.fixture
def summary() -> pd.DataFrame:
    rows = []
    for stat in ("strength", "edge"):
        for d in (0.1, 0.3, 0.5):
            rows.append({"statistic": stat, "drop_proportion": d, "mean": 0.9 - d, "q025": 0.7 - d,
                         "q975": 1.0 - d / 2, "prop_above": 1.0, "cs_coefficient": 0.3})
    return pd.DataFrame(rows)


def test_network_plot_colours_and_widths(network):
    fig = plot_network(network, {"lonely": "social", "sleep": "somatic", "mood": "affect", "worry": "affect"})
    lines = [ln for ln in fig.axes[0].lines]
    colours = {mcolors.to_hex(ln.get_color()).upper() for ln in lines}
    assert POSITIVE_EDGE.upper() in colours and NEGATIVE_EDGE.upper() in colours
    assert len(lines) == 5                                  # non-zero edges only
    widths = sorted(ln.get_linewidth() for ln in lines)
    assert widths[-1] > widths[0]                           # width grows with |w|


def test_spring_layout_is_seeded_and_pulls_strong_edges_together(network):
    a = spring_layout(network.to_numpy(), random_state=1)
    b = spring_layout(network.to_numpy(), random_state=1)
    np.testing.assert_array_equal(a, b)
    dist = np.linalg.norm(a[:, None] - a[None], axis=2)
    assert dist[0, 1] < dist[1, 3]                          # lonely–sleep edge vs unconnected pair


def test_centrality_and_stability_plots(network, summary):
    table = centrality(network)
    fig = plot_centrality(table)
    assert len(fig.axes) == 4
    x = fig.axes[0].lines[0].get_xdata()
    assert np.mean(x) == pytest.approx(0, abs=1e-12) and np.std(x, ddof=1) == pytest.approx(1)
    fig2 = plot_stability(summary)
    assert fig2.axes[0].get_xlim() == (1.0, 0.0)
    with pytest.raises(BadInputError):
        plot_stability(summary.drop(columns="q025"))
    with pytest.raises(BadInputError):
        plot_centrality(table, measures=("degree",))


def test_report_section_renders(network, summary, tmp_path):
    network.attrs.update(n_obs=200, corr="pearson", lambda_=0.05)
    sections = network_sections(network, centrality(network), summary)
    assert sections[0].order == 62 and sections[0].id == "psychosocial-network"
    path = Report("test").add(*sections).write(tmp_path / "report.html")
    text = path.read_text()
    assert "EBICglasso" in text and "CS(cor" in text and "data:image/png;base64" in text


def test_spring_layout_keeps_nodes_apart_when_one_is_isolated():
    """An isolated node used to fly off and, once the picture was scaled to fit it, the other
    eight collapsed onto one point (the demo's psychosocial network)."""
    rng = np.random.default_rng(0)
    weights = np.zeros((9, 9))
    for i in range(8):
        for j in range(i + 1, 8):
            if rng.random() < 0.5:
                weights[i, j] = weights[j, i] = rng.uniform(0.05, 0.4)
    pos = spring_layout(weights)
    distance = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    assert distance.min() > 0.1
    assert np.abs(pos).max() == pytest.approx(1.0)
