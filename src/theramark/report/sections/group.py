"""Report section of the ``longitudinal`` analysis: results table, forest plot, spaghetti plots,
brain–symptom scatter plots, normalization and NBS components on a glass brain.

The builders only draw the tables :mod:`theramark.group.pipeline` wrote under
``OUT/group/longitudinal/``; they compute no statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text
from theramark.report.sections._effects import effects_table

ORDER = 40
_ARM_COLOURS = ["#c0392b", "#2874a6", "#7d3c98", "#148f77", "#b9770e", "#5d6d7e"]


def _short(key: str) -> str:
    """``fc|rest|amygdala_L__dacc`` → ``fc rest amygdala_L–dacc``."""
    parts = key.split("|")
    if len(parts) == 3:
        measure, task, feature = parts
        return f"{measure} {task} {feature.replace('__', '–')}"
    return key


def results_table(group_time: pd.DataFrame, alpha: float = 0.05, max_rows: int = 50,
                  sort: bool = True) -> Table:
    table = group_time.sort_values("p") if sort else group_time
    table = effects_table(table.assign(feature=table["feature"].map(_short)).head(max_rows),
                          ["feature", "arm", "session"])
    return Table(table, caption=(
        "Group × session interaction per feature (arm minus reference in mean change from "
        f"baseline), sorted by p; q: Benjamini–Hochberg within contrast and measure; p_fwe: max-T "
        f"permutation family-wise p. Features with q < {alpha} are significant after FDR."))


def forest_figure(group_time: pd.DataFrame, n_features: int = 20) -> Figure:
    """Hedges' g with 95% CI of the strongest features, one marker per arm."""
    import matplotlib.pyplot as plt

    top = (group_time.sort_values("p").drop_duplicates("feature").head(n_features)["feature"]
           .tolist())
    data = group_time[group_time["feature"].isin(top)]
    arms = list(dict.fromkeys(data["arm"]))
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(top) + 1.2))
    offsets = np.linspace(-0.2, 0.2, len(arms)) if len(arms) > 1 else [0.0]
    position = {f: i for i, f in enumerate(reversed(top))}
    for k, arm in enumerate(arms):
        sub = data[data["arm"] == arm]
        y = sub["feature"].map(position).to_numpy(float) + offsets[k]
        ax.errorbar(sub["hedges_g"], y, xerr=[sub["hedges_g"] - sub["hedges_g_ci_low"],
                                              sub["hedges_g_ci_high"] - sub["hedges_g"]],
                    fmt="o", ms=4, capsize=2, color=_ARM_COLOURS[k % len(_ARM_COLOURS)],
                    label=arm)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(top)), [_short(f) for f in reversed(top)], fontsize=7)
    ax.set_xlabel("Hedges' g of change (arm − reference)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return Figure(fig, caption=f"Forest plot of the {len(top)} features with the smallest p, at the "
                               "endpoint: "
                               "effect size of the difference in change with 95% CI.")


def spaghetti_figure(trajectories: pd.DataFrame, feature: str, sessions: list[str],
                     arms: list[str]) -> Figure:
    """Values of one feature over sessions, one line per participant, one panel per group."""
    import matplotlib.pyplot as plt

    data = trajectories[trajectories["feature"] == feature]
    data = data.assign(session=data["session"].astype(str), group=data["group"].astype(str))
    order = [s for s in sessions if s in set(data["session"])]
    pivot = data.pivot(index="participant_id", columns="session", values="value").reindex(
        columns=order)
    arm_of = data.drop_duplicates("participant_id").set_index("participant_id")["group"]
    groups = [a for a in arms if a in set(arm_of)] + sorted(set(arm_of) - set(arms))
    fig, axes = plt.subplots(1, len(groups), figsize=(2.4 * len(groups) + 0.5, 2.8),
                             sharey=True, squeeze=False)
    x = np.arange(len(order))
    for k, (ax, arm) in enumerate(zip(axes[0], groups, strict=True)):
        rows = pivot.loc[arm_of.index[arm_of == arm].intersection(pivot.index)]
        colour = _ARM_COLOURS[k % len(_ARM_COLOURS)]
        for values in rows.to_numpy():
            ax.plot(x, values, color=colour, alpha=0.35, lw=0.8, marker="o", ms=2)
        ax.plot(x, rows.mean(axis=0).to_numpy(), color="k", lw=2.2, marker="o")
        ax.set_xticks(x, order)
        ax.set_title(f"{arm} (n = {len(rows)})", fontsize=9)
    axes[0][0].set_ylabel(_short(feature), fontsize=8)
    fig.tight_layout()
    return Figure(fig, caption=f"{_short(feature)}: individual values by session and group (thin "
                               "lines) and the group mean (black).")


def scatter_figure(points: pd.DataFrame, feature: str, symptom: str, r: float, p: float
                   ) -> Figure:
    """Feature change against symptom change (``points``: ``feature_change, symptom_change``)."""
    import matplotlib.pyplot as plt

    both = points[["feature_change", "symptom_change"]].dropna()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.scatter(both["symptom_change"], both["feature_change"], s=14, color="#23395d", alpha=0.8)
    if len(both) > 2:
        slope, intercept = np.polyfit(both["symptom_change"], both["feature_change"], 1)
        xs = np.linspace(both["symptom_change"].min(), both["symptom_change"].max(), 10)
        ax.plot(xs, intercept + slope * xs, color="#c0392b", lw=1.5)
    ax.set_xlabel(f"change in {symptom}")
    ax.set_ylabel(f"change in {_short(feature)}", fontsize=8)
    ax.set_title(f"r = {r:.2f}, p = {p:.3g}", fontsize=9)
    fig.tight_layout()
    return Figure(fig, caption=f"Brain–symptom link: change in {_short(feature)} against change "
                               f"in {symptom} (one point per patient; least-squares line).")


def connectome_figure(edges: pd.DataFrame, title: str, coords: pd.DataFrame | None
                      ) -> Figure | None:
    """NBS component edges on a glass brain (nilearn ``plot_connectome``).

    ``coords``: ROI centres (``x, y, z`` in MNI mm indexed by name), from the ROI set the study
    used; None (an atlas without coordinates) gives no figure.
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    if coords is None:
        return None
    nodes = sorted(set(edges["node_a"]) | set(edges["node_b"]))
    known = [n for n in nodes if n in coords.index]
    if len(known) < 2:
        return None
    index = {n: i for i, n in enumerate(known)}
    matrix = np.zeros((len(known), len(known)))
    for row in edges.itertuples():
        if row.node_a in index and row.node_b in index:
            matrix[index[row.node_a], index[row.node_b]] = row.t
            matrix[index[row.node_b], index[row.node_a]] = row.t
    fig = plt.figure(figsize=(7.5, 3.0))
    plotting.plot_connectome(matrix, coords.loc[known].to_numpy(float), figure=fig, title=title,
                             node_size=20, edge_cmap="coolwarm", colorbar=True)
    return Figure(fig, caption=f"{title}: component edges (colour: t of the difference in "
                               "connectivity change) between the study's ROIs.")


def methods_text(parameters: dict, summary: dict) -> str:
    """How the therapy × time models were fitted and corrected, from the recorded parameters."""
    cfg = parameters.get("longitudinal", {})
    n_permutations = int(cfg.get("n_permutations", 0) or 0)
    text = (
        "Every feature was modelled as value ~ group × session"
        + (f" + {' + '.join(cfg['covariates'])}" if cfg.get("covariates") else "")
        + " with a random intercept per participant (REML, as lme4; Satterthwaite degrees of "
        "freedom). With two sessions and complete pairs the interaction is computed exactly as an "
        "OLS of the change scores. Effect sizes are Hedges' g of the change scores with 95% CIs. "
        "Multiple comparisons: Benjamini–Hochberg FDR within each contrast and measure")
    if n_permutations:
        text += (f", and family-wise error by the max-T permutation test of the change-score "
                 f"model ({n_permutations} permutations of participants, seed "
                 f"{parameters.get('random_state', 0)}).")
    else:
        text += "; no permutation test was run ([longitudinal] n_permutations = 0), so no "
        text += "family-wise error p-values are reported."
    harmonization = summary.get("harmonization", {})
    if harmonization.get("applied"):
        text += (f" Site effects were removed with {harmonization.get('model')} "
                 f"(sites {', '.join(map(str, harmonization.get('sites', [])))}; preserved: "
                 f"{', '.join(harmonization.get('preserved', [])) or 'none'}; fitted on "
                 f"{harmonization.get('fit_on', 'all')} rows).")
    elif harmonization:
        text += f" No site harmonization ({harmonization.get('reason', 'not applied')})."
    return text


def _at_endpoint(table: pd.DataFrame, design: dict) -> pd.DataFrame:
    """The rows of the endpoint contrast (what the forest plots show)."""
    endpoint = str(design.get("endpoint", ""))
    rows = table[table["session"].astype(str) == endpoint]
    return rows if len(rows) else table


def _coordinates(files) -> pd.DataFrame | None:
    coords = files.sibling("imaging").table("roi_coordinates")
    return None if coords is None else coords.set_index("name")[["x", "y", "z"]]


def sections(files) -> list[Section]:
    """The group statistics section from ``OUT/group/longitudinal/``."""
    parameters, summary = files.parameters, files.summary
    cfg = parameters.get("longitudinal", {})
    design = parameters.get("design", {})
    alpha = float(cfg.get("alpha", 0.05))
    section = Section(id="group-statistics", title="Imaging: therapy × time", order=ORDER)
    group_time = files.table("group_time")
    if group_time is None or group_time.empty:
        return [section.add(Text("No therapy × time model was fitted (see the steps skipped)."))]
    section.add(Text(methods_text(parameters, summary)))
    reference = design.get("reference_group", "the reference arm")
    n_sig = int((group_time["q_fdr"] < alpha).sum())
    n_fwe = int((group_time["p_fwe"] < alpha).sum())
    section.add(Text(f"{group_time['feature'].nunique()} features × {group_time['arm'].nunique()} "
                     f"arm contrast(s) against {reference}: {n_sig} significant at FDR q < "
                     f"{alpha}" + (f", {n_fwe} at FWE p < {alpha}." if cfg.get("n_permutations")
                                   else ".")))
    hypotheses = files.table("hypotheses")
    if hypotheses is not None and not hypotheses.empty:
        n_confirmed = int((hypotheses["p_fwe"] < alpha).sum())
        section.add(Text(
            f"Confirmatory family: {hypotheses['feature'].nunique()} a priori hypotheses "
            f"([longitudinal] hypotheses), corrected within the family only: "
            f"{n_confirmed} arm contrast(s) at FWE p < {alpha}."))
        section.add(forest_figure(_at_endpoint(hypotheses, design)))
        confirmatory = results_table(hypotheses, alpha, sort=False)
        confirmatory.caption = (
            "A priori hypotheses: arm minus reference in mean change from baseline; q: "
            "Benjamini–Hochberg within the family of each contrast; p_fwe: max-T permutation "
            "over the hypotheses (endpoint contrast).")
        confirmatory.source = files.relative("hypotheses")
        section.add(confirmatory)
        section.add(Text("Exploratory family: every feature, corrected over all of them."))
    section.add(forest_figure(_at_endpoint(group_time, design)))
    table = results_table(group_time, alpha)
    table.source = files.relative("group_time")
    section.add(table)

    trajectories = files.table("trajectories")
    if trajectories is not None and len(trajectories):
        sessions = design.get("sessions", [])
        groups = design.get("groups", [])
        for feature in trajectories.sort_values("rank")["feature"].drop_duplicates():
            selection = trajectories.loc[trajectories["feature"] == feature, "selection"].iloc[0]
            figure = spaghetti_figure(trajectories, feature, sessions, groups)
            figure.caption = f"[{selection}] " + figure.caption
            section.add(figure)

    emmeans = files.table("emmeans")
    if emmeans is not None:
        section.add(Table(emmeans.assign(feature=lambda d: d["feature"].map(_short)),
                          caption="Estimated marginal means (group × session, REML mixed model) "
                                  "of the FDR-significant features, with 95% CIs.",
                          source=files.relative("emmeans")))
    norm = files.table("normalization")
    if norm is not None:
        top = norm.sort_values("p").assign(feature=lambda d: d["feature"].map(_short))
        section.add(Table(top[["feature", "arm", "n", "distance_pre", "distance_post",
                               "percent_normalized", "fraction_closer", "statistic", "p"]],
                          caption="Normalization: distance of each arm's mean to the healthy-"
                                  "control mean (control-SD units) before and after, percent "
                                  "normalized, and the paired test of per-patient distance.",
                          source=files.relative("normalization")))
    links = files.table("links")
    if links is not None:
        section.add(Table(
            links.sort_values("p").assign(feature=lambda d: d["feature"].map(_short))[
                ["symptom", "feature", "n", "r", "ci_low", "ci_high", "p", "q_fdr",
                 "p_permutation", "p_fwe"]],
            caption="Brain–symptom links: correlation of feature change with symptom change "
                    "(partial when covariates are set); permutation and max-T FWE p-values.",
            source=files.relative("links")))
        points = files.table("link_points")
        if points is not None:
            for (feature, symptom), sub in points.groupby(["feature", "symptom"], sort=False):
                row = links[(links["feature"] == feature) & (links["symptom"] == symptom)].iloc[0]
                section.add(scatter_figure(sub, feature, symptom, row["r"], row["p"]))
    components = files.table("nbs_components")
    if components is not None:
        section.add(Table(components, caption="Network-based statistic on connectivity change "
                                              "(arm vs reference): components and FWE p-values.",
                          source=files.relative("nbs_components")))
        edges = files.table("nbs_edges")
        coords = _coordinates(files)
        if edges is not None:
            for (contrast, component), sub in edges.groupby(["contrast", "component"]):
                if sub["p_fwe"].iloc[0] >= alpha:
                    continue
                figure = connectome_figure(sub, f"NBS {contrast}, component {component}", coords)
                if figure is not None:
                    section.add(figure)
    return [section]
