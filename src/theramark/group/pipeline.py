"""The ``longitudinal`` analysis: features table → ComBat → therapy × time models → links → NBS.

Settings come from ``[harmonize]``, ``[longitudinal]`` and the study design (``[study]``: arms,
sessions, baseline, endpoint, reference arm, controls; inferred from the dataset when not
declared). Returns an :class:`~theramark.results.AnalysisResult` whose tables are written under
``OUT/group/longitudinal/``: ``group_time`` (every feature × arm: estimate, 95% CI, p, FDR q,
max-T FWE p, Hedges' g), ``hypotheses`` (the confirmatory family), ``emmeans``,
``normalization``, ``normalization_contrast``, ``links``, ``nbs_components``, ``nbs_edges``, and
the data the report plots (``trajectories``: the values of the features with the smallest p;
``link_points``: feature and symptom change of the strongest links). The features table is
written to ``OUT/group/features/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from theramark.errors import AnalysisError, BadInputError
from theramark.group.features import (
    build_features,
    session_table,
    split_feature_key,
    wide_features,
    write_features,
)
from theramark.results import AnalysisResult


def _read_outputs(ctx) -> pd.DataFrame:
    from theramark.imaging.outputs import read_participant_outputs

    if isinstance(ctx.results.get("participant_outputs"), pd.DataFrame):
        outputs = ctx.results["participant_outputs"]
    else:
        outputs = read_participant_outputs(ctx.out_dir)
    # features of group-fitted models (the dynamics analysis's state metrics) join the table
    states = ctx.results.get("state_features")
    if isinstance(states, pd.DataFrame) and len(states):
        outputs = pd.concat([outputs, states], ignore_index=True)
    return outputs


def _harmonize(wide: pd.DataFrame, sessions: pd.DataFrame, cfg: dict, baseline: str,
               control_group: str, site_column: str) -> tuple[pd.DataFrame, dict]:
    from theramark.group.harmonize import ComBat, LongitudinalComBat

    info: dict[str, Any] = {"applied": False}
    if not cfg["enabled"] or site_column not in sessions or wide.shape[1] == 0:
        info["reason"] = "disabled or no site column"
        return wide, info
    sites = sessions.loc[wide.index, site_column].astype(str)
    if sites.nunique() < 2:
        info["reason"] = "one site"
        return wide, info
    meta = sessions.loc[wide.index].reset_index()
    preserve = [c for c in cfg["preserve"] if c in meta.columns and c != site_column]
    complete = wide.notna().all(axis=1).to_numpy() & meta[preserve].notna().all(axis=1).to_numpy()
    fit_rows = complete.copy()
    if cfg["fit_on"] == "controls" and "group" in meta:
        fit_rows &= (meta["group"].astype(str) == control_group).to_numpy()
    elif cfg["fit_on"] == "baseline":
        fit_rows &= (meta["session"].astype(str) == baseline).to_numpy()
    elif cfg["fit_on"] != "all":
        raise BadInputError(f"[harmonize] fit_on must be all, controls or baseline, got "
                            f"'{cfg['fit_on']}'")
    # a covariate constant where the model is fitted cannot be estimated there
    preserve = [c for c in preserve if meta.loc[fit_rows, c].astype(str).nunique() > 1]
    covars = meta[preserve].copy()
    if "group" in preserve and "session" in preserve:
        # preserve the group × session cells, not only the main effects: the treatment effect is
        # the interaction, and ComBat rescales whatever its model leaves in the residuals
        covars["group_session"] = (meta["group"].astype(str) + ":" + meta["session"].astype(str))
        covars = covars.drop(columns=["group", "session"])
        preserve = [c for c in preserve if c not in ("group", "session")] + ["group_session"]
    for column in covars:
        if not pd.api.types.is_numeric_dtype(covars[column]):
            covars[column] = covars[column].astype(str)
    longitudinal = cfg["longitudinal"] and meta["participant_id"].duplicated().any()
    model_class = LongitudinalComBat if longitudinal else ComBat
    model = model_class(parametric=cfg["parametric"], empirical_bayes=cfg["empirical_bayes"],
                        ref_site=cfg["ref_site"] or None, categorical=[
                            c for c in covars if not pd.api.types.is_numeric_dtype(covars[c])])
    participants = meta["participant_id"].astype(str).to_numpy()
    # one float64 copy of the table, harmonized in place (ComBat works in column blocks)
    values = wide.to_numpy(dtype=float, copy=True)
    missing = ~np.isfinite(values)
    fit_values = values if fit_rows.all() else values[fit_rows]
    model.fit(fit_values, sites.to_numpy()[fit_rows], covars[fit_rows].reset_index(drop=True),
              participants[fit_rows])
    del fit_values
    usable = covars.notna().all(axis=1).to_numpy() & sites.isin(model.sites_).to_numpy()
    gaps = np.flatnonzero(missing.any(axis=0))
    if gaps.size:
        # ComBat is an affine map per feature: fill gaps, transform, and restore the gaps
        means = np.nanmean(values[:, gaps], axis=0)
        rows, columns = np.nonzero(missing[:, gaps])
        values[rows, gaps[columns]] = means[columns]
    if usable.all():
        model.transform(values, sites.to_numpy(), covars.reset_index(drop=True), participants,
                        out=values)
    else:
        values[usable] = model.transform(values[usable], sites.to_numpy()[usable],
                                         covars[usable].reset_index(drop=True),
                                         participants[usable])
    values[missing] = np.nan
    info.update(applied=True, model=model_class.__name__, sites=list(model.sites_),
                preserved=preserve, fit_on=cfg["fit_on"], n_fit_rows=int(fit_rows.sum()))
    return pd.DataFrame(values, index=wide.index, columns=wide.columns, copy=False), info


def _family_corrections(result: pd.DataFrame, model_table: pd.DataFrame, features: list[str],
                        cfg: dict, random_state: int,
                        fdr_families: tuple[str, ...] = ("contrast", "measure"),
                        client: Any = None) -> pd.DataFrame:
    """FDR within each ``fdr_families`` group (contrast × measure); max-T FWE on the change scores.

    The max-T family of an arm is every feature complete at baseline and endpoint; its statistic is
    the t of the arm-vs-reference difference in change (OLS on the change scores of those two
    arms' participants, ``change_covariates`` as Freedman–Lane nuisance), permuting participants.
    Only the endpoint contrast gets an FWE p-value (intermediate sessions: FDR only). With a
    Dask ``client`` the permutations run on its workers (same p-values).
    """
    from theramark.group.inference import fdr_bh, max_t_permutation

    result = result.copy()
    result["measure"] = [split_feature_key(f)[0] for f in result["feature"]]
    result["q_fdr"] = np.nan
    result["p_fwe"] = np.nan
    by = list(fdr_families) if len(fdr_families) > 1 else fdr_families[0]
    for _, index in result.groupby(by).groups.items():
        result.loc[index, "q_fdr"] = fdr_bh(result.loc[index, "p"].to_numpy())
    if not cfg["n_permutations"]:
        return result
    baseline, endpoint = cfg["baseline"], cfg["endpoint"]
    table = model_table.set_index(["participant_id", "session"])
    sessions = table.index.get_level_values("session").astype(str)
    if not {baseline, endpoint} <= set(sessions):
        return result
    pre = table[sessions == baseline].droplevel("session")
    post = table[sessions == endpoint].droplevel("session")
    ids = pre.index.intersection(post.index)
    change = post.loc[ids, features] - pre.loc[ids, features]
    arm = pre.loc[ids, "group"].astype(str)
    reference = cfg["reference_group"]
    for label in sorted(set(result["arm"])):
        keep = arm.isin([label, reference]).to_numpy()
        data = change.to_numpy(float)[keep]
        cols = np.isfinite(data).all(axis=0)
        nuisance_cols = [c for c in cfg["change_covariates"] if c in pre.columns]
        nuisance = pd.get_dummies(pre.loc[ids[keep], nuisance_cols], drop_first=True,
                                  dtype=float) if nuisance_cols else None
        if nuisance is not None and nuisance.isna().any().any():
            continue
        in_arm = (arm[keep] == label).to_numpy(float)
        if cols.sum() == 0 or in_arm.sum() < 2 or (1 - in_arm).sum() < 2:
            continue
        design = np.column_stack([in_arm, np.ones(keep.sum())])
        perm = max_t_permutation(
            data[:, cols], design, np.array([1.0, 0.0]), n_permutations=cfg["n_permutations"],
            nuisance=None if nuisance is None else nuisance.to_numpy(float),
            random_state=random_state, client=client, edge_chunk=cfg.get("chunk_edges") or None)
        names = np.asarray(features)[cols]
        # the max-T family is every complete feature of this arm's change-score contrast
        rows = (result["arm"] == label) & (result["session"].astype(str) == endpoint)
        lookup = pd.Series(perm.p_fwe, index=names)
        result.loc[rows, "p_fwe"] = result.loc[rows, "feature"].map(lookup).to_numpy(float)
    return result


def confirmatory_family(group_time: pd.DataFrame, model_table: pd.DataFrame, keys: list[str],
                        cfg: dict, random_state: int) -> pd.DataFrame:
    """Group × time results of the a priori hypotheses, corrected within their own family.

    FDR runs over the hypotheses of each contrast (all measures together) and the max-T FWE over
    the hypotheses of each arm's endpoint contrast, so a confirmatory test pays only for the
    tests that were planned.

    Raises
    ------
    BadInputError
        When a hypothesis names a feature the study does not have (close names are suggested).
    """
    import difflib


    hypotheses = list(dict.fromkeys(cfg["hypotheses"]))
    unknown = [h for h in hypotheses if h not in keys]
    if unknown:
        raise BadInputError(
            "[longitudinal] hypotheses: feature(s) not in this study's features table",
            [f"{h!r}" + (f" (did you mean {', '.join(map(repr, close))}?)"
                         if (close := difflib.get_close_matches(h, keys, n=3)) else "")
             for h in unknown])
    subset = group_time[group_time["feature"].isin(hypotheses)].drop(columns=["q_fdr", "p_fwe"])
    family = _family_corrections(subset, model_table, hypotheses, cfg, random_state,
                                 fdr_families=("contrast",))
    family["hypothesis"] = family["feature"].map({h: i + 1 for i, h in enumerate(hypotheses)})
    return family.sort_values(["hypothesis", "arm", "session"], kind="stable").reset_index(drop=True)


def _marginal_means(model_table: pd.DataFrame, group_time: pd.DataFrame, cfg: dict,
                    session_order: list[str], max_features: int = 20) -> pd.DataFrame | None:
    """Estimated marginal means (group × session) of the FDR-significant features (REML fits)."""
    from theramark.group.longitudinal import fit_mixed_model

    significant = group_time[group_time["q_fdr"] < cfg["alpha"]].sort_values("p")
    chosen = list(dict.fromkeys(significant["feature"]))[:max_features]
    if not chosen:
        return None
    arms = [a for a in dict.fromkeys(group_time["arm"])]
    levels = [cfg["reference_group"], *arms]
    data = model_table[model_table["group"].astype(str).isin(levels)].copy()
    data["group"] = pd.Categorical(data["group"].astype(str), levels)
    data["session"] = pd.Categorical(data["session"].astype(str), session_order)
    rhs = " + ".join(["group * session", *cfg["covariates"],
                      *(f"{c} * session" for c in cfg["change_covariates"])])
    frames = []
    for feature in chosen:
        subset = data.rename(columns={feature: "value"})
        try:
            fit = fit_mixed_model(subset, f"value ~ {rhs}", groups="participant_id")
        except AnalysisError:
            continue
        frames.append(fit.emmeans(["group", "session"]).assign(feature=feature))
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    return table[["feature", *[c for c in table.columns if c != "feature"]]]


def _edge_matrices(change: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, list[str]]:
    pairs = [split_feature_key(k)[2].split("__") for k in keys]
    nodes = sorted({n for pair in pairs for n in pair})
    position = {n: i for i, n in enumerate(nodes)}
    mats = np.zeros((len(change), len(nodes), len(nodes)))
    values = change[keys].to_numpy(float)
    for j, (a, b) in enumerate(pairs):
        mats[:, position[a], position[b]] = values[:, j]
        mats[:, position[b], position[a]] = values[:, j]
    return mats, nodes


def _trajectories(model_table: pd.DataFrame, group_time: pd.DataFrame, alpha: float,
                  n_features: int = 4) -> pd.DataFrame:
    """Long values of the features the report plots: FDR-significant first, else the smallest p."""
    significant = group_time[group_time["q_fdr"] < alpha].sort_values("p")
    label = "significant (FDR)"
    if significant.empty:
        significant, label = group_time.sort_values("p"), "strongest (none significant)"
    chosen = list(significant["feature"].drop_duplicates().head(n_features))
    long = model_table.melt(id_vars=["participant_id", "session", "group"], value_vars=chosen,
                            var_name="feature", value_name="value")
    long["rank"] = long["feature"].map({f: i + 1 for i, f in enumerate(chosen)})
    long["selection"] = label
    return long.dropna(subset=["value"]).sort_values(["rank", "participant_id"], kind="stable")


def run(ctx) -> AnalysisResult:
    """The imaging group statistics of a study (see the module docstring).

    Reads the participant-level outputs of ``ctx.out_dir``, the participants table and the scored
    scales (``ctx.results["scores"]``); hands the features table on in ``ctx.results["features"]``.
    """
    from theramark.group.inference import nbs
    from theramark.group.links import change_scores
    from theramark.group.longitudinal import group_time_effects
    from theramark.group.normalize import normalization, normalization_contrast
    from theramark.imaging.group import check_not_all_failed, has_participant_outputs

    design = ctx.design
    harmonize_cfg = ctx.settings("harmonize")
    study = ctx.settings("study")
    settings = ctx.settings("longitudinal")
    cfg = {**settings, "baseline": design.baseline, "endpoint": design.endpoint,
           "reference_group": design.reference_group, "control_group": design.control_group}
    result = AnalysisResult("longitudinal")
    result.parameters = {"longitudinal": settings, "harmonize": harmonize_cfg,
                         "design": design.to_dict(), "random_state": ctx.random_state,
                         "rois": ctx.settings("rois")}
    if "participant_outputs" not in ctx.results and not has_participant_outputs(ctx.out_dir):
        result.skip("imaging group statistics", "no participant-level outputs: the study has no "
                                                "imaging")
        return result

    check_not_all_failed(ctx.out_dir)
    features = build_features(_read_outputs(ctx), ctx.participants, ctx.results.get("scores"))
    if features.empty:
        runs = ctx.results.get("runs")
        failed = int((runs["status"] == "failed").sum()) if isinstance(runs, pd.DataFrame) else 0
        raise AnalysisError(
            f"group statistics: no usable participant-level outputs in {ctx.out_dir}"
            + (f" ({failed} run(s) failed" if failed else " (")
            + f"; see {ctx.out_dir / 'participant_runs.tsv'})")
    write_features(features, ctx.group_dir / "features")
    ctx.results["features"] = features
    wide = wide_features(features, measures=cfg["measures"])
    sessions = session_table(features)
    if wide.shape[1] == 0:
        raise AnalysisError(
            f"group statistics: no features of the measures {cfg['measures']} in the participant "
            f"outputs of {ctx.out_dir} (were all runs excluded by QC? see participant_runs.tsv)")
    if "group" not in sessions:
        raise BadInputError("participants.tsv: no 'group' column; the group × time models "
                            "need the arm of every participant")

    wide, harmonization = _harmonize(wide, sessions, harmonize_cfg, cfg["baseline"],
                                     cfg["control_group"], study["site_column"])
    result.summary["harmonization"] = harmonization
    if not harmonization["applied"]:
        result.skip("harmonization", harmonization.get("reason", "not applied"))
    keys = list(wide.columns)
    model_table = wide.join(sessions).reset_index()
    result.summary["n_features"] = len(keys)

    found_sessions = set(model_table["session"].astype(str))
    session_order = [s for s in design.sessions if s in found_sessions]
    session_order += sorted(found_sessions - set(session_order))
    if not design.reference_group:
        result.skip("therapy × time", "no reference arm: declare [study] reference_group (groups "
                                      f"are {', '.join(design.groups) or 'none'})")
        return result
    if len(session_order) < 2:
        result.skip("therapy × time", f"imaging at {len(session_order)} session(s): needs two")
        return result
    arms = [a for a in design.arms if a in set(model_table["group"].dropna().astype(str))]
    if not arms:
        result.skip("therapy × time", "no therapy arm besides the reference arm has imaging")
        return result
    group_time = group_time_effects(
        model_table, keys, reference_group=cfg["reference_group"], arms=arms,
        covariates=cfg["covariates"], change_covariates=cfg["change_covariates"],
        method=cfg["method"], sessions=session_order, skip_inestimable=True,
    )
    client = getattr(ctx, "client", None)  # a Dask client: `theramark run ... group --scheduler`
    group_time = _family_corrections(group_time, model_table, keys, cfg, ctx.random_state,
                                     client=client)
    result.add("group_time", group_time)
    if cfg["hypotheses"]:
        result.add("hypotheses", confirmatory_family(group_time, model_table, keys, cfg,
                                                     ctx.random_state))
    result.add("emmeans", _marginal_means(model_table, group_time, cfg, session_order))
    result.add("trajectories", _trajectories(model_table, group_time, cfg["alpha"]))

    groups = set(model_table["group"].astype(str))
    baseline_endpoint = {cfg["baseline"], cfg["endpoint"]} <= found_sessions
    if not cfg["control_group"]:
        result.skip("normalization", "no healthy-control group: declare [study] control_group")
    elif cfg["control_group"] not in groups:
        result.skip("normalization", f"the control group '{cfg['control_group']}' has no imaging")
    else:
        controls = model_table[model_table["group"].astype(str) == cfg["control_group"]]
        per_control = controls.groupby("participant_id")[keys].mean()
        # features with a control reference (>= 3 controls, non-zero SD)
        norm_keys = [k for k in keys
                     if per_control[k].notna().sum() >= 3 and per_control[k].std() > 0]
        if not norm_keys or not baseline_endpoint:
            result.skip("normalization", "fewer than 3 controls with a feature, or no imaging at "
                                         "baseline and endpoint")
        else:
            result.add("normalization", normalization(
                model_table, norm_keys, control_group=cfg["control_group"],
                baseline=cfg["baseline"], endpoint=cfg["endpoint"]))
            result.add("normalization_contrast", normalization_contrast(
                model_table, norm_keys, reference_group=cfg["reference_group"],
                control_group=cfg["control_group"], baseline=cfg["baseline"],
                endpoint=cfg["endpoint"]))

    # brain–symptom links (patients only)
    wide_indexed = model_table.set_index(["participant_id", "session"])
    patients = wide_indexed[wide_indexed["group"].astype(str) != cfg["control_group"]]
    patient_sessions = set(patients.index.get_level_values("session").astype(str))
    if not {cfg["baseline"], cfg["endpoint"]} <= patient_sessions:
        result.skip("brain–symptom links", "patients lack imaging at baseline or endpoint")
        result.skip("network-based statistic", "patients lack imaging at baseline or endpoint")
        return result
    feature_change = change_scores(patients, keys, cfg["baseline"], cfg["endpoint"])
    _links(result, ctx, cfg, patients, feature_change)
    _nbs(result, cfg, patients, feature_change, keys, ctx.random_state, nbs, client)
    return result


def _links(result: AnalysisResult, ctx, cfg: dict, patients: pd.DataFrame,
           feature_change: pd.DataFrame) -> None:
    """Correlate feature change with the change of each link instrument's total."""
    from theramark.group.links import brain_symptom_links, change_scores

    primary = ctx.results.get("primary_instrument")
    instruments = list(dict.fromkeys(cfg["link_instruments"] or ([primary] if primary else [])))
    if not instruments:
        result.skip("brain–symptom links", "no primary instrument and no [longitudinal] "
                                           "link_instruments")
        return
    covariate_table = None
    if cfg["link_covariates"]:
        covariate_table = patients.reset_index().drop_duplicates("participant_id").set_index(
            "participant_id")[cfg["link_covariates"]]
    tables, symptoms = [], {}
    for instrument in instruments:
        column = f"{instrument}_total"
        if column not in patients:
            result.skip(f"brain–symptom links of {instrument}",
                        f"{instrument} was not scored at the imaging sessions")
            continue
        change = change_scores(patients, [column], cfg["baseline"], cfg["endpoint"])[column]
        try:
            table = brain_symptom_links(feature_change, change, covariate_table,
                                        method=cfg["link_method"],
                                        n_permutations=cfg["n_permutations"],
                                        random_state=ctx.random_state)
        except BadInputError as exc:
            result.skip(f"brain–symptom links of {instrument}", str(exc))
            continue
        tables.append(table.assign(symptom=instrument))
        symptoms[instrument] = change
    if not tables:
        return
    links = pd.concat(tables, ignore_index=True)
    result.add("links", links)
    points = []
    for rank, row in enumerate(links.sort_values("p").head(3).itertuples(), start=1):
        both = pd.concat([feature_change[row.feature].rename("feature_change"),
                          symptoms[row.symptom].rename("symptom_change")], axis=1,
                         join="inner").dropna()
        points.append(both.rename_axis("participant_id").reset_index().assign(
            rank=rank, feature=row.feature, symptom=row.symptom))
    result.add("link_points", pd.concat(points, ignore_index=True))


def _nbs(result: AnalysisResult, cfg: dict, patients: pd.DataFrame,
         feature_change: pd.DataFrame, keys: list[str], random_state: int, nbs,
         client: Any = None) -> None:
    """Network-based statistic on the change of ``nbs_measure``: each arm against the reference."""
    if not cfg["nbs_threshold"]:
        result.skip("network-based statistic", "[longitudinal] nbs_threshold = 0")
        return
    edge_keys = [k for k in keys if split_feature_key(k)[0] == cfg["nbs_measure"]
                 and "__" in split_feature_key(k)[2]]
    complete = feature_change[edge_keys].dropna()
    if not edge_keys or not len(complete):
        result.skip("network-based statistic", f"no complete {cfg['nbs_measure']} edge changes")
        return
    arm_of = patients.reset_index().drop_duplicates("participant_id").set_index(
        "participant_id")["group"].astype(str)
    mats, nodes = _edge_matrices(complete, edge_keys)
    arms_here = arm_of.reindex(complete.index).to_numpy()
    reference = cfg["reference_group"]
    components, edges = [], []
    for label in [a for a in dict.fromkeys(arms_here) if a != reference]:
        x, y = mats[arms_here == label], mats[arms_here == reference]
        if len(x) < 2 or len(y) < 2:
            result.skip(f"network-based statistic {label}", "fewer than 2 participants per arm")
            continue
        res = nbs(x, y, cfg["nbs_threshold"], n_permutations=cfg["n_permutations"],
                  random_state=random_state, client=client)
        components.append(res.to_frame(nodes).assign(contrast=f"{label} - {reference}"))
        edges.append(res.edges_frame(nodes).assign(contrast=f"{label} - {reference}"))
    if components:
        result.add("nbs_components", pd.concat(components, ignore_index=True))
        result.add("nbs_edges", pd.concat(edges, ignore_index=True))
