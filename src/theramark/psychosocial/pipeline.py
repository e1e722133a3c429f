"""The ``psychosocial`` analysis of the group level: mediation, moderation, breakpoint, network, EMA.

Every variable is declared in ``[psychosocial] variables`` (label → source), where a source is
``<instrument>.<score column>`` (a scored scale, e.g. ``ctq_sf.emotional_neglect``), a
participants.tsv column (``sex``), or ``<file>.<column>`` for ``phenotype/<file>.tsv``. Each
analysis runs when the variables it names are declared and found (``[psychosocial.mediation]``
x, m, y, w...); otherwise the reason is recorded and shown in the report. Cross-sectional
analyses use one session (``session``, default the study's baseline); the seed is
``[study] random_state``. Tables are written under ``OUT/group/psychosocial/``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from theramark.errors import BadInputError, TheramarkError
from theramark.results import AnalysisResult
from theramark.study.entities import without_ses_prefix
from theramark.study.participants import read_phenotype_table


def _phenotype_column(bids_dir: Path, stem: str, column: str, session: str
                      ) -> tuple[pd.Series | None, str]:
    """``phenotype/<stem>.tsv`` column at ``session`` by participant, or None and the reason."""
    path = Path(bids_dir) / "phenotype" / f"{stem}.tsv"
    if not path.is_file():
        return None, f"'{stem}' is neither a scored instrument nor a file {path}"
    table = read_phenotype_table(path)
    if column not in table.columns:
        return None, f"{path} has no column '{column}'"
    if "session" in table.columns:
        table = table[without_ses_prefix(table["session"]) == session]
    return table.drop_duplicates("participant_id").set_index("participant_id")[column], ""


def baseline_table(ctx, session: str, variables: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """One row per participant at ``session`` with a column per available variable label.

    Returns the table and ``{label: reason}`` for variables that could not be found.
    """
    participants = ctx.participants.copy()
    participants["participant_id"] = participants["participant_id"].astype(str)
    table = participants[["participant_id"]].drop_duplicates().set_index("participant_id")
    scores = ctx.results.get("scores") or {}
    missing = {}
    for label, source in variables.items():
        instrument, _, column = source.partition(".")
        if column:
            if instrument not in scores:
                values, reason = _phenotype_column(ctx.bids_dir, instrument, column, session)
                if values is None:
                    missing[label] = reason
                else:
                    table[label] = values.reindex(table.index)
                continue
            frame = scores[instrument]
            if column not in frame.columns:
                missing[label] = f"scores of '{instrument}' have no column '{column}'"
                continue
            if "session" in frame.columns:
                frame = frame[without_ses_prefix(frame["session"]) == session]
            values = frame.drop_duplicates("participant_id").set_index("participant_id")[column]
            if values.notna().sum() == 0:
                missing[label] = f"'{source}' has no values at session '{session}'"
                continue
            table[label] = values.reindex(table.index)
        elif source in participants.columns:
            table[label] = participants.set_index("participant_id")[source].reindex(table.index)
        else:
            missing[label] = (f"'{source}' is not a participants.tsv column (write "
                              "<instrument>.<score> or <phenotype file>.<column> for others)")
    return table.reset_index(), missing


def _need(table: pd.DataFrame, labels: list[str], missing: dict) -> str | None:
    undeclared = [label for label in labels if not label]
    if undeclared:
        return "its variables are not declared in [psychosocial]"
    absent = [f"{label} ({missing.get(label, 'not in [psychosocial] variables')})"
              for label in labels if label not in table.columns]
    return "missing " + "; ".join(absent) if absent else None


def run_analyses(ctx, cfg: dict, seed: int) -> dict[str, Any]:
    """Run the configured analyses; returns result tables by name and ``skipped`` reasons."""
    from theramark.psychosocial.breakpoint import breakpoint
    from theramark.psychosocial.mediation import mediation
    from theramark.psychosocial.moderation import moderation

    table, missing = baseline_table(ctx, cfg["session"], cfg["variables"])
    group_column = ctx.settings("study")["group_column"]
    if cfg["groups"]:
        if group_column not in ctx.participants.columns:
            raise BadInputError(f"[psychosocial] groups is set but participants.tsv has no "
                                f"'{group_column}' column")
        keep = ctx.participants.loc[ctx.participants[group_column].isin(cfg["groups"]),
                                    "participant_id"].astype(str)
        if keep.empty:
            raise BadInputError(
                f"[psychosocial] groups {cfg['groups']} match no participant; groups present: "
                f"{', '.join(map(str, sorted(ctx.participants[group_column].dropna().unique())))}")
        table = table[table["participant_id"].isin(set(keep))].reset_index(drop=True)
    results: dict[str, Any] = {"data": table, "skipped": {}}
    skipped = results["skipped"]

    med = cfg["mediation"]
    ms = [med["m"]] if isinstance(med["m"], str) else list(med["m"])
    for model in med["models"]:
        name = f"mediation_model{model}"
        labels = [med["x"], *ms, med["y"], *med["covariates"]] + (
            [med["w"]] if model in (7, 14, 58) else [])
        reason = _need(table, labels, missing)
        if reason:
            skipped[name] = reason
            continue
        try:
            results[name] = mediation(
                table, med["x"], ms, med["y"], w=med["w"] if model in (7, 14, 58) else None,
                model=model, covariates=med["covariates"] or None, n_boot=cfg["n_boot"],
                random_state=seed, ci_method=cfg["ci_method"])
        except TheramarkError as exc:
            skipped[name] = str(exc)

    mod = cfg["moderation"]
    reason = _need(table, [mod["x"], mod["w"], mod["y"]], missing)
    if reason:
        skipped["moderation"] = reason
    else:
        try:
            results["moderation"] = moderation(table, mod["x"], mod["w"], mod["y"])
        except TheramarkError as exc:
            skipped["moderation"] = str(exc)

    bp = cfg["breakpoint"]
    reason = _need(table, [bp["x"], bp["y"]], missing)
    if reason:
        skipped["breakpoint"] = reason
    else:
        try:
            results["breakpoint"] = breakpoint(table, bp["x"], bp["y"])
        except TheramarkError as exc:
            skipped["breakpoint"] = str(exc)

    _network(table, cfg["network"], missing, results, seed)
    _ema(ctx, table, cfg["ema"], results)
    return results


def _network(table, net_cfg, missing, results, seed) -> None:
    from theramark.psychosocial.network import centrality, ebicglasso

    nodes = [n for n in net_cfg["nodes"] if n in table.columns]
    absent = [n for n in net_cfg["nodes"] if n not in table.columns]
    if not net_cfg["nodes"]:
        results["skipped"]["network"] = "no [psychosocial.network] nodes declared"
        return
    if len(nodes) < 3:
        results["skipped"]["network"] = (
            f"fewer than 3 nodes available ({_need(table, absent, missing)})")
        return
    try:
        data = table[nodes].apply(pd.to_numeric, errors="raise")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # listwise deletion is reported through attrs
            network = ebicglasso(data, gamma=net_cfg["gamma"])
        results["network"] = network
        results["centrality"] = centrality(network)
        if absent:
            results["network_note"] = f"nodes left out (no data): {', '.join(absent)}"
        if net_cfg["n_boot"]:
            from theramark.psychosocial.network_stability import case_drop_stability

            _, summary = case_drop_stability(data.dropna(), n_boot=net_cfg["n_boot"],
                                             random_state=seed)
            results["network_stability"] = summary
    except (TheramarkError, ValueError, TypeError) as exc:
        results["skipped"]["network"] = str(exc)


def _ema(ctx, table, ema_cfg, results) -> None:
    from theramark.psychosocial.ema import ema_compliance, ema_multilevel

    if not (ema_cfg["x"] and ema_cfg["y"]):
        results["skipped"]["ema"] = "no [psychosocial.ema] x and y declared"
        return
    path = Path(ctx.bids_dir) / "phenotype" / f"{ema_cfg['file']}.tsv"
    if not path.is_file():
        results["skipped"]["ema"] = f"no EMA file ({path})"
        return
    ema = read_phenotype_table(path)
    moderator = ema_cfg.get("moderator") or None
    if moderator:
        if moderator not in table.columns:
            results["skipped"]["ema_moderation"] = f"moderator '{moderator}' not available"
            moderator = None
        else:
            ema = ema.merge(table[["participant_id", moderator]], on="participant_id",
                            how="left")
    try:
        results["ema_compliance"] = ema_compliance(ema, [ema_cfg["y"], ema_cfg["x"]])
        results["ema"] = ema_multilevel(ema, ema_cfg["y"], ema_cfg["x"], moderator=moderator,
                                        lag=ema_cfg["lag"])
    except TheramarkError as exc:
        results["skipped"]["ema"] = str(exc)


#: Result attributes that are tables of their own (written as ``<name>_<attribute>.tsv``).
TABLE_ATTRIBUTES = ("coefficients", "johnson_neyman", "curve", "profile", "davies")
#: Results whose row labels are data (written as the first column).
_INDEXED = ("moderation", "network")


def run(ctx) -> AnalysisResult:
    """Run the declared psychosocial analyses of the study (see the module docstring)."""
    cfg = dict(ctx.settings("psychosocial"))
    sessions = ctx.design.sessions
    cfg["session"] = cfg["session"] or ctx.design.baseline or (sessions[0] if sessions else "")
    result = AnalysisResult("psychosocial", parameters={"psychosocial": cfg,
                                                        "random_state": ctx.random_state})
    if not cfg["enabled"]:
        result.skip("psychosocial analyses", "[psychosocial] enabled = false")
        return result
    if not cfg["variables"]:
        result.skip("psychosocial analyses", "no [psychosocial] variables declared (label = "
                                             "<instrument>.<score>, a participants.tsv column or "
                                             "<phenotype file>.<column>)")
        return result
    results = run_analyses(ctx, cfg, ctx.random_state)
    for name, value in results.items():
        if not isinstance(value, pd.DataFrame):
            continue
        index = name.startswith("mediation") or name in _INDEXED
        if name == "network":  # a node × node matrix: name its row labels like its columns
            value = value.rename_axis("node")
        result.add(name, value, index=index and name != "data")
        for key in TABLE_ATTRIBUTES:
            if isinstance(value.attrs.get(key), pd.DataFrame):
                result.add(f"{name}_{key}", value.attrs[key])
        scalars = {k: v for k, v in value.attrs.items() if not isinstance(v, pd.DataFrame)}
        if scalars:
            result.summary.setdefault("attrs", {})[name] = scalars
    for key in ("network_note",):
        if key in results:
            result.summary[key] = results[key]
    for name, reason in results["skipped"].items():
        result.skip(name, reason)
    return result
