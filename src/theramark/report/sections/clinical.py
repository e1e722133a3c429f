"""Report section of the ``clinical`` analysis: therapy × time on every questionnaire total."""

from __future__ import annotations

from theramark.report.document import Section, Table, Text
from theramark.report.sections._effects import effects_table

ORDER = 21


def sections(files) -> list[Section]:
    """Symptom change by arm against the reference arm, from ``OUT/group/clinical/``."""
    table = files.table("therapy_time") if files.exists else None
    if table is None:
        return []
    design = files.parameters.get("design", {})
    section = Section("clinical", "Symptoms: therapy × time", order=ORDER)
    section.add(Text(
        f"Each questionnaire total was modelled as total ~ group × session with a random "
        f"intercept per participant (REML, Satterthwaite degrees of freedom; the exact "
        f"change-score OLS when every participant has both sessions). The estimate is the "
        f"difference between an arm and {design.get('reference_group', 'the reference arm')} in "
        f"mean change from {design.get('baseline', 'baseline')}; negative values mean more "
        f"improvement on scales where higher is worse. q: Benjamini–Hochberg over the "
        f"instruments of each contrast. Healthy controls are not in these models."))
    section.add(Table(effects_table(table, ["instrument", "arm", "session"], digits=1),
                      caption="Arm minus reference in mean change of each total, with 95% CI",
                      source=files.relative("therapy_time")))
    return [section]
