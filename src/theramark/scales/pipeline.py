"""The scales group step: score every questionnaire of a study, compute outcomes, report.

Configuration (``[scales]`` in study.toml)::

    [scales]
    primary = "hamd17"      # outcome instrument; default hamd17 if present, else the first depression scale
    baseline = "pre"
    endpoint = "post"
    errors = "flag"         # one bad answer must not stop a study; problems go to the report
    scoring = {shaps = "continuous"}   # named alternative scorings per instrument

The SHAPS defaults to its continuous scoring (Franken et al. 2007, 14-56) in the pipeline because
group analyses model it as a continuous outcome; ``scoring = {shaps = "original"}`` gives 0-14.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from theramark._io import provenance, write_json, write_tsv
from theramark.config import section
from theramark.errors import BadInputError
from theramark.scales.definitions import available_instruments, load_instrument
from theramark.scales.engine import score
from theramark.scales.outcomes import outcomes, rates_by_group, trajectory_summary
from theramark.study.participants import read_phenotype_table

DEFAULTS = {"primary": "", "baseline": "pre", "endpoint": "post", "errors": "flag",
            "scoring": {"shaps": "continuous"}}


def find_instrument_tables(phenotype_dir: Path) -> dict[str, Path]:
    """Instrument id → phenotype TSV holding its items.

    A file ``<id>.tsv`` is taken first; otherwise any phenotype TSV with item columns
    ``<id>_<n>`` of a known instrument.
    """
    found: dict[str, Path] = {}
    if not phenotype_dir.is_dir():
        return found
    known = available_instruments()
    files = sorted(phenotype_dir.glob("*.tsv"))
    for path in files:
        if path.stem in known:
            found[path.stem] = path
    for path in files:
        with path.open(encoding="utf-8-sig") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
        for ident in known:
            if ident in found:
                continue
            pattern = re.compile(rf"^{re.escape(ident)}_\d+$")
            if any(pattern.match(column) for column in header):
                found[ident] = path
    return found


def choose_primary(requested: str, scored: list[str]) -> str | None:
    """The primary outcome instrument: the requested one, else hamd17, else the first depression scale."""
    if requested:
        if requested not in scored:
            raise BadInputError(
                f"[scales] primary = '{requested}' but that instrument was not found in phenotype/; "
                f"found: {', '.join(scored) or 'none'}"
            )
        return requested
    if "hamd17" in scored:
        return "hamd17"
    for ident in scored:
        if load_instrument(ident).construct == "depression":
            return ident
    return None


def group_step(ctx) -> list:
    """Score every known instrument in ``ctx.bids_dir/phenotype`` and compute outcomes.

    Writes ``group/scales/scores_<id>.tsv`` (+ JSON sidecars), ``group/scales/outcomes.tsv``
    (primary instrument), ``outcomes_all.tsv`` (every instrument measured at baseline and endpoint,
    with an ``instrument`` column) and ``flags.tsv``; sets ``ctx.results["scores"]`` (id →
    DataFrame, with ``group``), ``ctx.results["outcomes"]`` (primary instrument, one row per
    participant), ``ctx.results["outcomes_all"]``, ``ctx.results["scale_flags"]`` and
    ``ctx.results["primary_instrument"]``; returns the report sections.
    """
    from theramark.report.sections.scales import build_sections

    cfg = section(ctx.config, "scales", DEFAULTS)
    if cfg["errors"] not in ("raise", "flag"):
        raise BadInputError(f"[scales] errors must be 'raise' or 'flag', got '{cfg['errors']}'")
    out_dir = ctx.group_dir / "scales"
    groups = None
    if ctx.participants is not None and "group" in ctx.participants.columns:
        groups = ctx.participants[["participant_id", "group"]].astype({"participant_id": str})
    tables = find_instrument_tables(Path(ctx.bids_dir) / "phenotype")
    all_scores: dict[str, pd.DataFrame] = {}
    flag_frames, failures = [], []
    for ident, path in tables.items():
        try:
            table = read_phenotype_table(path)
            scores = score(ident, table, errors=cfg["errors"], source=str(path),
                           scoring=cfg["scoring"].get(ident))
        except BadInputError as exc:
            if cfg["errors"] == "raise":
                raise
            failures.append({"instrument": ident, "participant_id": "", "session": "",
                             "flags": f"not scored: {exc}"})
            continue
        if groups is not None:
            attrs = dict(scores.attrs)
            scores = scores.merge(groups, on="participant_id", how="left")
            scores.attrs.update(attrs)
        all_scores[ident] = scores
        write_tsv(out_dir / f"scores_{ident}.tsv", scores)
        write_json(out_dir / f"scores_{ident}.json",
                   provenance({"instrument": ident, "errors": cfg["errors"],
                               "scoring": scores.attrs["scoring"]}, inputs={"items": path}))
        flagged = scores.loc[scores["flags"] != ""]
        if len(flagged):
            keep = [c for c in ("participant_id", "session", "flags") if c in flagged.columns]
            flag_frames.append(flagged[keep].assign(instrument=ident))
    flag_columns = ["instrument", "participant_id", "session", "flags"]
    frames = [*flag_frames, pd.DataFrame(failures, columns=flag_columns)]
    flags = pd.concat([f for f in frames if len(f)], ignore_index=True) if (
        flag_frames or failures) else pd.DataFrame(columns=flag_columns)
    flags = flags.reindex(columns=flag_columns)
    write_tsv(out_dir / "flags.tsv", flags)

    primary = choose_primary(cfg["primary"], list(all_scores))
    by_instrument = {
        ident: outcomes(table, ident, baseline=cfg["baseline"], endpoint=cfg["endpoint"],
                        source=f"scores_{ident}.tsv")
        for ident, table in all_scores.items()
        if "session" in table.columns
        and {cfg["baseline"], cfg["endpoint"]} <= set(table["session"].dropna())
    }
    outcome_table = by_instrument.get(primary, pd.DataFrame())
    if len(outcome_table):
        write_tsv(out_dir / "outcomes.tsv", outcome_table)
        write_json(out_dir / "outcomes.json", provenance(dict(outcome_table.attrs)))
    all_outcomes = (pd.concat(by_instrument.values(), ignore_index=True) if by_instrument
                    else pd.DataFrame())
    if len(all_outcomes):
        write_tsv(out_dir / "outcomes_all.tsv", all_outcomes)
    ctx.results["outcomes_all"] = all_outcomes
    ctx.results["scores"] = all_scores
    ctx.results["outcomes"] = outcome_table
    ctx.results["scale_flags"] = flags
    ctx.results["primary_instrument"] = primary
    trajectory = (trajectory_summary(all_scores[primary])
                  if primary is not None and "session" in all_scores[primary].columns else None)
    rates = rates_by_group(outcome_table) if len(outcome_table) else None
    return build_sections(all_scores, outcome_table, flags, primary, trajectory=trajectory, rates=rates)
