"""Report section of the ``predict`` analysis (order 45): response prediction and therapy selection.

Built from ``OUT/group/predict/`` alone: the warnings first (small sample, small arms), then the
performance with bootstrap CIs, ROC and calibration plots, the permutation null, the incremental
value of imaging, feature stability (most often selected edges on a glass brain), early change,
the Personalized Advantage Index, a TRIPOD+AI model card and who was left out.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text

ORDER = 45
_SETS = {"combined": "imaging + clinical", "clinical": "clinical only", "imaging": "imaging only"}
_WARNING_STYLE = ("border-left:6px solid #c53030;background:#fff5f5;color:#742a2a;padding:.5em 1em;"
                  "margin:.8em 0;font-weight:600")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def warning_block(warnings: list[str]) -> Text:
    """The warnings as one prominent red box (each paragraph starts with "Warning:")."""
    body = "".join(f"<p class='warning' style='margin:.3em 0'>{html.escape(w)}</p>" for w in warnings)
    return Text(f"<div class='warning' role='alert' style='{_WARNING_STYLE}'>{body}</div>", raw_html=True)


def _label(row) -> str:
    return f"{row['model']}, {_SETS.get(row['feature_set'], row['feature_set'])}"


def _fmt(value, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _p(value) -> str:
    value = float(value)
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _roc_figure(roc: pd.DataFrame, metrics: pd.DataFrame) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for (model, fset), rows in roc.groupby(["model", "feature_set"], sort=False):
        auc = metrics[(metrics["model"] == model) & (metrics["feature_set"] == fset)
                      & (metrics["metric"] == "auc")]
        extra = (f" (AUC {_fmt(auc['estimate'].iloc[0])}, {_fmt(auc['ci_low'].iloc[0])}–"
                 f"{_fmt(auc['ci_high'].iloc[0])})") if len(auc) else ""
        ax.plot(rows["fpr"], rows["tpr"], lw=1.5, label=f"{model}, {_SETS.get(fset, fset)}{extra}")
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return Figure(fig, caption="ROC curves of the out-of-fold predictions (averaged over repeats); "
                               "AUC with its 95% bootstrap CI over participants. Dashed: chance.")


def _calibration_figure(curve: pd.DataFrame) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for (model, fset), rows in curve.groupby(["model", "feature_set"], sort=False):
        ax.plot(rows["mean_predicted"], rows["fraction_positive"], marker="o", lw=1,
                label=f"{model}, {_SETS.get(fset, fset)}")
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed proportion")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return Figure(fig, caption="Reliability (calibration) of the out-of-fold probabilities, quantile "
                               "bins; dashed: perfect calibration.")


def _null_figure(null: pd.DataFrame, perm: pd.Series) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    values = pd.to_numeric(null["value"], errors="coerce").dropna()
    ax.hist(values, bins=min(40, max(10, len(values) // 10)), color="#a0aec0")
    ax.axvline(float(perm["observed"]), color="#c53030", lw=2)
    ax.set_xlabel(f"cross-validated {perm['metric']}")
    ax.set_ylabel("permutations")
    fig.tight_layout()
    return Figure(fig, caption=f"Null distribution of the cross-validated {perm['metric']} over "
                               f"{int(perm['n_permutations'])} permutations of the outcome, each rerunning "
                               f"the whole nested procedure; red: observed ({_fmt(perm['observed'])}, "
                               f"p = {_p(perm['p_value'])}).")


def _edge_figure(stability: pd.DataFrame, coords: pd.DataFrame | None, title: str) -> Figure | None:
    """The most often selected edges on a glass brain (colour: frequency, signed by the weight)."""
    if coords is None or "node_a" not in stability:
        return None
    edges = stability.dropna(subset=["node_a", "node_b"])
    edges = edges[edges["frequency"] >= 0.5].head(20)
    nodes = sorted(set(edges["node_a"]) | set(edges["node_b"]))
    known = [n for n in nodes if n in coords.index]
    if len(known) < 2:
        return None
    plt = _plt()
    from nilearn import plotting

    index = {n: i for i, n in enumerate(known)}
    matrix = np.zeros((len(known), len(known)))
    for row in edges.itertuples():
        if row.node_a in index and row.node_b in index:
            sign = -1.0 if (row.direction == "negative" or (row.mean_weight < 0)) else 1.0
            matrix[index[row.node_a], index[row.node_b]] = sign * row.frequency
            matrix[index[row.node_b], index[row.node_a]] = sign * row.frequency
    if not matrix.any():
        return None
    fig = plt.figure(figsize=(7.5, 3.0))
    plotting.plot_connectome(matrix, coords.loc[known].to_numpy(float), figure=fig, title=title,
                             node_size=20, edge_cmap="coolwarm", edge_vmin=-1, edge_vmax=1,
                             colorbar=True)
    return Figure(fig, caption=f"{title}: up to 20 edges selected in at least half of the outer-fold "
                               "fits, the largest mean weights first (colour: selection frequency, "
                               "negative when the edge predicts a lower outcome).")


def _pai_figure(pai: pd.DataFrame, threshold) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    for arm, rows in pai.groupby("indicated_arm"):
        ax.hist(rows["pai"], bins=15, alpha=0.6, label=f"indicated: {arm}")
    if threshold is not None and np.isfinite(float(threshold)):
        ax.axvline(float(threshold), color="#c53030", ls="--", lw=1)
    ax.set_xlabel("PAI (predicted advantage of the indicated arm, outcome units)")
    ax.set_ylabel("participants")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure(fig, caption="Personalized Advantage Index: for each participant, the out-of-fold "
                               "predicted outcome under the indicated arm against the next best "
                               "(dashed: the declared clinically meaningful advantage).")


def _outcome_text(parameters: dict) -> str:
    if parameters.get("outcome_column"):  # theramark predict on a table: the column as given
        kind = "two classes" if parameters.get("task") == "classification" else "continuous"
        return f"column {parameters['outcome_column']} of {parameters.get('source', 'the table')} ({kind})"
    outcome, instrument = parameters.get("outcome", "?"), parameters.get("instrument", "?")
    definition = parameters.get("outcome_definition", {})
    base, end = parameters.get("baseline", "?"), parameters.get("endpoint", "?")
    if outcome == "response":
        reduction = float(definition.get("reduction", 0.5))
        return (f"response on {instrument}: a reduction of at least {reduction:.0%} from {base} to "
                f"{end}")
    if outcome == "remission":
        return (f"remission on {instrument}: {end} total {definition.get('remission_threshold', '')} "
                "(at or below the cut-off)")
    if outcome == "percent_change":
        return f"percent change of the {instrument} total from {base} to {end}"
    return f"change of the {instrument} total ({end} - {base}, points)"


def model_card(files) -> Table:
    """A TRIPOD+AI-style model card built from the recorded parameters and summary."""
    parameters, summary = files.parameters, files.summary
    cfg = parameters.get("predict", {})
    primary = summary.get("primary", {})
    n = summary.get("n", 0)
    classes = summary.get("classes")
    balance = (", ".join(f"{k}: {v}" for k, v in classes.items()) if classes else
               f"mean {_fmt(summary.get('outcome_mean'))}, SD {_fmt(summary.get('outcome_sd'))}")
    imaging = parameters.get("imaging_features", [])
    validation = (f"{cfg.get('cv')} outer cross-validation ({cfg.get('n_splits')} folds × "
                  f"{cfg.get('n_repeats')} repeats"
                  + (f"; hyperparameters tuned in a {cfg.get('inner_splits')}-fold inner loop)"
                     if cfg.get("tune") else "; fixed hyperparameters)")
                  + "; every learned step (scaling, "
                  + ("ComBat harmonization, " if summary.get("harmonized_in_folds") else "")
                  + "feature selection, tuning) fitted on training folds only; no external validation")
    performance = "not estimated"
    if primary:
        performance = (f"{primary['model']} on {_SETS.get(primary['feature_set'], primary['feature_set'])}: "
                       f"{primary['metric']} {_fmt(primary['estimate'])} (95% CI "
                       f"{_fmt(primary['ci_low'])}–{_fmt(primary['ci_high'])})")
        if "p_value" in primary:
            performance += (f"; permutation p = {_p(primary['p_value'])} "
                            f"({primary['n_permutations']} permutations of the whole procedure)")
    limitations = ["internal (cross-validated) validation only: performance in a new sample, site "
                   "or population is unknown"]
    limitations += [w.removeprefix("Warning: ") for w in summary.get("warnings", [])]
    rows = [
        ("Data", f"{n} participants"
                 + (f" of arm(s) {', '.join(parameters['groups'])}" if parameters.get("groups") else "")
                 + f"; site(s): {', '.join(summary.get('sites', {})) or 'not recorded'}"),
        ("Outcome", _outcome_text(parameters)),
        ("Outcome distribution", balance),
        ("Predictors", f"{len(imaging)} baseline imaging feature(s)"
                       + (f" ({', '.join(cfg.get('imaging', []))})" if imaging else "")
                       + f"; clinical: {', '.join(parameters.get('clinical_predictors', [])) or 'none'}"),
        ("Missing data", f"complete cases; {summary.get('n_dropped', 0)} participant(s) left out, each "
                         "listed with the reason (dropped.tsv)"),
        ("Models", ", ".join(cfg.get("models", []))),
        ("Validation", validation),
        ("Performance", performance),
        ("Limitations", "; ".join(limitations)),
        ("Software", f"theramark {files.software.get('Version', '')}; seed "
                     f"{parameters.get('random_state', '')}"),
    ]
    return Table(pd.DataFrame(rows, columns=["item", "description"]),
                 caption="Model card (TRIPOD+AI items: data, outcome, predictors, missing data, "
                         "analysis, performance, limitations)", visible_rows=20)


def sections(files) -> list[Section]:
    """The response-prediction section from ``OUT/group/predict/``."""
    if not files.exists:
        return []
    parameters, summary = files.parameters, files.summary
    cfg = parameters.get("predict", {})
    skipped = {s["step"]: s["reason"] for s in files.skipped}
    if not cfg.get("enabled"):
        return []
    section = Section("predict", "Response prediction and therapy selection", order=ORDER)
    warnings = summary.get("warnings", [])
    if warnings:
        section.add(warning_block(warnings))
    metrics = files.table("metrics")
    if "task" in parameters:
        classes = summary.get("classes")
        balance = (" (" + ", ".join(f"{v} with outcome {k}" for k, v in classes.items()) + ")"
                   if classes else "")
        section.add(Text(f"Predicted: {_outcome_text(parameters)}. {summary.get('n', 0)} participants "
                         f"modelled{balance}; {summary.get('n_dropped', 0)} left out (listed below). "
                         f"Predictors at {parameters.get('baseline')}: "
                         f"{summary.get('n_imaging_features', 0)} imaging feature(s) and clinical "
                         f"{', '.join(summary.get('clinical_predictors', [])) or 'none'}."))
    if metrics is None:
        reason = skipped.get("response prediction", "no model could be fitted")
        section.add(Text(f"No prediction model was fitted: {reason}"))
    else:
        shown = metrics[["model", "feature_set", "metric", "estimate", "ci_low", "ci_high", "cv_mean",
                         "cv_sd"]].copy()
        shown["feature_set"] = shown["feature_set"].map(lambda s: _SETS.get(s, s))
        section.add(Table(shown, caption="Cross-validated performance: estimate and 95% bootstrap CI "
                                         "over participants of the repeat-averaged out-of-fold "
                                         "predictions; cv_mean/cv_sd over outer folds",
                          source=files.relative("metrics")))
        roc = files.table("roc")
        if roc is not None and len(roc):
            section.add(_roc_figure(roc, metrics))
        curve = files.table("reliability")
        if curve is not None and len(curve):
            section.add(_calibration_figure(curve))
    perm, null = files.table("permutation"), files.table("permutation_null")
    if perm is not None and null is not None and len(perm):
        section.add(_null_figure(null, perm.iloc[0]))
    comparison = files.table("comparison")
    if comparison is not None and len(comparison):
        section.add(Text("Incremental value: the same models and outer folds with and without the "
                         "imaging features, compared with the Nadeau–Bengio corrected resampled t-test "
                         "(the fold scores of repeated cross-validation are not independent)."))
        section.add(Table(comparison[["model_a", "model_b", "metric", "mean_a", "mean_b",
                                      "mean_difference", "ci_low", "ci_high", "p_value"]],
                          caption="Imaging + clinical against clinical only and imaging only",
                          source=files.relative("comparison")))
    stability = files.table("feature_stability")
    if stability is not None and len(stability):
        primary = summary.get("primary", {})
        main = stability[(stability["model"] == primary.get("model"))
                         & (stability["feature_set"] == primary.get("feature_set"))]
        main = main if len(main) else stability
        coords = files.sibling("imaging").table("roi_coordinates")
        coords = None if coords is None else coords.set_index("name")[["x", "y", "z"]]
        imaging_rows = main[main["feature"].str.contains("|", regex=False)]
        figure = _edge_figure(imaging_rows, coords, "Most often selected edges")
        if figure is not None:
            section.add(figure)
        section.add(Table(main[["model", "feature_set", "feature", "direction", "frequency",
                                "mean_weight"]].head(25),
                          caption="Feature stability: share of the outer-fold fits that selected each "
                                  "feature (elastic net: non-zero coefficient; SVM: top 10% |weight|; "
                                  "CPM: selected edge)", source=files.relative("feature_stability")))
    early = files.table("early_change_comparison")
    if early is not None and len(early):
        info = summary.get("early_change", {})
        section.add(Text(f"Early change: baseline features alone against baseline + change to the "
                         f"{info.get('early_session', 'early')} session (same outer folds)."))
        section.add(Table(files.table("early_change_metrics"), caption="Early-change models",
                          source=files.relative("early_change_metrics")))
        section.add(Table(early, caption="Early change vs baseline only (Nadeau–Bengio)",
                          source=files.relative("early_change_comparison")))
    elif "early change" in skipped:
        section.add(Text(f"Early change was not assessed: {skipped['early change']}"))
    pai = files.table("pai")
    if pai is not None and len(pai):
        info = summary.get("pai", {})
        section.add(_pai_figure(pai, info.get("threshold")))
        section.add(Table(files.table("pai_summary"),
                          caption="Did participants who received their indicated arm do better? "
                                  "(difference with a whole-procedure bootstrap CI)",
                          source=files.relative("pai_summary")))
    elif "personalized advantage index" in skipped:
        section.add(Text("The Personalized Advantage Index was not computed: "
                         f"{skipped['personalized advantage index']}"))
    if "task" in parameters:
        section.add(model_card(files))
    dropped = files.table("dropped")
    if dropped is not None and len(dropped):
        section.add(Table(dropped, caption="Participants left out, with the step and the reason",
                          source=files.relative("dropped")))
    return [section]
