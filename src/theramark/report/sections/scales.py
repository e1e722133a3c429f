"""Report sections of the scales stage: trajectories, response/remission rates, scoring flags.

The builders only draw and lay out tables computed by :mod:`theramark.scales`
(``trajectory_summary``, ``rates_by_group``, the outcomes and the flags tables).
"""

from __future__ import annotations

import pandas as pd

from theramark.report.document import Figure, Section, Table, Text

ORDER = 20


def trajectory_figure(scores: pd.DataFrame, summary: pd.DataFrame, instrument: str,
                      by: str = "group") -> Figure:
    """Individual trajectories (thin lines) and group means with 95% CIs, one panel per group.

    Parameters
    ----------
    scores : DataFrame
        ``participant_id, session, total`` (+ ``by``): one row per participant × session.
    summary : DataFrame
        ``trajectory_summary`` output: ``<by>, session, n, mean, ci_low, ci_high``.
    """
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(summary[by])) if by in summary.columns else ["all"]
    order = list(dict.fromkeys(summary["session"]))
    position = {s: i for i, s in enumerate(order)}
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 0.6, 3.2), sharey=True,
                             squeeze=False)
    data = scores.dropna(subset=["total"])
    if by not in data.columns:
        data = data.assign(**{by: "all"})
    for ax, group in zip(axes[0], groups, strict=True):
        members = data[data[by] == group]
        wide = members.pivot(index="participant_id", columns="session", values="total")
        wide = wide.reindex(columns=[s for s in order if s in wide.columns])
        x = [position[s] for s in wide.columns]
        for row in wide.to_numpy():
            ax.plot(x, row, color="0.6", lw=0.7, alpha=0.6, marker="o", ms=2)
        stats = summary[summary[by] == group]
        sx = [position[s] for s in stats["session"]]
        ax.errorbar(sx, stats["mean"], yerr=[stats["mean"] - stats["ci_low"],
                                             stats["ci_high"] - stats["mean"]],
                    color="#23395d", lw=2, marker="o", capsize=4, label="mean ± 95% CI")
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.25, len(order) - 0.75)
        ax.set_title(f"{group} (n = {wide.shape[0]})", fontsize=10)
        ax.set_xlabel("session")
    axes[0][0].set_ylabel(f"{instrument} total")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return Figure(fig, caption=f"{instrument} totals by session: individual participants (grey) and "
                               "group means with 95% confidence intervals (t distribution).")


def sections(files) -> list[Section]:
    """The scales section from ``OUT/group/scales/``."""
    if not files.exists:
        return []
    summary = files.summary
    scores = {ident: files.table(f"scores_{ident}") for ident in summary.get("instruments", [])}
    for table in scores.values():  # an empty flag cell reads back as missing
        table["flags"] = table["flags"].astype(object).fillna("")
    outcome_table = files.table("outcomes")
    if outcome_table is None:
        outcome_table = pd.DataFrame()
    outcome_table.attrs.update(summary.get("outcome_definition", {}))
    flags = files.table("flags")
    return build_sections(scores, outcome_table,
                          flags if flags is not None else pd.DataFrame(),
                          summary.get("primary"), trajectory=files.table("trajectory"),
                          rates=files.table("rates"))


def build_sections(scores: dict[str, pd.DataFrame], outcome_table: pd.DataFrame,
                   flags: pd.DataFrame, primary: str | None,
                   trajectory: pd.DataFrame | None = None,
                   rates: pd.DataFrame | None = None) -> list[Section]:
    """The scales section of the report.

    Parameters
    ----------
    scores : dict of str to DataFrame
        Scores per instrument (``theramark.scales.score`` output, with ``group`` joined).
    outcome_table : DataFrame
        ``theramark.scales.outcomes`` output for the primary instrument (may be empty).
    flags : DataFrame
        ``instrument, participant_id, session, flags``: every scoring problem.
    primary : str or None
        The primary outcome instrument.
    trajectory, rates : DataFrame, optional
        ``trajectory_summary`` and ``rates_by_group`` outputs for the primary instrument.
    """
    section = Section(id="scales", title="Questionnaires and clinical outcomes", order=ORDER)
    if not scores:
        section.add(Text("No questionnaire with item columns of a known instrument was found in "
                         "phenotype/."))
        return [section]
    overview = pd.DataFrame([
        {"instrument": ident, "rows": len(table), "scored": int(table["scored"].sum()),
         "prorated": int(table["prorated"].sum()), "with problems": int((table["flags"] != "").sum())}
        for ident, table in scores.items()])
    section.add(Text(f"Scored {len(scores)} instrument(s) from their published rules. Primary "
                     f"outcome: {primary or 'none (no depression scale found)'}."))
    section.add(Table(overview, caption="Instruments scored"))
    if primary is not None and trajectory is not None and len(trajectory):
        section.add(trajectory_figure(scores[primary], trajectory, primary))
        section.add(Table(trajectory, caption=f"{primary}: mean total by group and session (95% CI)"))
    if rates is not None and len(rates):
        attrs = outcome_table.attrs
        reduction = attrs.get("reduction")
        criterion = f">= {100 * reduction:g}% change" if reduction is not None else "no criterion"
        section.add(Table(
            rates[["group", "n", "n_response", "response_rate", "n_remission", "remission_rate"]],
            caption=(f"{primary}: response ({criterion} from {attrs.get('baseline', 'baseline')} "
                     f"to {attrs.get('endpoint', 'endpoint')}) and remission at endpoint, by group")))
    if len(outcome_table) and outcome_table["jt_category"].notna().any():
        counts = (outcome_table.groupby(["group", "jt_category"]).size().unstack(fill_value=0)
                  .reset_index() if "group" in outcome_table.columns else
                  outcome_table["jt_category"].value_counts().rename_axis("jt_category").reset_index())
        section.add(Table(counts, caption="Reliable and clinically significant change "
                                          "(Jacobson & Truax 1991)"))
    if len(flags):
        section.add(Table(flags, caption="Scoring flags: missing, prorated and invalid answers "
                                         "(invalid answers were treated as missing)", max_rows=300))
    else:
        section.add(Text("No missing or invalid answers."))
    return [section]
