"""Report sections of the imaging analyses: QC (order 10) and connectivity/activation (order 30).

The builders read what :mod:`theramark.imaging.group` wrote under ``OUT/group/qc/`` and
``OUT/group/imaging/`` and only draw it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def qc_sections(files) -> list[Section]:
    """The QC section from ``OUT/group/qc/`` (nothing when the study has no imaging)."""
    qc, runs = files.table("qc"), files.table("runs")
    if qc is None or runs is None:
        return []
    return _qc_sections(qc, runs, files.table("qc_fc"), files.parameters.get("qc_rules", {}))


def _qc_sections(qc: pd.DataFrame, runs: pd.DataFrame, qc_fc: pd.DataFrame | None,
                 rules: Mapping[str, Any]) -> list[Section]:
    """The QC section: motion, censoring, tSNR, exclusions, failed runs and QC-FC.

    Parameters
    ----------
    qc : DataFrame
        One row per run (``read_qc_table``).
    runs : DataFrame
        The runs table (``participant_runs.tsv``).
    qc_fc : DataFrame, optional
        ``edge, r, p`` from :func:`theramark.imaging.qc.qc_fc`.
    rules : mapping
        The ``[qc]`` exclusion rules used.
    """
    section = Section(id="imaging-qc", title="Imaging quality control", order=10)
    n_runs = len(runs)
    counts = runs["status"].value_counts().to_dict() if n_runs else {}
    # each run's last real status; "reused" (outputs kept from an earlier attempt with the same
    # parameters) is a separate column, counted apart; older tables may hold other statuses
    statuses = ["ok", "excluded", "failed", *sorted(set(counts) - {"ok", "excluded", "failed"})]
    labels = {"excluded": "excluded by QC"}
    reused = (int(runs["reused"].astype(str).str.lower().isin(["true", "1"]).sum())
              if n_runs and "reused" in runs else 0)
    section.add(Text(
        f"{n_runs} functional runs were attempted: "
        + ", ".join(f"{counts.get(s, 0)} {labels.get(s, s)}" for s in statuses)
        + (f" ({reused} of them reused from an earlier attempt with the same parameters and "
           "inputs)" if reused else "")
        + ". Framewise displacement (FD, Power et al. 2012) and DVARS come from the fMRIPrep "
        "confounds; tSNR is the median voxel temporal SNR over kept volumes. A run was excluded "
        "when it broke any of these rules: "
        + "; ".join(f"{k} = {v}" for k, v in rules.items() if v is not None) + "."
    ))
    if len(qc):
        plt = _plt()
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for ax, column, label in zip(axes, ("mean_fd", "percent_censored", "tsnr"),
                                     ("mean FD (mm)", "volumes censored (%)", "median tSNR"),
                                     strict=True):
            values = pd.to_numeric(qc[column], errors="coerce").dropna()
            for task, group in qc.loc[values.index].groupby("task"):
                ax.hist(pd.to_numeric(group[column]), bins=20, alpha=0.6, label=str(task))
            ax.set_xlabel(label)
            ax.set_ylabel("runs")
        axes[0].legend(fontsize=8, title="task")
        fig.tight_layout()
        section.add(Figure(fig, "Distributions of motion, censoring and tSNR over runs."))
        summary = qc.groupby("task")[["mean_fd", "percent_censored", "tsnr"]].median()
        section.add(Table(summary.reset_index(), "Median QC metrics by task."))
        excluded = qc[qc["excluded"].astype(bool)]
        if len(excluded):
            section.add(Table(excluded[["participant_id", "session", "task", "run", "mean_fd",
                                        "percent_censored", "exclusion_reason"]],
                              "Runs excluded by the QC rules."))
    failed = runs[runs["status"] == "failed"] if n_runs else runs
    if len(failed):
        section.add(Table(failed[["participant_id", "session", "task", "run", "message"]],
                          "Runs that failed (the message names the file and the problem); the "
                          "other runs were processed."))
    if qc_fc is not None and len(qc_fc):
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(qc_fc["r"], bins=30, color="#23395d")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("QC-FC r (edge FC vs mean FD)")
        ax.set_ylabel("edges")
        fig.tight_layout()
        share = float((qc_fc["p"] < 0.05).mean() * 100)
        section.add(Figure(fig, f"QC-FC: correlation of each edge with mean FD across runs "
                                f"(Ciric et al. 2017); {share:.1f}% of edges at p < 0.05 "
                                "(uncorrected; about 5% expected without motion artefact), "
                                f"median |r| {qc_fc['r'].abs().median():.2f}."))
    return [section]


def _matrix(edges: pd.Series) -> pd.DataFrame:
    from theramark.imaging.connectivity import edges_to_matrix

    return edges_to_matrix(edges)


def _connectome_figure(edges: pd.Series, coords: pd.DataFrame | None, title: str,
                       vmax: float | None = None, signed: bool = True):
    plt = _plt()
    matrix = _matrix(edges)
    has_coords = coords is not None and set(matrix.index) <= set(coords.index)
    fig = plt.figure(figsize=(11, 4.2) if has_coords else (5, 4.2))
    ax = fig.add_subplot(1, 2, 1) if has_coords else fig.add_subplot(1, 1, 1)
    limit = vmax or float(np.nanmax(np.abs(matrix.to_numpy()))) or 1.0
    if signed:
        image = ax.imshow(matrix.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    else:  # a variability (SD) is never negative: a sequential scale shows its range
        shown = np.where(np.eye(len(matrix), dtype=bool), np.nan, matrix.to_numpy())
        image = ax.imshow(shown, cmap="viridis", vmin=float(np.nanmin(shown)), vmax=limit)
    if len(matrix) <= 40:
        ax.set_xticks(range(len(matrix)), matrix.columns, rotation=90, fontsize=6)
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if has_coords:
        from nilearn import plotting

        glass = fig.add_subplot(1, 2, 2)
        plotting.plot_connectome(matrix.to_numpy(), coords.loc[matrix.index].to_numpy(),
                                 edge_threshold="95%", node_size=12, axes=glass,
                                 display_mode="z", colorbar=False)
    return fig


def imaging_sections(files) -> list[Section]:
    """Connectivity, dynamic FC and task activation sections from ``OUT/group/imaging/``."""
    import nibabel as nib

    if not files.exists:
        return []

    def edges(name: str) -> pd.Series | None:
        table = files.table(name)
        return None if table is None else table.set_index("feature")["value"]

    coords = files.table("roi_coordinates")
    summary = {
        "example": ((files.summary.get("example_run", ""), edges("example_fc"))
                    if files.has("example_fc") else None),
        "fc_mean": edges("fc_mean"), "dfc_mean": edges("dfc_mean"),
        "n_fc": files.summary.get("n_fc_runs"),
        "activation": files.table("activation"),
        "maps": {label: nib.load(files.folder / f"mean_{label}_effect.nii.gz")
                 for label in files.summary.get("maps", [])},
        "coords": None if coords is None else coords.set_index("name")[["x", "y", "z"]],
    }
    return _imaging_sections(summary)


def _imaging_sections(summary: Mapping[str, Any]) -> list[Section]:
    """Connectivity, dynamic FC and task activation sections (order 30).

    Parameters
    ----------
    summary : mapping
        ``example`` (label, Series of one run's FC edges),
        ``fc_mean`` (Series, group-mean Fisher z by edge), ``n_fc`` (runs averaged),
        ``dfc_mean`` (Series), ``activation`` (DataFrame ``roi, contrast, mean, sem, n``),
        ``maps`` (``{contrast label: mean effect image}``), ``coords`` (DataFrame ``x, y, z``
        indexed by ROI name).
    """
    sections = []
    coords = summary.get("coords")
    fc = Section(id="imaging-connectivity", title="Functional connectivity", order=30)
    fc.add(Text(
        "Static connectivity is the Fisher z of the Pearson correlation between denoised ROI "
        "mean time series (nuisance regression, censoring and z-scoring as nilearn's maskers); "
        "dynamic connectivity is the SD over sliding windows of windowed Fisher z."
    ))
    if summary.get("example") is not None:
        label, edges = summary["example"]
        fc.add(Figure(_connectome_figure(edges, coords, f"{label}: FC (Fisher z)"),
                      f"Connectome of one run ({label}); the glass brain shows the strongest 5% "
                      "of edges."))
    if summary.get("fc_mean") is not None:
        fc.add(Figure(_connectome_figure(summary["fc_mean"], coords, "group mean FC (Fisher z)"),
                      f"Group mean connectome over {summary.get('n_fc', '?')} rest runs."))
    if summary.get("dfc_mean") is not None:
        fc.add(Figure(_connectome_figure(summary["dfc_mean"], None,
                                         "mean dFC variability (SD of z)", signed=False),
                      "Dynamic FC variability averaged over runs."))
    if len(fc.blocks) > 1:
        sections.append(fc)
    activation = summary.get("activation")
    maps = summary.get("maps") or {}
    if (activation is not None and len(activation)) or maps:
        task = Section(id="imaging-activation", title="Task activation", order=31)
        task.add(Text(
            "First-level GLM (nilearn) per run with the slice-timing reference from the fMRIPrep "
            "metadata, cosine drift and the nuisance regressors of the chosen strategy; ROI "
            "effects are fitted to each region's mean signal, percent signal change is relative "
            "to the region's mean, and runs are combined by precision-weighted fixed effects."
        ))
        plt = _plt()
        if activation is not None and len(activation):
            for contrast, group in activation.groupby("contrast", sort=False):
                fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(group)), 3))
                ax.bar(range(len(group)), group["mean"], yerr=group["sem"], color="#4a78b5")
                ax.set_xticks(range(len(group)), group["roi"], rotation=90, fontsize=7)
                ax.axhline(0, color="k", lw=0.8)
                ax.set_ylabel("% signal change")
                ax.set_title(contrast, fontsize=9)
                fig.tight_layout()
                task.add(Figure(fig, f"{contrast}: mean ± SEM percent signal change by ROI "
                                     f"(n = {int(group['n'].max())} runs or run combinations)."))
        for label, img in maps.items():
            from nilearn import plotting

            fig = plt.figure(figsize=(9, 3))
            plotting.plot_glass_brain(img, figure=fig, colorbar=True, plot_abs=False,
                                      display_mode="ortho", title=label)
            task.add(Figure(fig, f"Mean effect map of {label} over runs (glass brain)."))
        sections.append(task)
    return sections
