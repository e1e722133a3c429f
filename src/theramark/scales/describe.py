"""Human-readable documentation of instrument definitions (``theramark scales list`` / ``show``)."""

from __future__ import annotations

import textwrap

import pandas as pd

from theramark.scales.definitions import Instrument, InstrumentLibrary, ranges_text


def _bands_text(bands) -> list[str]:
    return [band.describe(bands[i + 1] if i + 1 < len(bands) else None) for i, band in enumerate(bands)]


def catalogue(library: InstrumentLibrary | None = None) -> pd.DataFrame:
    """One row per instrument: id, name, construct, items, total range, scorings, where it is defined.

    Parameters
    ----------
    library : InstrumentLibrary, optional
        The instruments to list (default: the packaged ones). ``defined_in`` is ``theramark`` for a
        packaged instrument and the file for a study's own.
    """
    library = InstrumentLibrary() if library is None else library
    study = set(library.study_ids())
    rows = []
    for ident in library.ids():
        inst = library.get(ident)
        rng = f"{inst.range[0]:g}-{inst.range[1]:g}" if inst.range else "no total"
        rows.append({"id": ident, "name": inst.name, "construct": inst.construct,
                     "items": inst.n_items, "total": rng, "rule": inst.total_rule or "-",
                     "scorings": ", ".join(inst.scorings),
                     "defined_in": library.origin(ident) if ident in study else "theramark"})
    return pd.DataFrame(rows)


def describe(inst: Instrument) -> str:
    """Full plain-text documentation of one instrument (every rule with its source)."""
    wrap = lambda text, indent="  ": textwrap.fill(  # noqa: E731
        text, width=96, initial_indent=indent, subsequent_indent=indent)
    lines = [f"{inst.id}: {inst.name}", wrap(f"Source: {inst.source}"), ""]
    if inst.origin:
        lines.insert(2, wrap(f"Defined in: {inst.origin}"))
    if inst.raw.get("source_scoring") and inst.scoring != inst.scorings[0]:
        lines.insert(2, wrap(f"Scoring '{inst.scoring}': {inst.raw['source_scoring']}"))
    direction = {True: "worse", False: "better"}.get(inst.higher_is_worse, "n/a")
    lines.append(f"Construct: {inst.construct}; rated by: {inst.rater}; higher total = {direction}")
    lines.append(f"Scorings: {', '.join(inst.scorings)} (shown: {inst.scoring})")
    lines.append(f"Items: {inst.n_items}, columns {inst.id}_1 ... {inst.id}_{inst.n_items}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(inst.n_items):
        groups.setdefault((int(inst.item_min[i]), int(inst.item_max[i])), []).append(i + 1)
    for (lo, hi), items in groups.items():
        lines.append(f"  allowed answers {lo}-{hi} (integers): items {ranges_text(items)}")
    lines.append(f"Reverse-keyed items: {ranges_text(inst.reverse)}"
                 + (" (scored min + max - answer)" if inst.reverse else ""))
    if inst.recode:
        lines.append("Recoding: " + ", ".join(f"{k} -> {v:g}" for k, v in inst.recode.items()))
    if inst.domains:
        lines.append("Domains:")
    for domain in inst.domains:
        lines.append(f"  domain {domain.name}: {domain.rule} of items {ranges_text(domain.items)}")
    if inst.total_rule:
        rng = f"{inst.range[0]:g}-{inst.range[1]:g}" if inst.range else "?"
        over = "domains" if inst.domains else f"items {ranges_text(inst.total_items)}"
        lines.append(f"Total: {inst.total_rule} of {over}; range {rng}")
    else:
        lines.append("Total: none (the instrument is scored by subscales only)")
    if inst.index_multiplier:
        lines.append(f"Index: total x {inst.index_multiplier:g}")
    lines.append(f"Missing items: at most {inst.max_missing} may be missing for the total"
                 + ("; the rest is prorated" if inst.max_missing else ""))
    if inst.missing_source:
        lines.append(wrap(inst.missing_source))
    if inst.subscales:
        lines.append("Subscales:")
        for sub in inst.subscales:
            lines.append(f"  {sub.name}: {sub.rule} of items {ranges_text(sub.items)} "
                         f"(at most {sub.max_missing} missing)")
            for text in _bands_text(sub.bands):
                lines.append(f"    {text}")
        if inst.raw.get("subscales_source"):
            lines.append(wrap(inst.raw["subscales_source"]))
    for count in inst.counts:
        lines.append(f"Count {count.name}: answers equal to {count.value} on items "
                     f"{ranges_text(count.items)}")
    if inst.bands:
        lines.append(f"Severity bands (on the {inst.bands_on}):")
        lines.extend(f"  {text}" for text in _bands_text(inst.bands))
    else:
        lines.append("Severity bands: none")
    if inst.bands_source:
        lines.append(wrap(inst.bands_source))
    if inst.remission:
        lines.append(f"Remission: total {inst.remission['op']} {inst.remission['value']:g}")
        lines.append(wrap(inst.remission.get("source", "")))
    else:
        lines.append("Remission: no cut-off defined")
    if inst.response:
        lines.append(f"Response: >= {100 * inst.response['reduction']:g}% reduction from baseline")
        lines.append(wrap(inst.response.get("source", "")))
    if inst.reliability:
        lines.append(f"Reliability: {inst.reliability['value']:g} ({inst.reliability['kind']})")
        lines.append(wrap(inst.reliability["source"]))
    else:
        lines.append("Reliability: none stored (give one for the reliable change index)")
    for kind, norm in (inst.norms or {}).items():
        lines.append(f"Norms, {kind}: mean {norm['mean']:g}, SD {norm['sd']:g}")
        lines.append(wrap(norm.get("source", "")))
    if inst.raw.get("notes"):
        lines.append("Notes:")
        lines.append(wrap(inst.raw["notes"]))
    return "\n".join(lines)
