"""Report section of the ``study`` analysis: who was studied, the design, what was scanned."""

from __future__ import annotations

from theramark.report.document import Section, Table, Text


def sections(files) -> list[Section]:
    """The study summary (order 2) from ``OUT/group/study/``."""
    if not files.exists:
        return []
    summary = files.summary
    design = summary.get("design", {})
    section = Section("study", "Study", order=2)
    lines = [f"{summary.get('n_participants', 0)} participants"]
    if design.get("groups"):
        lines.append(f"groups {', '.join(design['groups'])}")
    if design.get("sessions"):
        lines.append(f"sessions {' → '.join(design['sessions'])}")
    text = "; ".join(lines) + "."
    roles = []
    if design.get("reference_group"):
        roles.append(f"each therapy arm is compared with {design['reference_group']}")
    if design.get("control_group"):
        roles.append(f"{design['control_group']} are the healthy controls")
    if design.get("baseline"):
        roles.append(f"change is measured from {design['baseline']} to {design['endpoint']}")
    if roles:
        sentence = "; ".join(roles)
        text += " " + sentence[:1].upper() + sentence[1:] + "."
    inferred = [f"{key} ({how})" for key, how in design.get("sources", {}).items()
                if how != "config"]
    if inferred:
        text += " Inferred from the dataset, not declared in the config: " + "; ".join(inferred) + "."
    section.add(Text(text))
    if summary.get("n_runs"):
        section.add(Text(f"{summary['n_runs']} functional runs."))
    for name, caption in (("participants", "Participants by group, site and sex"),
                          ("scanned", "Participants scanned, by group, site and session"),
                          ("runs_by_task", "Runs by task and status")):
        table = files.table(name)
        if table is not None:
            section.add(Table(table, caption=caption, source=files.relative(name)))
    return [section]
