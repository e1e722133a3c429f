"""The ``scales`` analysis of the group level: score every questionnaire, compute outcomes.

Configuration (``[scales]`` in study.toml; baseline and endpoint are the study's, ``[study]``)::

    [scales]
    primary = "hamd17"      # outcome instrument; default hamd17 if present, else the first depression scale
    errors = "flag"         # one bad answer must not stop a study; problems go to the report
    scoring = {shaps = "continuous"}   # named alternative scorings per instrument
    totals = {bdi2 = "BDI"}  # totals kept as participants.tsv columns BDI_ses-pre, BDI_ses-post

The SHAPS defaults to its continuous scoring (Franken et al. 2007, 14-56) in the pipeline because
group analyses model it as a continuous outcome; ``scoring = {shaps = "original"}`` gives 0-14.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from theramark.errors import BadInputError
from theramark.results import AnalysisResult
from theramark.scales.definitions import InstrumentLibrary, available_instruments, instrument_library
from theramark.scales.engine import score
from theramark.scales.outcomes import outcomes, rates_by_group, trajectory_summary
from theramark.study.design import in_study_order
from theramark.study.participants import read_phenotype_table, session_columns_to_long


def find_instrument_tables(phenotype_dir: Path, known: list[str] | None = None) -> dict[str, Path]:
    """Instrument id → phenotype TSV holding its items.

    A file ``<id>.tsv`` is taken first; otherwise any phenotype TSV with item columns
    ``<id>_<n>`` of a known instrument. ``known`` lists the instrument ids to look for (a study's
    ``InstrumentLibrary.ids()``); default: the packaged instruments.
    """
    found: dict[str, Path] = {}
    if not phenotype_dir.is_dir():
        return found
    known = available_instruments() if known is None else sorted(set(known))
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


def choose_primary(requested: str, scored: list[str],
                   followed: dict[str, int] | None = None,
                   library: InstrumentLibrary | None = None) -> str | None:
    """The primary outcome instrument.

    The requested one; else the depression scale followed in the most participants (``followed``:
    instrument → participants with a total at two or more sessions), the HAMD-17, the usual
    clinician-rated outcome, first among equals; else the first depression scale found.
    """
    if requested:
        if requested not in scored:
            raise BadInputError(
                f"[scales] primary = '{requested}' but that instrument was not found in phenotype/; "
                f"found: {', '.join(scored) or 'none'}"
            )
        return requested
    library = library or instrument_library()
    depression = [i for i in scored if library.get(i).construct == "depression"]
    if not depression:
        return None
    followed = followed or {}
    return max(depression, key=lambda i: (followed.get(i, 0), i == "hamd17",
                                          -depression.index(i)))


def totals_from_participants(participants: pd.DataFrame, instrument: str, stem: str,
                             source: str = "participants.tsv") -> pd.DataFrame:
    """A scores table of ``instrument`` from wide total columns ``<stem>_ses-<label>``.

    Some datasets keep only totals, one column per session, in participants.tsv (OpenNeuro
    ds003007: ``BDI_ses-pre``, ``BDI_ses-post``). Rows get ``scored`` where the total is present.
    """
    columns = [c for c in participants.columns if str(c).startswith(f"{stem}_ses-")]
    if not columns:
        raise BadInputError(
            f"{source}: [scales] totals maps {instrument} to '{stem}', but there is no "
            f"'{stem}_ses-<label>' column; columns are {', '.join(map(str, participants.columns))}")
    long = session_columns_to_long(participants[["participant_id", *columns]])
    table = long[["participant_id", "session"]].copy()
    table["total"] = pd.to_numeric(long[stem], errors="coerce")
    bad = long[stem].notna() & table["total"].isna()
    if bad.any():
        rows = long.loc[bad, ["participant_id", "session"]].astype(str).agg(" ".join, axis=1)
        raise BadInputError(f"{source}: non-numeric {stem} totals ({', '.join(rows[:5])})")
    table = table.dropna(subset=["total"]).reset_index(drop=True)
    table["scored"] = True
    table["prorated"] = False
    table["flags"] = ""
    table.attrs.update(instrument=instrument, scoring="total given")
    return table


def run(ctx) -> AnalysisResult:
    """Score every instrument found in ``phenotype/`` (and declared totals) and compute outcomes.

    Tables (``OUT/group/scales/``): ``scores_<id>`` per instrument (with ``group``), ``outcomes``
    (primary instrument, one row per participant), ``outcomes_all`` (every instrument measured at
    baseline and endpoint), ``trajectory`` and ``rates`` (primary instrument) and ``flags`` (every
    scoring problem). Hands ``scores``, ``outcomes``, ``outcomes_all`` and ``primary_instrument`` to
    the later analyses through ``ctx.results``.
    """
    cfg = ctx.settings("scales")
    design = ctx.design
    result = AnalysisResult("scales")
    groups = None
    group_column = ctx.settings("study")["group_column"]
    if ctx.participants is not None and group_column in ctx.participants.columns:
        groups = (ctx.participants[["participant_id", group_column]]
                  .rename(columns={group_column: "group"}).astype({"participant_id": str}))
    # study-specific questionnaires: code/theramark/instruments/*.json and [scales] instruments
    library = instrument_library(bids_dir=ctx.bids_dir, paths=cfg["instruments"],
                                 base_dir=ctx.base_dir)
    ctx.results["instruments"] = library
    tables = find_instrument_tables(Path(ctx.bids_dir) / "phenotype", known=library.ids())
    all_scores: dict[str, pd.DataFrame] = {}
    flag_frames, failures = [], []
    inputs: dict[str, str] = {}
    for ident, path in tables.items():
        try:
            table = read_phenotype_table(path)
            scores = score(library.get(ident, cfg["scoring"].get(ident)), table,
                           errors=cfg["errors"], source=str(path))
        except BadInputError as exc:
            if cfg["errors"] == "raise":
                raise
            failures.append({"instrument": ident, "participant_id": "", "session": "",
                             "flags": f"not scored: {exc}"})
            result.skip(f"scoring {ident}", str(exc))
            continue
        all_scores[ident] = scores
        inputs[ident] = str(path)
    participants_path = str(Path(ctx.bids_dir) / "participants.tsv")
    for ident, stem in cfg["totals"].items():
        if ident in all_scores:
            raise BadInputError(f"{ctx.config_source}: [scales] totals names {ident}, whose items "
                                f"are already in {inputs[ident]}")
        library.get(ident)  # an unknown instrument id is an error naming it
        all_scores[ident] = totals_from_participants(ctx.participants, ident, stem,
                                                     participants_path)
        inputs[ident] = f"{participants_path} ({stem}_ses-*)"
    for ident, scores in list(all_scores.items()):
        if groups is not None:
            attrs = dict(scores.attrs)
            scores = scores.drop(columns=["group"], errors="ignore").merge(
                groups, on="participant_id", how="left")
            scores.attrs.update(attrs)
            all_scores[ident] = scores
        result.add(f"scores_{ident}", scores)
        flagged = scores.loc[scores["flags"] != ""]
        if len(flagged):
            keep = [c for c in ("participant_id", "session", "flags") if c in flagged.columns]
            flag_frames.append(flagged[keep].assign(instrument=ident))
    flag_columns = ["instrument", "participant_id", "session", "flags"]
    frames = [*flag_frames, pd.DataFrame(failures, columns=flag_columns)]
    flags = pd.concat([f for f in frames if len(f)], ignore_index=True) if (
        flag_frames or failures) else pd.DataFrame(columns=flag_columns)
    flags = flags.reindex(columns=flag_columns)
    result.add("flags", flags)

    followed = {i: int((t.dropna(subset=["total"]).groupby("participant_id").size() >= 2).sum())
                if "session" in t.columns else 0 for i, t in all_scores.items()}
    primary = choose_primary(cfg["primary"], list(all_scores), followed, library)
    baseline, endpoint = design.baseline, design.endpoint
    by_instrument = {}
    for ident, table in all_scores.items():
        sessions = set(table["session"].dropna().astype(str)) if "session" in table else set()
        if not baseline or not {baseline, endpoint} <= sessions:
            result.skip(f"outcomes of {ident}", f"not measured at both baseline ({baseline or '-'}) "
                                                f"and endpoint ({endpoint or '-'})")
            continue
        by_instrument[ident] = outcomes(table, library.get(ident), baseline=baseline,
                                        endpoint=endpoint,
                                        source=f"scores_{ident}.tsv")
    outcome_table = by_instrument.get(primary, pd.DataFrame())
    if len(outcome_table):
        result.add("outcomes", outcome_table)
        result.summary["outcome_definition"] = {
            k: v for k, v in outcome_table.attrs.items() if isinstance(v, str | int | float)}
    all_outcomes = (pd.concat(by_instrument.values(), ignore_index=True) if by_instrument
                    else pd.DataFrame())
    if len(all_outcomes):
        result.add("outcomes_all", all_outcomes)
    ctx.results["outcomes_all"] = all_outcomes
    ctx.results["scores"] = all_scores
    ctx.results["outcomes"] = outcome_table
    ctx.results["primary_instrument"] = primary
    if primary is not None and "session" in all_scores[primary].columns:
        result.add("trajectory", in_study_order(trajectory_summary(all_scores[primary]),
                                                {"group": design.groups,
                                                 "session": design.sessions}))
    if len(outcome_table):
        result.add("rates", in_study_order(rates_by_group(outcome_table),
                                           {"group": design.groups}))
    if not all_scores:
        result.skip("questionnaires", "no phenotype table with the items of a known instrument "
                                      "and no [scales] totals")
    result.summary.update(primary=primary, instruments=list(all_scores),
                          scorings={i: s.attrs.get("scoring") for i, s in all_scores.items()})
    result.parameters = {"scales": cfg, "baseline": baseline, "endpoint": endpoint,
                         "inputs": inputs,
                         "study_instruments": {i: str(library.path(i)) for i in library.study_ids()}}
    return result
