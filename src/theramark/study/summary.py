"""The ``study`` analysis of the group level: who is in the study and what was scanned.

Tables (``OUT/group/study/``): ``participants`` (count by group, site and sex), ``scanned``
(participants scanned by group, site and session, sessions in study order) and ``runs_by_task``
(runs by task and status). The summary records the design (arms, sessions, baseline, endpoint,
reference arm, controls) and where each value came from.
"""

from __future__ import annotations

import pandas as pd

from theramark.results import AnalysisResult
from theramark.study.design import in_study_order


def run(ctx) -> AnalysisResult:
    """Participants by group, site and session; runs by task and status; the study design."""
    result = AnalysisResult("study")
    design = ctx.design
    study = ctx.settings("study")
    participants = ctx.participants
    group_column, site_column = study["group_column"], study["site_column"]
    by = [c for c in (group_column, site_column, "sex") if c in participants.columns]
    if by:
        counts = participants.groupby(by, dropna=False, sort=False).size().rename("n")
        result.add("participants", in_study_order(counts.reset_index(),
                                                  {group_column: design.groups}))
    runs = ctx.results.get("runs")
    if isinstance(runs, pd.DataFrame) and len(runs):
        table = runs.merge(participants, on="participant_id", how="left")
        index = [c for c in (group_column, site_column) if c in table.columns]
        if index:
            scanned = (table.drop_duplicates(["participant_id", "session"])
                       .pivot_table(index=index, columns="session", values="participant_id",
                                    aggfunc="count", fill_value=0))
            columns = [s for s in design.sessions if s in scanned.columns]
            scanned = scanned[columns + [c for c in scanned.columns if c not in columns]]
            result.add("scanned", in_study_order(scanned.reset_index(),
                                                 {group_column: design.groups}))
        by_task = runs.pivot_table(index="task", columns="status", values="participant_id",
                                   aggfunc="count", fill_value=0)
        result.add("runs_by_task", by_task.reset_index())
        result.summary["n_runs"] = int(len(runs))
    result.summary["n_participants"] = int(len(participants))
    result.summary["design"] = design.to_dict()
    result.summary["dataset"] = ctx.bids_dir.resolve().name
    result.parameters = {"study": study}
    return result
