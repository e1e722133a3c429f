"""Report section of the group statistics: results table, forest plot, spaghetti plots, brain–symptom
scatter plots, normalization and NBS components on a glass brain.

The builders only draw tables computed by :mod:`theramark.group.pipeline` (``results`` is
``ctx.results["group_stats"]``); they compute no statistic.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text

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
    columns = ["feature", "arm", "session", "estimate", "ci_low", "ci_high", "p", "q_fdr",
               "p_fwe", "hedges_g", "hedges_g_ci_low", "hedges_g_ci_high", "n_arm",
               "n_reference", "method"]
    table = group_time[[c for c in columns if c in group_time.columns]]
    if sort:
        table = table.sort_values("p")
    table = table.assign(feature=table["feature"].map(_short)).head(max_rows)
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
    return Figure(fig, caption=f"Forest plot of the {len(top)} features with the smallest p: "
                               "effect size of the difference in change with 95% CI.")


def spaghetti_figure(wide: pd.DataFrame, feature: str, baseline: str, endpoint: str) -> Figure:
    """Pre/post values of one feature, one line per participant, one panel per arm."""
    import matplotlib.pyplot as plt

    data = wide[wide["session"].astype(str).isin([baseline, endpoint])]
    pivot = data.pivot(index="participant_id", columns="session", values=feature)
    pivot = pivot.reindex(columns=[baseline, endpoint])
    arm_of = data.drop_duplicates("participant_id").set_index("participant_id")["group"].astype(str)
    arms = sorted(arm_of.unique())
    fig, axes = plt.subplots(1, len(arms), figsize=(2.4 * len(arms) + 0.5, 2.8), sharey=True,
                             squeeze=False)
    for k, (ax, arm) in enumerate(zip(axes[0], arms, strict=True)):
        rows = pivot.loc[arm_of.index[arm_of == arm].intersection(pivot.index)]
        colour = _ARM_COLOURS[k % len(_ARM_COLOURS)]
        for values in rows.to_numpy():
            ax.plot([0, 1], values, color=colour, alpha=0.35, lw=0.8, marker="o", ms=2)
        ax.plot([0, 1], rows.mean(axis=0).to_numpy(), color="k", lw=2.2, marker="o")
        ax.set_xticks([0, 1], [baseline, endpoint])
        ax.set_title(f"{arm} (n = {rows.dropna().shape[0]})", fontsize=9)
    axes[0][0].set_ylabel(_short(feature), fontsize=8)
    fig.tight_layout()
    return Figure(fig, caption=f"{_short(feature)}: individual {baseline}→{endpoint} values by arm "
                               "(thin lines) and the arm mean (black).")


def scatter_figure(feature_change: pd.DataFrame, symptom_change: pd.Series, feature: str,
                   symptom: str, r: float, p: float) -> Figure:
    import matplotlib.pyplot as plt

    both = pd.concat([feature_change[feature], symptom_change], axis=1, join="inner").dropna()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.scatter(both.iloc[:, 1], both.iloc[:, 0], s=14, color="#23395d", alpha=0.8)
    if len(both) > 2:
        slope, intercept = np.polyfit(both.iloc[:, 1], both.iloc[:, 0], 1)
        xs = np.linspace(both.iloc[:, 1].min(), both.iloc[:, 1].max(), 10)
        ax.plot(xs, intercept + slope * xs, color="#c0392b", lw=1.5)
    ax.set_xlabel(f"change in {symptom}")
    ax.set_ylabel(f"change in {_short(feature)}", fontsize=8)
    ax.set_title(f"r = {r:.2f}, p = {p:.3g}", fontsize=9)
    fig.tight_layout()
    return Figure(fig, caption=f"Brain–symptom link: change in {_short(feature)} against change "
                               f"in {symptom} (one point per patient; least-squares line).")


def literature_coordinates() -> pd.DataFrame:
    """ROI centres (MNI mm) of ``theramark/data/literature_rois.tsv``, indexed by ROI name."""
    path = resources.files("theramark") / "data" / "literature_rois.tsv"
    with resources.as_file(path) as file:
        table = pd.read_csv(file, sep="\t")
    return table.set_index("name")[["x", "y", "z"]]


def connectome_figure(edges: pd.DataFrame, title: str) -> Figure | None:
    """NBS component edges on a glass brain (nilearn ``plot_connectome``); None without coordinates."""
    import matplotlib.pyplot as plt
    from nilearn import plotting

    coords = literature_coordinates()
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
    return Figure(fig, caption=f"{title}: component edges (colour: t of the difference in FC "
                               "change) between literature ROIs.")


def build_sections(results: dict) -> list[Section]:
    """The group statistics section from ``ctx.results["group_stats"]``."""
    cfg = results.get("config", {})
    alpha = float(cfg.get("alpha", 0.05))
    baseline, endpoint = cfg.get("baseline", "pre"), cfg.get("endpoint", "post")
    section = Section(id="group-statistics", title="Group statistics: therapy × time",
                      order=ORDER)
    harmonization = results.get("harmonization", {})
    method_text = (
        "Every feature was modelled as value ~ group × session + covariates with a random "
        "intercept per participant (REML, as lme4; Satterthwaite degrees of freedom). With two "
        "sessions and complete pairs the interaction is computed exactly as an OLS of the change "
        "scores. Effect sizes are Hedges' g of the change scores with 95% CIs. "
        "Multiple comparisons: Benjamini–Hochberg FDR within each contrast and measure, and "
        "family-wise error by the max-T permutation test of the change-score model."
    )
    if harmonization.get("applied"):
        method_text += (f" Site effects were removed with {harmonization.get('model')} "
                        f"(sites {', '.join(map(str, harmonization.get('sites', [])))}; preserved: "
                        f"{', '.join(harmonization.get('preserved', [])) or 'none'}).")
    section.add(Text(method_text))
    group_time = results.get("group_time")
    if group_time is None or group_time.empty:
        section.add(Text("No group × time model could be fitted."))
        return [section]
    n_sig = int((group_time["q_fdr"] < alpha).sum()) if "q_fdr" in group_time else 0
    n_fwe = int((group_time["p_fwe"] < alpha).sum()) if "p_fwe" in group_time else 0
    section.add(Text(f"{group_time['feature'].nunique()} features × {group_time['arm'].nunique()} "
                     f"arm contrast(s): {n_sig} significant at FDR q < {alpha}, {n_fwe} at "
                     f"FWE p < {alpha}."))
    hypotheses = results.get("hypotheses")
    if hypotheses is not None and not hypotheses.empty:
        n_confirmed = int((hypotheses["p_fwe"] < alpha).sum())
        section.add(Text(
            f"Confirmatory family: {hypotheses['feature'].nunique()} a priori hypotheses "
            f"(study.toml [longitudinal] hypotheses), corrected within the family only: "
            f"{n_confirmed} arm contrast(s) at FWE p < {alpha}."))
        confirmatory = results_table(hypotheses, alpha, sort=False)
        confirmatory.caption = (
            "A priori hypotheses: arm minus reference in mean change from baseline; q: "
            "Benjamini–Hochberg within the family of each contrast; p_fwe: max-T permutation "
            "over the hypotheses (endpoint contrast).")
        section.add(confirmatory)
        section.add(forest_figure(hypotheses))
        section.add(Text("Exploratory family: every feature, corrected over all of them."))
    section.add(results_table(group_time, alpha))
    section.add(forest_figure(group_time))

    wide = results.get("wide")
    if wide is not None:
        significant = group_time[group_time["q_fdr"] < alpha].sort_values("p")
        label = "significant (FDR)"
        if significant.empty:
            significant = group_time.sort_values("p")
            label = "strongest (none significant)"
        for feature in significant["feature"].drop_duplicates().head(4):
            figure = spaghetti_figure(wide, feature, baseline, endpoint)
            figure.caption = f"[{label}] " + figure.caption
            section.add(figure)

    if "emmeans" in results:
        emm = results["emmeans"].assign(feature=lambda d: d["feature"].map(_short))
        section.add(Table(emm.head(60), caption="Estimated marginal means (group × session, "
                                                "REML mixed model) of the FDR-significant "
                                                "features, with 95% CIs."))
    if "normalization" in results:
        norm = results["normalization"]
        top = norm.sort_values("p").head(30).assign(feature=lambda d: d["feature"].map(_short))
        section.add(Table(top[["feature", "arm", "n", "distance_pre", "distance_post",
                               "percent_normalized", "fraction_closer", "statistic", "p"]],
                          caption="Normalization: distance of each arm's mean to the healthy-"
                                  "control mean (control-SD units) before and after, percent "
                                  "normalized, and the paired test of per-patient distance."))
    if "links" in results:
        links = results["links"]
        section.add(Table(
            links.sort_values("p").head(30).assign(feature=lambda d: d["feature"].map(_short))[
                ["symptom", "feature", "n", "r", "ci_low", "ci_high", "p", "q_fdr",
                 "p_permutation", "p_fwe"]],
            caption="Brain–symptom links: correlation of feature change with symptom change "
                    "(partial when covariates are set); permutation and max-T FWE p-values."))
        change = results.get("feature_change")
        symptoms = results.get("symptom_change")
        if change is not None and symptoms is not None:
            for row in links.sort_values("p").head(3).itertuples():
                section.add(scatter_figure(change, symptoms[row.symptom], row.feature,
                                           row.symptom, row.r, row.p))
    if "nbs_components" in results:
        components = results["nbs_components"]
        section.add(Table(components, caption="Network-based statistic on FC change (arm vs "
                                              "reference): components and FWE p-values."))
        edges = results.get("nbs_edges")
        if edges is not None:
            for (contrast, component), sub in edges.groupby(["contrast", "component"]):
                if sub["p_fwe"].iloc[0] >= alpha:
                    continue
                figure = connectome_figure(sub, f"NBS {contrast}, component {component}")
                if figure is not None:
                    section.add(figure)
    return [section]
