"""Report sections of the ``dynamics`` (dFC states, order 35) and ``precedence`` (order 42) analyses.

They read ``OUT/group/dynamics/`` and ``OUT/group/precedence/`` and draw what is there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text

ORDER = 35
PRECEDENCE_ORDER = 42


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _k_figure(selection: pd.DataFrame, chosen: int | None) -> Figure:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    for ax, column, label in zip(axes, ("inertia", "silhouette", "split_half_r"),
                                 ("within-cluster distance (elbow)", "silhouette",
                                  "split-half centroid r"), strict=True):
        values = pd.to_numeric(selection[column], errors="coerce")
        ax.plot(selection["k"], values, marker="o", color="#2b6cb0")
        if chosen:
            ax.axvline(chosen, color="#c53030", lw=1, ls="--")
        ax.set_xlabel("number of states k")
        ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return Figure(fig, caption="Choosing k: the elbow of the within-cluster distance, the "
                               "silhouette and the split-half reproducibility of the centroids "
                               "(halves of participants); dashed: the declared k.")


def _centroid_matrices(centroids: pd.DataFrame) -> tuple[list[np.ndarray], list[str]]:
    rois = list(dict.fromkeys([*centroids["roi_a"], *centroids["roi_b"]]))
    position = {r: i for i, r in enumerate(rois)}
    matrices = []
    for _, rows in centroids.groupby("state", sort=True):
        m = np.zeros((len(rois), len(rois)))
        a = rows["roi_a"].map(position).to_numpy()
        b = rows["roi_b"].map(position).to_numpy()
        m[a, b] = m[b, a] = rows["value"].to_numpy(float)
        matrices.append(m)
    return matrices, rois


def _centroid_figure(matrices: list[np.ndarray], rois: list[str], occupancy: dict[int, float]
                     ) -> Figure:
    plt = _plt()
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    limit = max(float(np.abs(m).max()) for m in matrices) or 1.0
    for k, (ax, m) in enumerate(zip(axes[0], matrices, strict=True), start=1):
        image = ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"state {k} ({occupancy.get(k, float('nan')):.0%} of windows)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(range(len(rois)))
        ax.set_yticklabels(rois if k == 1 else [], fontsize=5)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="Fisher z")
    return Figure(fig, caption="State centroids: the mean windowed connectivity of each state.")


def _connectome_figure(matrices: list[np.ndarray], rois: list[str], coords: pd.DataFrame | None
                       ) -> Figure | None:
    if coords is None or not set(rois) <= set(coords.index):
        return None
    from nilearn import plotting

    plt = _plt()
    n = len(matrices)
    fig = plt.figure(figsize=(3.6 * n, 2.4))
    xyz = coords.loc[rois, ["x", "y", "z"]].to_numpy(float)
    for k, m in enumerate(matrices, start=1):
        ax = fig.add_subplot(1, n, k)
        ax.axis("off")
        plotting.plot_connectome(m, xyz, axes=ax, display_mode="z", edge_threshold="95%",
                                 node_size=8, edge_cmap="RdBu_r", title=f"state {k}",
                                 colorbar=False)
    return Figure(fig, caption="The strongest 5% of each state's edges on a glass brain "
                               "(axial view).")


def _occupancy_figure(occupancy: pd.DataFrame) -> Figure:
    plt = _plt()
    states = sorted(occupancy["state"].unique())
    fig, axes = plt.subplots(1, len(states), figsize=(3.2 * len(states), 2.8), squeeze=False,
                             sharey=True)
    sessions = list(dict.fromkeys(occupancy["session"].astype(str)))
    for ax, state in zip(axes[0], states, strict=True):
        rows = occupancy[occupancy["state"] == state]
        for group, by_group in rows.groupby("group", sort=False):
            x = [sessions.index(s) for s in by_group["session"].astype(str)]
            se = by_group["sd"].to_numpy(float) / np.sqrt(by_group["n"].to_numpy(float))
            ax.errorbar(x, by_group["mean"], yerr=se, marker="o", capsize=2, label=str(group))
        ax.set_xticks(range(len(sessions)))
        ax.set_xticklabels(sessions)
        ax.set_title(f"state {state}", fontsize=9)
        ax.set_ylabel("fractional occupancy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return Figure(fig, caption="Fractional occupancy of each state by arm and session "
                               "(mean ± SE over runs).")


def _surrogate_figure(surrogates: pd.DataFrame) -> Figure:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    z = ((surrogates["dfc_variability"] - surrogates["null_mean"]) / surrogates["null_sd"])
    axes[0].hist(z.dropna(), bins=20, color="#2b6cb0")
    axes[0].axvline(0, color="k", lw=1)
    axes[0].set_xlabel("dFC variability, z against the run's surrogates")
    axes[0].set_ylabel("runs")
    axes[1].hist(surrogates["p"], bins=np.linspace(0, 1, 11), color="#718096")
    axes[1].set_xlabel("surrogate p-value per run")
    fig.tight_layout()
    return Figure(fig, caption="The stationary null: each run's dFC variability against surrogates "
                               "with the same spectrum and covariance but no dynamics. Under the "
                               "null the p-values are uniform and z centred on 0.")


def sections(files) -> list[Section]:
    """The dFC-states section, from ``OUT/group/dynamics/``."""
    if not files.exists:
        return []
    parameters, summary = files.parameters, files.summary
    cfg = parameters.get("dynamics", {})
    selection, metrics = files.table("k_selection"), files.table("state_metrics")
    if selection is None and metrics is None:
        return []
    section = Section("dynamics", "Brain dynamics: dynamic-FC states", order=ORDER)
    method = cfg.get("method", "kmeans")
    how = (f"windowed connectivity ({parameters.get('window_volumes')} volumes = "
           f"{cfg.get('window_s')} s, step {parameters.get('step_volumes')} volume) clustered "
           f"with k-means ({cfg.get('distance')} distance, exemplar windows first; Allen et al. "
           "2014)" if method == "kmeans" else
           "leading eigenvectors of the phase-coherence matrix at every volume clustered with "
           "k-means (LEiDA; Cabral et al. 2017)")
    section.add(Text(
        f"The denoised ROI time series of {summary.get('n_runs', '?')} rest runs "
        f"({summary.get('n_participants', '?')} participants, {summary.get('n_rois', '?')} ROIs) "
        f"were pooled and their {how}. States are common to every participant and session; "
        "state 1 is the most frequent. Their metrics (fractional occupancy, mean dwell time, "
        "switching rate) enter the features table as measure dfcstates, so the therapy × time "
        "models above test them like any other feature."))
    chosen = summary.get("n_states")
    if selection is not None:
        section.add(_k_figure(selection, chosen))
        section.add(Table(selection, caption="Criteria for the number of states",
                          source=files.relative("k_selection")))
    if metrics is None:
        section.add(Text("No states were fitted: " + "; ".join(
            s["reason"] for s in files.skipped if s["step"] == "dynamic-FC states")))
        return [section]
    centroids, occupancy = files.table("centroids"), files.table("occupancy")
    mean_occupancy = {k: float(pd.to_numeric(metrics[f"state{k}_occupancy"]).mean())
                      for k in range(1, int(chosen or 0) + 1) if f"state{k}_occupancy" in metrics}
    if centroids is not None and len(centroids):
        matrices, rois = _centroid_matrices(centroids)
        section.add(_centroid_figure(matrices, rois, mean_occupancy))
        coords = files.sibling("imaging").table("roi_coordinates")
        figure = _connectome_figure(matrices, rois, None if coords is None
                                    else coords.set_index("name") if "name" in coords else None)
        if figure is not None:
            section.add(figure)
    if occupancy is not None and len(occupancy):
        section.add(_occupancy_figure(occupancy))
    surrogates = files.table("surrogates")
    if surrogates is not None and len(surrogates):
        info = summary.get("surrogates", {})
        section.add(Text(
            f"Is there anything dynamic? {info.get('n_runs_beyond_null', '?')} of "
            f"{info.get('n_runs', '?')} runs had more dFC variability than "
            f"{info.get('n_surrogates', '?')} {info.get('method', '')} surrogates at p ≤ 0.05 "
            "(Liégeois et al. 2017: windowed FC of stationary data also fluctuates; states of "
            "runs that do not beat their surrogates may reflect sampling variability)."))
        section.add(_surrogate_figure(surrogates))
    motion = files.table("motion")
    if motion is not None and len(motion):
        flagged = motion[motion["flagged"].astype(str).str.lower() == "true"]
        section.add(Text(
            "Motion check: each state's occupancy was correlated with the runs' mean framewise "
            "displacement. " + (f"Flagged as possibly motion-driven: state(s) "
                                f"{', '.join(map(str, flagged['state']))}." if len(flagged)
                                else "No state was associated with motion.")))
        section.add(Table(motion, caption="States and head motion",
                          source=files.relative("motion")))
    return [section]


def precedence_sections(files) -> list[Section]:
    """The cross-lagged panel models, from ``OUT/group/precedence/``."""
    if not files.exists:
        return []
    paths = files.table("paths")
    if paths is None:
        return []
    summary = files.summary
    section = Section("precedence", "Temporal precedence: does brain change come first?",
                      order=PRECEDENCE_ORDER)
    section.add(Text(
        f"Cross-lagged panel models of {summary.get('brain')} and the {summary.get('symptom')} "
        f"total over sessions {', '.join(map(str, summary.get('sessions', [])))} "
        f"({summary.get('n_participants')} patients), fitted by full-information maximum "
        "likelihood (missing sessions kept). The RI-CLPM (Hamaker et al. 2015) separates stable "
        "between-person differences (random intercepts) from within-person change; its "
        "cross-lagged paths say whether a person's brain deviation at one session predicts their "
        "symptom deviation at the next, and vice versa. Unstandardized estimates with 95% CIs."))
    shown = paths.copy()
    for column in ("estimate", "se", "ci_low", "ci_high"):
        shown[column] = pd.to_numeric(shown[column]).round(3)
    shown["p"] = pd.to_numeric(shown["p"]).map(lambda v: f"{v:.3g}")
    section.add(Table(shown, caption="Lagged paths", source=files.relative("paths")))
    rows = []
    for model, fit in summary.get("fit", {}).items():
        rows.append({"model": model, **{k: fit.get(k) for k in
                                        ("chisq", "df", "pvalue", "cfi", "tli", "rmsea", "srmr")},
                     "warnings": "; ".join(fit.get("warnings", [])) or "none"})
    if rows:
        section.add(Table(pd.DataFrame(rows).round(3), caption="Fit of each model"))
    return [section]
