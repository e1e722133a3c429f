"""The ``clinical`` analysis of the group level: did symptoms change more in a therapy arm?

Every scored instrument measured at two or more sessions gets the therapy × time model of
:func:`theramark.group.longitudinal.group_time_effects` on its total: each arm against the
study's reference arm (``[study] reference_group``, or the arm named like a waitlist / treatment
as usual / no treatment), sessions in the study's order. Healthy controls are left out. Table
``therapy_time`` (``OUT/group/clinical/``): one row per instrument × arm × later session with the
estimate (arm minus reference in mean change of the total), its 95% CI, p, Hedges' g and the
Benjamini–Hochberg q over the instruments of each contrast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.errors import AnalysisError, BadInputError
from theramark.results import AnalysisResult


def run(ctx) -> AnalysisResult:
    """Therapy × time models of every instrument total (see the module docstring)."""
    from theramark.group.inference import fdr_bh
    from theramark.group.longitudinal import group_time_effects

    result = AnalysisResult("clinical")
    design = ctx.design
    scores: dict[str, pd.DataFrame] = ctx.results.get("scores") or {}
    cfg = ctx.settings("longitudinal")
    result.parameters = {"design": design.to_dict(), "method": cfg["method"],
                         "covariates": cfg["covariates"]}
    if not scores:
        result.skip("therapy × time of symptoms", "no questionnaire was scored")
        return result
    if not design.reference_group:
        result.skip("therapy × time of symptoms",
                    "no reference arm: declare [study] reference_group (the waitlist, treatment "
                    f"as usual or no-treatment arm; groups are {', '.join(design.groups) or 'none'})")
        return result
    frames = []
    for ident, table in scores.items():
        if "session" not in table.columns or "group" not in table.columns:
            result.skip(f"therapy × time of {ident}", "scores have no session or no group")
            continue
        data = table[["participant_id", "group", "session", "total"]].copy()
        data["group"] = data["group"].astype(str)
        data["session"] = data["session"].astype(str).str.removeprefix("ses-")
        data = data[data["group"].isin([design.reference_group, *design.arms])]
        sessions = [s for s in design.sessions if s in set(data["session"])]
        arms = [a for a in design.arms if a in set(data["group"])]
        if len(sessions) < 2 or not arms:
            result.skip(f"therapy × time of {ident}",
                        f"measured at {len(sessions)} session(s) in {len(arms)} arm(s) besides "
                        "the reference: needs two sessions and one arm")
            continue
        try:
            effects = group_time_effects(
                data, ["total"], reference_group=design.reference_group, arms=arms,
                sessions=sessions, method=cfg["method"], skip_inestimable=True)
        except (AnalysisError, BadInputError) as exc:
            result.skip(f"therapy × time of {ident}", str(exc))
            continue
        frames.append(effects.drop(columns=["feature"]).assign(instrument=ident))
    if not frames:
        return result
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "instrument", table.pop("instrument"))
    table["q_fdr"] = np.nan
    for _, index in table.groupby("contrast").groups.items():
        table.loc[index, "q_fdr"] = fdr_bh(table.loc[index, "p"].to_numpy())
    result.add("therapy_time", table)
    return result
