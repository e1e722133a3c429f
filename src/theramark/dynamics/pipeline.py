"""The group-level ``dynamics`` and ``precedence`` analyses.

``dynamics`` (before the longitudinal models): the rest runs' ROI time series of every participant
and session are clustered together into recurring dynamic-FC states (``[dynamics] method``:
windowed FC + k-means, Allen et al. 2014, or LEiDA, Cabral et al. 2017). Its tables, under
``OUT/group/dynamics/``: ``k_selection`` (elbow, silhouette and split-half reproducibility for
each k of ``k_range``), ``centroids`` (each state's FC matrix, long), ``state_metrics`` (per run:
fractional occupancy, dwell time, switching rate, transitions), ``occupancy`` (mean occupancy by
arm × session × state), ``surrogates`` (each run's dFC variability against phase-randomised or
autoregressive surrogates with the same spectrum and covariance: is there anything dynamic to
cluster?) and ``motion`` (does a state track head motion?). The state metrics go on to the
features table as measure ``dfcstates`` (``state<k>_occupancy``, ``state<k>_dwell``,
``switching_rate``), so the therapy × time models and brain–symptom links test them like any
other feature.

``precedence`` (after the longitudinal models): the cross-lagged panel model and the
random-intercept cross-lagged panel model (Hamaker et al. 2015) of a declared brain feature and
symptom score over the study's sessions: does brain change come before symptom change?
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.results import AnalysisResult

#: Feature-key measure of the state metrics (a registry name).
STATE_MEASURE = "dfcstates"


def _dfc_variability(series: list[np.ndarray], window: int) -> float:
    """Mean over runs and edges of the SD of windowed Fisher-z FC (the surrogates' statistic)."""
    from theramark.dynamics.states import window_vectors

    values = []
    for x in series:
        vectors, _ = window_vectors([x], window, 1)
        values.append(float(np.mean(np.std(vectors, axis=0))))
    return float(np.mean(values))


def _load_runs(ctx, settings: dict[str, Any], result: AnalysisResult
               ) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray | None], list[str], float]:
    from theramark.imaging.outputs import load_timeseries, read_timeseries_index

    index = read_timeseries_index(ctx.out_dir, tasks=settings["tasks"])
    excluded = index[index["excluded"]]
    if len(excluded):
        result.summary["n_runs_excluded_by_qc"] = int(len(excluded))
    index = index[~index["excluded"]].reset_index(drop=True)
    series, fds, names, trs, keep = [], [], None, set(), []
    for row in index.itertuples():
        table, info = load_timeseries(row.path)
        if names is None:
            names = list(table.columns)
        if list(table.columns) != names:
            raise BadInputError(f"{row.path}: ROIs {list(table.columns)[:4]}... differ from the "
                                f"other runs' ({names[:4]}...); states need one ROI set")
        rois = settings["rois"] or names
        missing = [r for r in rois if r not in names]
        if missing:
            raise BadInputError(f"[dynamics] rois: {missing} not among the time-series ROIs "
                                f"({', '.join(names)})")
        values = table[rois].to_numpy(float)
        if not np.isfinite(values).all():
            result.skip(f"states of {row.participant_id} {row.session}",
                        f"{row.path.name}: non-finite values (an ROI outside the brain mask?)")
            continue
        series.append(values)
        fds.append(info["framewise_displacement"])
        trs.add(info["repetition_time"])
        keep.append(row.Index)
    if len(trs) > 1:
        raise BadInputError(f"rest runs with different repetition times {sorted(trs)}: windows in "
                            "volumes would differ in seconds; run the dynamics per acquisition")
    t_r = trs.pop() if trs else float("nan")
    return index.loc[keep].reset_index(drop=True), series, fds, list(settings["rois"] or names or []), t_r


def _long_centroids(centroids: np.ndarray, rois: list[str]) -> pd.DataFrame:
    upper = np.triu_indices(len(rois), 1)
    frames = [pd.DataFrame({"state": k + 1, "roi_a": np.asarray(rois)[upper[0]],
                            "roi_b": np.asarray(rois)[upper[1]],
                            "value": centroids[k][upper]}) for k in range(len(centroids))]
    return pd.concat(frames, ignore_index=True)


def state_features_table(runs: pd.DataFrame, metrics: pd.DataFrame, n_states: int
                         ) -> pd.DataFrame:
    """State metrics as rows of the features table (measure ``dfcstates``).

    Parameters
    ----------
    runs : DataFrame
        ``participant_id, session, task, run`` of each series (the rows of ``metrics``).
    metrics : DataFrame
        :func:`~theramark.dynamics.state_metrics` output with 1-based state columns
        (``state<k>_occupancy``, ``state<k>_dwell``, ``switching_rate``).
    """
    columns = [*(f"state{k}_{m}" for k in range(1, n_states + 1) for m in ("occupancy", "dwell")),
               "switching_rate"]
    long = pd.concat([runs[["participant_id", "session", "task", "run"]].reset_index(drop=True),
                      metrics[columns].reset_index(drop=True)], axis=1).melt(
        id_vars=["participant_id", "session", "task", "run"], var_name="feature",
        value_name="value")
    long["measure"] = STATE_MEASURE
    return long[["participant_id", "session", "task", "run", "measure", "feature", "value"]]


def _one_based(metrics: pd.DataFrame, n_states: int) -> pd.DataFrame:
    renamed = {}
    for k in range(n_states):
        renamed[f"occupancy_{k}"] = f"state{k + 1}_occupancy"
        renamed[f"dwell_{k}"] = f"state{k + 1}_dwell"
        for j in range(n_states):
            renamed[f"transition_{k}_{j}"] = f"transition_{k + 1}_{j + 1}"
    return metrics.rename(columns=renamed)


def run(ctx) -> AnalysisResult:
    """Dynamic-FC states of the study's rest runs (see the module docstring)."""
    from theramark.dynamics.metrics import state_metrics
    from theramark.dynamics.selection import select_n_states
    from theramark.dynamics.states import fit_states
    from theramark.dynamics.surrogates import (
        motion_state_association,
        surrogate_test,
        window_fd,
    )
    from theramark.imaging.group import has_participant_outputs

    settings = ctx.settings("dynamics")
    result = AnalysisResult("dynamics")
    result.parameters = {"dynamics": settings, "random_state": ctx.random_state}
    if not settings["enabled"]:
        result.skip("dynamic-FC states", "[dynamics] enabled = false")
        return result
    if not has_participant_outputs(ctx.out_dir):
        result.skip("dynamic-FC states", "no participant-level outputs: the study has no imaging")
        return result
    runs, series, fds, rois, t_r = _load_runs(ctx, settings, result)
    if len(series) < 2:
        result.skip("dynamic-FC states", f"{len(series)} usable run(s) of task(s) "
                                         f"{', '.join(settings['tasks'])}: states need two or more")
        return result
    method = settings["method"]
    window = max(2, int(round(settings["window_s"] / t_r))) if method == "kmeans" else 1
    step = int(settings["step_volumes"]) if method == "kmeans" else 1
    shortest = min(len(x) for x in series)
    if method == "kmeans" and shortest < window + 2:
        result.skip("dynamic-FC states", f"the shortest run has {shortest} kept volumes, fewer "
                                         f"than a {window}-volume window (window_s = "
                                         f"{settings['window_s']} s at TR {t_r} s) plus two")
        return result
    common = dict(method=method, window=window, step=step, random_state=ctx.random_state,
                  distance=settings["distance"], t_r=t_r)
    result.parameters.update(window_volumes=window, step_volumes=step, repetition_time=t_r,
                             rois=rois, n_runs=len(series))
    result.summary.update(n_runs=len(series), n_participants=int(runs["participant_id"].nunique()),
                          n_rois=len(rois), window_volumes=window, repetition_time=t_r)

    k_range = [k for k in settings["k_range"] if k >= 2]
    if k_range:
        result.add("k_selection", select_n_states(
            series, k_range, groups=runs["participant_id"].to_numpy(), **common))
    n_states = int(settings["n_states"])
    if n_states < 2:
        result.skip("dynamic-FC states", "[dynamics] n_states is not declared: choose k from the "
                                         "k_selection table (elbow, silhouette, split-half "
                                         "reproducibility) and declare it")
        return result
    fit = fit_states(series, n_states, **common)
    # state 1 is the most frequent one, so that labels mean the same in every run of a study
    counts = np.bincount(np.concatenate(fit.labels), minlength=n_states)
    fit = fit.relabel(np.argsort(-counts, kind="stable"))
    metrics = _one_based(state_metrics(fit.labels, n_states, step * t_r), n_states)
    table = pd.concat([runs[["participant_id", "session", "task", "run"]], metrics], axis=1)
    result.add("state_metrics", table)
    result.add("centroids", _long_centroids(fit.centroids, rois))
    result.summary.update(n_states=n_states, inertia=float(fit.inertia))

    groups = ctx.participants.set_index("participant_id")
    group_column = "group" if "group" in groups else None
    long = table.melt(id_vars=["participant_id", "session", "task", "run"],
                      value_vars=[f"state{k}_occupancy" for k in range(1, n_states + 1)],
                      var_name="state", value_name="occupancy")
    long["state"] = long["state"].str.extract(r"state(\d+)_", expand=False).astype(int)
    long["group"] = (long["participant_id"].map(groups[group_column]).astype(str)
                     if group_column else "all")
    occupancy = (long.groupby(["group", "session", "state"], sort=False)["occupancy"]
                 .agg(mean="mean", sd="std", n="count").reset_index())
    from theramark.study.design import in_study_order

    result.add("occupancy", in_study_order(occupancy, {"group": ctx.design.groups,
                                                       "session": ctx.design.sessions}))

    if settings["n_surrogates"]:
        test_window = window if method == "kmeans" else max(2, int(round(settings["window_s"] / t_r)))
        per_run = []
        for i, x in enumerate(series):
            test = surrogate_test(lambda xs, w=test_window: _dfc_variability(xs, w), [x],
                                  n_surrogates=settings["n_surrogates"],
                                  method=settings["surrogate_method"],
                                  random_state=[ctx.random_state, i])
            per_run.append({"participant_id": runs.at[i, "participant_id"],
                            "session": runs.at[i, "session"], "task": runs.at[i, "task"],
                            "dfc_variability": test.observed,
                            "null_mean": float(np.mean(test.null)),
                            "null_sd": float(np.std(test.null, ddof=1)) if len(test.null) > 1
                            else float("nan"),
                            "p": test.p_value})
        surrogates = pd.DataFrame(per_run)
        result.add("surrogates", surrogates)
        result.summary["surrogates"] = {
            "method": settings["surrogate_method"], "n_surrogates": settings["n_surrogates"],
            "n_runs": len(surrogates),
            # a Monte-Carlo test at level alpha rejects when p <= alpha: with 19 surrogates, when
            # the data beat every one of them
            "n_runs_beyond_null": int((surrogates["p"] <= 0.05 + 1e-12).sum()),
        }
    if method == "kmeans" and all(fd is not None for fd in fds):
        fd_windows = [window_fd(fd, window, step) for fd in fds]
        result.add("motion", motion_state_association(fit.labels, fd_windows, n_states).assign(
            state=lambda t: t["state"] + 1))
    elif method == "kmeans":
        result.skip("motion check of the states", "framewise displacement unavailable for some "
                                                   "runs (their fMRIPrep confounds are gone)")
    ctx.results["state_features"] = state_features_table(runs, table, n_states)
    return result


def run_precedence(ctx) -> AnalysisResult:
    """Cross-lagged panel models of ``[dynamics.precedence]`` (see the module docstring)."""
    from theramark.dynamics.cross_lagged import fit_cross_lagged
    from theramark.group.features import feature_key, split_feature_key, wide_features

    settings = ctx.settings("dynamics")["precedence"]
    result = AnalysisResult("precedence")
    result.parameters = {"precedence": settings, "design": ctx.design.to_dict()}
    brain, symptom = settings["brain"], settings["symptom"]
    if not brain or not symptom:
        result.skip("temporal precedence", "declare [dynamics.precedence] brain (a feature key, "
                                           "e.g. pearsoncorrelation|rest|amygdala_R__mfg_R) and "
                                           "symptom (an instrument, e.g. hamd17)")
        return result
    features = ctx.results.get("features")
    if not isinstance(features, pd.DataFrame) or features.empty:
        result.skip("temporal precedence", "no features table (the study has no imaging, or the "
                                           "longitudinal analysis did not run)")
        return result
    measure, task, feature = split_feature_key(brain)
    wide = wide_features(features, measures=[measure])
    if brain not in wide:
        import difflib

        close = difflib.get_close_matches(brain, list(wide.columns), n=3)
        raise BadInputError(f"[dynamics.precedence] brain = {brain!r}: not a feature of this study"
                            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    symptom_column = f"{symptom}_total"
    sessions_table = features.drop_duplicates(["participant_id", "session"]).set_index(
        ["participant_id", "session"])
    if symptom_column not in sessions_table:
        raise BadInputError(f"[dynamics.precedence] symptom = {symptom!r}: {symptom_column} is not "
                            "in the features table (was the instrument scored at the imaging "
                            "sessions?)")
    table = wide[[brain]].join(sessions_table[[symptom_column, "group"]]
                               if "group" in sessions_table else sessions_table[[symptom_column]])
    table = table.reset_index()
    control = ctx.design.control_group
    if control and "group" in table:
        table = table[table["group"].astype(str) != control]
    order = list(settings["sessions"] or ctx.design.sessions)
    table = table[table["session"].astype(str).isin(order)]
    table = table.rename(columns={brain: "brain", symptom_column: "symptom"})
    result.parameters.update(order=order, brain_feature=brain,
                             symptom_column=symptom_column, feature_key=feature_key(
                                 measure, task, feature))
    result.summary.update(n_participants=int(table["participant_id"].nunique()),
                          sessions=order, brain=brain, symptom=symptom)
    fits = []
    models = [("CLPM", False)] + ([("RI-CLPM", True)] if len(order) >= 3 else [])
    if len(order) < 3:
        result.skip("RI-CLPM", f"{len(order)} sessions: the random-intercept model needs three")
    for label, intercepts in models:
        try:
            # its warnings (non-convergence, Heywood cases) are kept in the result and the report
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fitted = fit_cross_lagged(table, "brain", "symptom", order=order,
                                          random_intercepts=intercepts)
        except BadInputError as exc:
            result.skip(f"{label} of {brain} and {symptom}", str(exc))
            continue
        paths = fitted.paths.assign(model=label)
        paths["source"] = paths["source"].map({"brain": brain, "symptom": symptom})
        paths["target"] = paths["target"].map({"brain": brain, "symptom": symptom})
        fits.append(paths)
        fit = {k: v for k, v in fitted.fit.items()}
        fit["warnings"] = list(fitted.warnings)
        result.summary.setdefault("fit", {})[label] = fit
        if fitted.warnings:
            result.skip(f"trustworthy {label} estimates", "; ".join(fitted.warnings))
    if fits:
        table_out = pd.concat(fits, ignore_index=True)
        result.add("paths", table_out[["model", *[c for c in table_out.columns if c != "model"]]])
    return result
