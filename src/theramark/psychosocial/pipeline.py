"""The psychosocial stage of ``theramark run ... group``: analyses on the scored scales.

``group_step(ctx)`` builds one row per participant at the baseline session from the scored scales
(``ctx.results["scores"]``), ``participants.tsv`` (sex) and ``phenotype/financial_strain.tsv``; runs
the default analyses of the ``[psychosocial]`` table of ``study.toml`` whose variables are present;
writes ``group/psychosocial/*.tsv``; and returns the report sections. An analysis whose data are
missing is skipped with the reason stated in the report, never silently.

``[psychosocial]`` keys (defaults in :data:`DEFAULTS`):

- ``session``: session the cross-sectional analyses use (``pre``).
- ``groups``: keep only these values of the ``participants.tsv`` ``group`` column (default: all).
- ``variables``: label → source, where a source is ``<instrument>.<score column>`` (scored scales),
  a ``participants.tsv`` column, or a ``phenotype/financial_strain.tsv`` column.
- ``mediation``: ``x, m, y, w, models, covariates`` (labels); ``n_boot``, ``seed``, ``ci_method``.
- ``moderation``: ``x, w, y`` (labels; Johnson–Neyman for a continuous W).
- ``breakpoint``: ``x, y``.
- ``network``: ``nodes`` (labels), ``gamma``, ``n_boot`` (case-drop stability; 0 skips).
- ``ema``: ``x, y, moderator`` (a label: baseline score merged per participant), ``lag``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from theramark._io import provenance, write_json, write_tsv
from theramark.config import section
from theramark.errors import BadInputError, TheramarkError
from theramark.study.entities import without_ses_prefix
from theramark.study.participants import read_phenotype_table

DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "session": "pre",
    "groups": [],
    "n_boot": 5000,
    "seed": 0,
    "ci_method": "percentile",
    "variables": {
        "ctq_en": "ctq_sf.emotional_neglect",
        "pss10": "pss10.total",
        "mspss": "mspss.total",
        "ucla3": "ucla3.total",
        "neuroticism": "bfi_short.neuroticism",
        "extraversion": "bfi_short.extraversion",
        "financial_strain": "financial_strain",
        "shaps": "shaps.total",
        "hamd17": "hamd17.total",
        "sex": "sex",
    },
    "mediation": {"x": "ctq_en", "m": ["pss10"], "y": "shaps", "w": "sex",
                  "models": [4, 7, 58], "covariates": []},
    "moderation": {"x": "pss10", "w": "mspss", "y": "shaps"},
    "breakpoint": {"x": "financial_strain", "y": "shaps"},
    "network": {"nodes": ["ctq_en", "pss10", "mspss", "ucla3", "neuroticism", "extraversion",
                          "financial_strain", "shaps", "hamd17"],
                "gamma": 0.5, "n_boot": 0},
    "ema": {"x": "social_contact", "y": "positive_affect", "moderator": "shaps", "lag": False},
}


def baseline_table(ctx, session: str, variables: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """One row per participant at ``session`` with a column per available variable label.

    Returns the table and ``{label: reason}`` for variables that could not be found.
    """
    participants = ctx.participants.copy()
    participants["participant_id"] = participants["participant_id"].astype(str)
    table = participants[["participant_id"]].drop_duplicates().set_index("participant_id")
    scores = ctx.results.get("scores") or {}
    strain = None
    strain_path = Path(ctx.bids_dir) / "phenotype" / "financial_strain.tsv"
    if strain_path.is_file():
        strain = read_phenotype_table(strain_path)
        if "session" in strain.columns:
            strain = strain[strain["session"] == session]
        strain = strain.drop_duplicates("participant_id").set_index("participant_id")
    missing = {}
    for label, source in variables.items():
        instrument, _, column = source.partition(".")
        if column:
            if instrument not in scores:
                missing[label] = f"instrument '{instrument}' was not scored"
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
        elif strain is not None and source in strain.columns:
            table[label] = strain[source].reindex(table.index)
        else:
            missing[label] = (f"'{source}' is neither a scored scale, a participants.tsv column "
                              f"nor a column of {strain_path}")
    return table.reset_index(), missing


def _need(table: pd.DataFrame, labels: list[str], missing: dict) -> str | None:
    absent = [f"{label} ({missing.get(label, 'not configured')})" for label in labels
              if label not in table.columns]
    return "; ".join(absent) if absent else None


def run_analyses(ctx, cfg: dict) -> dict[str, Any]:
    """Run the configured analyses; returns result tables by name and ``skipped`` reasons."""
    from theramark.psychosocial.breakpoint import breakpoint
    from theramark.psychosocial.mediation import mediation
    from theramark.psychosocial.moderation import moderation

    table, missing = baseline_table(ctx, cfg["session"], cfg["variables"])
    if cfg["groups"]:
        if "group" not in ctx.participants.columns:
            raise BadInputError("[psychosocial] groups is set but participants.tsv has no "
                                "'group' column")
        keep = ctx.participants.loc[ctx.participants["group"].isin(cfg["groups"]),
                                    "participant_id"].astype(str)
        if keep.empty:
            raise BadInputError(
                f"[psychosocial] groups {cfg['groups']} match no participant; groups present: "
                f"{', '.join(map(str, sorted(ctx.participants['group'].dropna().unique())))}")
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
            skipped[name] = f"missing {reason}"
            continue
        try:
            results[name] = mediation(
                table, med["x"], ms, med["y"], w=med["w"] if model in (7, 14, 58) else None,
                model=model, covariates=med["covariates"] or None, n_boot=cfg["n_boot"],
                random_state=cfg["seed"], ci_method=cfg["ci_method"])
        except TheramarkError as exc:
            skipped[name] = str(exc)

    mod = cfg["moderation"]
    reason = _need(table, [mod["x"], mod["w"], mod["y"]], missing)
    if reason:
        skipped["moderation"] = f"missing {reason}"
    else:
        try:
            results["moderation"] = moderation(table, mod["x"], mod["w"], mod["y"])
        except TheramarkError as exc:
            skipped["moderation"] = str(exc)

    bp = cfg["breakpoint"]
    reason = _need(table, [bp["x"], bp["y"]], missing)
    if reason:
        skipped["breakpoint"] = f"missing {reason}"
    else:
        try:
            results["breakpoint"] = breakpoint(table, bp["x"], bp["y"])
        except TheramarkError as exc:
            skipped["breakpoint"] = str(exc)

    _network(table, cfg["network"], missing, results, cfg["seed"])
    _ema(ctx, table, cfg["ema"], results)
    return results


def _network(table, net_cfg, missing, results, seed) -> None:
    from theramark.psychosocial.network import centrality, ebicglasso

    nodes = [n for n in net_cfg["nodes"] if n in table.columns]
    absent = [n for n in net_cfg["nodes"] if n not in table.columns]
    if len(nodes) < 3:
        results["skipped"]["network"] = (
            f"fewer than 3 nodes available (missing: {_need(table, absent, missing)})")
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

    path = Path(ctx.bids_dir) / "phenotype" / "ema.tsv"
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


def write_results(results: dict[str, Any], out_dir: Path, parameters: dict) -> list[Path]:
    """Write every result table under ``out_dir`` (atomically); returns the paths."""
    written = []
    for name, value in results.items():
        if not isinstance(value, pd.DataFrame) or name == "data":
            continue
        index = name.startswith("mediation") or name in ("moderation", "network")
        if name == "network":  # a node × node matrix: name its row labels like its columns
            value = value.rename_axis("node")
        written.append(write_tsv(out_dir / f"{name}.tsv", value, index=index))
        attrs = value.attrs
        for key in ("coefficients", "johnson_neyman", "curve", "profile", "davies"):
            if isinstance(attrs.get(key), pd.DataFrame):
                written.append(write_tsv(out_dir / f"{name}_{key}.tsv", attrs[key]))
    skipped = pd.DataFrame(
        [{"analysis": k, "reason": v} for k, v in results["skipped"].items()],
        columns=["analysis", "reason"])
    written.append(write_tsv(out_dir / "skipped.tsv", skipped))
    notes = {name: value.attrs.get("note", "") for name, value in results.items()
             if isinstance(value, pd.DataFrame) and name != "data"}
    write_json(out_dir / "psychosocial.json", {**provenance(parameters), "Notes": notes})
    return written


def group_step(ctx) -> list:
    """Run the psychosocial analyses of the study on the scored scales (see module docstring).

    Returns
    -------
    list of Section
        Path diagrams, conditional effects, Johnson–Neyman and breakpoint plots, the network
        sections and the EMA table (and the reasons for any analysis skipped).
    """
    from theramark.report.sections.psychosocial import build_sections

    cfg = section(ctx.config, "psychosocial", DEFAULTS)
    if not cfg["enabled"]:
        return []
    for key in ("mediation", "moderation", "breakpoint", "network", "ema"):
        unknown = set(cfg[key]) - set(DEFAULTS[key])
        if unknown:
            raise BadInputError(
                f"[psychosocial.{key}]: unknown key(s) {', '.join(sorted(unknown))}; allowed "
                f"keys are {', '.join(sorted(DEFAULTS[key]))}")
    if "participant_id" not in ctx.participants.columns:
        raise BadInputError("participants.tsv: no participant_id column")
    results = run_analyses(ctx, cfg)
    out_dir = ctx.group_dir / "psychosocial"
    write_results(results, out_dir, cfg)
    ctx.results["psychosocial"] = results
    return build_sections(results)
