"""The group-level ``predict`` analysis: who responds, and to which therapy.

It runs when ``[predict] enabled = true``. From the scored scales and the features table it builds
one row per participant of the modelled arms: the outcome on a declared instrument (response,
remission, percent change or change from ``baseline`` to ``endpoint``), baseline imaging features
(``[predict] imaging``: feature keys or key prefixes such as ``"pearsoncorrelation|rest"``) and
clinical predictors (``[predict] clinical``: the outcome instrument's baseline total, another
instrument's baseline total, participants.tsv columns). Then, with
:mod:`theramark.predict.validation` (every learned step, ComBat included, inside the folds):

- each model (elastic net, linear SVM, CPM for continuous outcomes) on each feature set
  (imaging + clinical, clinical only, imaging only), on the same outer folds;
- a permutation test of the whole nested procedure for the primary model (the first model, on the
  fullest feature set), permuting within sites;
- the Nadeau–Bengio comparison of imaging + clinical against clinical only (the incremental value
  of the scan) and against imaging only;
- feature stability: how often each feature (edge) is selected across the outer fits;
- early change: baseline features alone vs baseline + change to the early session
  (:mod:`theramark.predict.early_change`);
- the Personalized Advantage Index between the therapy arms (:mod:`theramark.predict.pai`).

Tables under ``OUT/group/predict/`` (all tidy TSV): ``sample`` (the participants modelled),
``dropped`` (everyone left out, with the step and the reason), ``predictions`` (out-of-fold, per
participant × repeat × model × feature set), ``metrics`` (bootstrap CIs over participants),
``fold_metrics``, ``permutation`` and ``permutation_null``, ``comparison``, ``roc``,
``reliability``, ``feature_stability``, ``early_change_metrics``, ``early_change_comparison``,
``pai`` and ``pai_summary``. The summary states n, the class balance, what was declared and the
warnings (fewer than 100 participants, an arm below ``min_arm_size``, few events per predictor).

:func:`predict_table` is the part that needs no study: it takes one row per participant and is
what ``theramark predict`` runs on any features table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.results import AnalysisResult

NAME = "predict"
#: Column names of the nuisance columns :func:`predict_table` reads (never predictors).
SITE_COLUMN = "_site"
COVARIATE_PREFIX = "_cov_"
#: Fewer participants than this draws the report's prominent warning.
MIN_SAMPLE = 100
FEATURE_SET_LABELS = {"combined": "imaging + clinical", "clinical": "clinical only",
                      "imaging": "imaging only"}
DROPPED_COLUMNS = ["participant_id", "step", "reason"]
CLASSIFICATION_OUTCOMES = ("response", "remission")


@dataclass
class PredictionSpec:
    """What :func:`predict_table` fits (the resolved ``[predict]`` settings plus the data's roles).

    Attributes
    ----------
    task : {"classification", "regression"}
    imaging, clinical : list of str
        Predictor columns of the table: imaging features (harmonized by ComBat inside the folds)
        and clinical predictors (used as they are).
    models : list of str
        Names of :func:`theramark.predict.validation.make_model`.
    cv : {"stratified", "kfold", "site"}
    n_splits, n_repeats, inner_splits : int
    tune : bool
        Tune hyperparameters in an inner loop (the models' default grids); False: fixed defaults.
    n_permutations : int
        Permutations of the whole procedure for the primary model (0: none).
    n_boot : int
        Bootstrap replicates of the metric CIs.
    harmonize : bool
        ComBat inside the folds when the table has two sites or more and imaging features.
    harmonize_covariates : list of str
        Covariates ComBat preserves (columns ``_cov_<name>`` of the table).
    unseen_site : {"error", "pooled"}
        ComBat's policy for a test site absent from the training rows.
    random_state : int
    min_arm_size : int
        Arms smaller than this are flagged in the warnings.
    """

    task: str
    imaging: list[str] = field(default_factory=list)
    clinical: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["elasticnet"])
    cv: str = "stratified"
    n_splits: int = 5
    n_repeats: int = 10
    inner_splits: int = 5
    tune: bool = True
    n_permutations: int = 200
    n_boot: int = 2000
    harmonize: bool = True
    harmonize_covariates: list[str] = field(default_factory=list)
    unseen_site: str = "error"
    random_state: int = 0
    min_arm_size: int = 20


# ---------------------------------------------------------------------------------------------
# Building one estimator per model and feature set


def _estimator(model: str, spec: PredictionSpec, columns: list[str], combat: bool):
    """(estimator, grid, input columns, output feature names) of one model on one feature set."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from theramark.predict.transformers import ComBatTransformer
    from theramark.predict.validation import make_model

    estimator, grid = make_model(model, spec.task, random_state=spec.random_state)
    grid = grid if spec.tune else None
    harmonized = [c for c in columns if c in spec.imaging] if combat else []
    if not harmonized:
        return estimator, grid, list(columns), list(columns)
    others = [c for c in columns if c not in harmonized]
    covariates = [f"{COVARIATE_PREFIX}{c}" for c in spec.harmonize_covariates]
    parts = [("combat", ComBatTransformer(site=SITE_COLUMN, covariates=tuple(covariates),
                                          unseen=spec.unseen_site),
              [*harmonized, SITE_COLUMN, *covariates])]
    if others:
        parts.append(("clinical", "passthrough", others))
    harmonize = ColumnTransformer(parts, remainder="drop")
    inputs = list(dict.fromkeys([*columns, SITE_COLUMN, *covariates]))
    return Pipeline([("harmonize", harmonize), *estimator.steps]), grid, inputs, [*harmonized, *others]


def _stability(result, estimator, X: pd.DataFrame, y: np.ndarray, names: list[str], model: str
               ) -> pd.DataFrame:
    """How often each feature is selected over the outer fits (refitted with each fold's setting).

    Elastic net: a non-zero coefficient; linear SVM (dense weights): among the top 10% by
    ``|weight|``; CPM: a selected positive or negative edge.
    """
    from sklearn.base import clone

    params = result.best_params.set_index(["repeat", "fold"])
    tuned = [c for c in params.columns if c != "inner_score"]
    selected: dict[str, np.ndarray] = {}
    coefs = []
    for split in result.splits:
        chosen = params.loc[(split.repeat, split.fold), tuned].dropna().to_dict() if tuned else {}
        fitted = clone(estimator).set_params(**chosen).fit(X.iloc[split.train], y[split.train])
        final = fitted.steps[-1][1]
        if model == "cpm":
            for kind, mask in (("positive", final.positive_edges_), ("negative", final.negative_edges_)):
                selected.setdefault(kind, np.zeros(len(names)))
                selected[kind] += mask
            coefs.append(final.r_)
            continue
        coef = np.ravel(final.coef_)
        if model == "svm":
            k = max(1, math.ceil(0.1 * coef.size))
            mask = np.zeros(coef.size, bool)
            mask[np.argsort(-np.abs(coef), kind="stable")[:k]] = True
        else:
            mask = coef != 0
        selected.setdefault("any", np.zeros(len(names)))
        selected["any"] += mask
        coefs.append(coef)
    n_fits = len(result.splits)
    mean_coef = np.mean(coefs, axis=0) if coefs else np.full(len(names), np.nan)
    rows = []
    for kind, counts in selected.items():
        rows.append(pd.DataFrame({"feature": names, "direction": kind, "n_selected": counts.astype(int),
                                  "n_fits": n_fits, "frequency": counts / n_fits,
                                  "mean_weight": mean_coef}))
    table = pd.concat(rows, ignore_index=True)
    edge = table["feature"].str.rsplit("|", n=1).str[-1]
    pair = edge.str.split("__", n=1, expand=True).reindex(columns=[0, 1])
    table["node_a"] = pair[0].where(pair[1].notna())
    table["node_b"] = pair[1]
    order = np.lexsort((table["feature"].to_numpy(str), -np.abs(table["mean_weight"].to_numpy(float)),
                        -table["frequency"].to_numpy(float)))
    return table.iloc[order].reset_index(drop=True)


def _curves(result, label: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """ROC points and the reliability curve of the repeat-averaged out-of-fold predictions."""
    from sklearn.metrics import roc_curve

    from theramark.predict.metrics import reliability_curve

    pooled = result.pooled_predictions()
    probabilities = bool(pooled["y_prob"].notna().all())
    score = pooled["y_prob" if probabilities else "y_score"].to_numpy(float)
    truth = pooled["y_true"].to_numpy()
    positive = np.unique(truth)[-1]
    fpr, tpr, thresholds = roc_curve(truth == positive, score)
    roc = pd.DataFrame({**label, "fpr": fpr, "tpr": tpr,
                        "threshold": np.where(np.isfinite(thresholds), thresholds, np.nan)})
    if not probabilities:
        return roc, None
    n_bins = int(min(10, max(3, len(truth) // 10)))
    curve = reliability_curve((truth == positive).astype(int), score, n_bins=n_bins, strategy="quantile")
    return roc, curve.assign(**label)[[*label, *curve.columns]]


def _labelled(frame: pd.DataFrame, label: dict[str, str]) -> pd.DataFrame:
    return frame.assign(**label)[[*label, *[c for c in frame.columns if c not in label]]]


# ---------------------------------------------------------------------------------------------
# The analysis on one table


def _check_table(table: pd.DataFrame, spec: PredictionSpec) -> None:
    from theramark.predict.metrics import check_task
    from theramark.predict.validation import CV_SCHEMES, MODEL_NAMES

    check_task(spec.task)
    for model in spec.models:
        if model not in MODEL_NAMES:
            raise BadInputError(f"[predict] models: unknown model {model!r}; choose from "
                                f"{', '.join(MODEL_NAMES)}")
    if spec.cv not in CV_SCHEMES:
        raise BadInputError(f"[predict] cv must be one of {', '.join(CV_SCHEMES)}, got {spec.cv!r}")
    if not spec.imaging and not spec.clinical:
        raise BadInputError("no predictors: declare [predict] imaging (feature keys or prefixes) "
                            "and/or [predict] clinical")
    missing = [c for c in ["participant_id", "y", *spec.imaging, *spec.clinical] if c not in table]
    if missing:
        raise BadInputError(f"prediction table: missing column(s) {missing[:10]}")
    predictors = table[[*spec.imaging, *spec.clinical]]
    bad = [c for c in predictors if not pd.api.types.is_numeric_dtype(predictors[c])]
    if bad:
        raise BadInputError(f"non-numeric predictor column(s) {bad[:10]}: encode them as numbers")
    constant = [c for c in predictors if predictors[c].nunique(dropna=True) < 2]
    if constant:
        raise BadInputError(f"constant predictor(s) (one value for every participant): {constant[:10]}; "
                            "they cannot predict anything: remove them")
    if spec.task == "classification":
        counts = table["y"].value_counts()
        if counts.size != 2:
            raise BadInputError(f"the outcome has {counts.size} class(es) among the {len(table)} "
                                "participants modelled: classification needs two")
        if spec.cv != "site" and counts.min() < spec.n_splits:
            raise BadInputError(
                f"only {int(counts.min())} participant(s) in the smaller outcome class "
                f"({counts.idxmin()!r}): stratified {spec.n_splits}-fold cross-validation needs at "
                f"least {spec.n_splits} per class")
    elif len(table) < 2 * spec.n_splits:
        raise BadInputError(f"{len(table)} participants: {spec.n_splits}-fold cross-validation needs at "
                            f"least {2 * spec.n_splits}")


def sample_warnings(table: pd.DataFrame, spec: PredictionSpec, arms: Sequence[str] = ()) -> list[str]:
    """The warnings a reader must see before any number: small n, small arms, few events.

    Parameters
    ----------
    table : DataFrame
        The modelled participants (``y`` and, optionally, ``group``).
    arms : sequence of str
        Arms whose size is checked against ``spec.min_arm_size`` (the PAI arms).

    Returns
    -------
    list of str
        Each starting with ``"Warning:"``.
    """
    out = []
    n = len(table)
    if n < MIN_SAMPLE:
        out.append(f"Warning: only {n} participants were modelled. Prediction models from fewer than "
                   f"{MIN_SAMPLE} participants are unstable; cross-validated performance in samples "
                   "this small is optimistic and has rarely held in new samples (psychotherapy-fMRI "
                   "studies of n = 20-60 reporting AUC 0.75-0.90 fall to 0.5-0.6 under external "
                   "validation). The sample is far too small for a clinically usable model: treat "
                   "every number below as exploratory.")
    if "group" in table and len(arms):
        sizes = table["group"].value_counts()
        small = [f"{a} (n = {int(sizes.get(a, 0))})" for a in arms if sizes.get(a, 0) < spec.min_arm_size]
        if small:
            out.append(f"Warning: arm(s) with fewer than {spec.min_arm_size} participants: "
                       f"{', '.join(small)}. Per-arm models (the Personalized Advantage Index) are "
                       "unreliable at this size.")
    if spec.task == "classification" and n:
        events = int(table["y"].value_counts().min()) if table["y"].nunique() == 2 else 0
        p = len(spec.imaging) + len(spec.clinical)
        if p and events / p < 10:
            out.append(f"Warning: {events} participants in the smaller outcome class for {p} "
                       f"candidate predictor(s) ({events / p:.1f} events per predictor; fewer than 10 "
                       "makes overfitting likely even with penalization).")
    return out


def predict_table(table: pd.DataFrame, spec: PredictionSpec, result: AnalysisResult | None = None,
                  client=None) -> AnalysisResult:
    """Cross-validated prediction of ``y`` on one table of participants, with every output table.

    Parameters
    ----------
    table : DataFrame
        One row per participant, complete (no missing value): ``participant_id``, ``y`` (binary
        labels for classification, values for regression), the predictor columns named in
        ``spec.imaging`` and ``spec.clinical``, optionally ``_site`` (site labels; ComBat inside
        the folds, permutations within sites, leave-one-site-out) and ``_cov_<name>`` (ComBat's
        preserved covariates).
    spec : PredictionSpec
    result : AnalysisResult, optional
        Adds to it (default: a new ``predict`` result).
    client : dask.distributed.Client, optional
        Spreads the permutations over its workers (same result as in one process).

    Returns
    -------
    AnalysisResult
        Tables ``predictions``, ``metrics``, ``fold_metrics``, ``permutation``,
        ``permutation_null``, ``comparison``, ``roc``, ``reliability``, ``feature_stability``;
        ``summary["primary"]`` names the primary model and its performance.

    Raises
    ------
    BadInputError
        Unknown model or cv scheme, no predictors, a non-numeric or constant predictor, fewer than
        two outcome classes or fewer participants per class than folds.
    """
    from theramark.predict.compare import compare_models
    from theramark.predict.validation import cross_validate_nested, permutation_test_nested

    result = result or AnalysisResult(NAME)
    _check_table(table, spec)
    table = table.reset_index(drop=True)
    y = table["y"].to_numpy()
    y = y.astype(int) if spec.task == "classification" else y.astype(float)
    groups = table["participant_id"].astype(str).to_numpy()
    sites = table[SITE_COLUMN].astype(str).to_numpy() if SITE_COLUMN in table else None
    if sites is not None and np.unique(sites).size < 2:
        sites = None
    if spec.cv == "site" and sites is None:
        raise BadInputError("[predict] cv = \"site\" (leave one site out) needs two sites or more; "
                            "the modelled participants come from one (or no site column)")
    combat = bool(spec.harmonize and sites is not None and spec.imaging)
    if combat and spec.cv == "site" and spec.unseen_site == "error":
        raise BadInputError("[predict] cv = \"site\" tests every site unseen in training, so ComBat "
                            "cannot harmonize it: set [predict] unseen_site = \"pooled\" or "
                            "harmonize = false")
    sets: dict[str, list[str]] = {}
    if spec.imaging and spec.clinical:
        sets["combined"] = [*spec.imaging, *spec.clinical]
    if spec.clinical:
        sets["clinical"] = list(spec.clinical)
    if spec.imaging:
        sets["imaging"] = list(spec.imaging)
    cv_options = dict(task=spec.task, cv=spec.cv, n_splits=spec.n_splits, n_repeats=spec.n_repeats,
                      inner_splits=spec.inner_splits, groups=groups, sites=sites)
    runs: dict[tuple[str, str], Any] = {}
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in (
        "predictions", "metrics", "fold_metrics", "roc", "reliability", "feature_stability",
        "permutation", "permutation_null", "comparison")}
    primary: tuple[str, str] | None = None
    for model in spec.models:
        if model == "cpm" and spec.task == "classification":
            result.skip("cpm", "CPM predicts a continuous outcome (Shen et al. 2017): with a binary "
                               "outcome it is not run; use outcome = \"percent_change\" or \"change\"")
            continue
        for set_name, columns in sets.items():
            if model == "cpm" and set_name != "imaging":
                continue  # CPM sums edge strengths: clinical predictors are not edges
            label = {"model": model, "feature_set": set_name}
            estimator, grid, inputs, names = _estimator(model, spec, columns, combat)
            X = table[inputs]
            if primary is None and spec.n_permutations > 0:
                primary = (model, set_name)
                test = permutation_test_nested(
                    estimator, X, y, param_grid=grid, n_permutations=spec.n_permutations,
                    blocks=sites if spec.cv != "site" else None, random_state=spec.random_state,
                    client=client, **cv_options)
                run = test.result
                parts["permutation"].append(_labelled(test.to_frame(), label))
                parts["permutation_null"].append(pd.DataFrame({
                    **label, "permutation": np.arange(test.null.size), "metric": test.metric,
                    "value": test.null}))
            else:
                primary = primary or (model, set_name)
                run = cross_validate_nested(estimator, X, y, param_grid=grid,
                                            random_state=spec.random_state, **cv_options)
            runs[(model, set_name)] = run
            parts["predictions"].append(_labelled(run.predictions, label))
            parts["fold_metrics"].append(_labelled(run.fold_metrics, label))
            folds = run.metric_table().rename(columns={"mean": "cv_mean", "sd": "cv_sd"})
            boot = run.summary(n_boot=spec.n_boot, random_state=spec.random_state)
            parts["metrics"].append(_labelled(boot.merge(folds, on="metric", how="left"), label))
            if spec.task == "classification":
                roc, curve = _curves(run, label)
                parts["roc"].append(roc)
                if curve is not None:
                    parts["reliability"].append(curve)
            parts["feature_stability"].append(_labelled(_stability(run, estimator, X, y, names, model),
                                                        label))
        for other in ("clinical", "imaging"):
            if ("combined" in sets and (model, "combined") in runs and (model, other) in runs):
                table_ = compare_models(runs[(model, "combined")], runs[(model, other)],
                                        model_a=f"{model}: {FEATURE_SET_LABELS['combined']}",
                                        model_b=f"{model}: {FEATURE_SET_LABELS[other]}")
                parts["comparison"].append(table_.assign(model=model, feature_set_a="combined",
                                                         feature_set_b=other))
    if not runs:
        raise BadInputError(f"[predict] models: no model can run on a {spec.task} outcome "
                            f"({', '.join(spec.models)}); CPM predicts continuous outcomes only")
    for name, frames in parts.items():
        if frames:
            result.add(name, pd.concat(frames, ignore_index=True))
    if spec.n_permutations == 0:
        result.skip("permutation test", "[predict] n_permutations = 0")
    if "combined" not in sets:
        result.skip("incremental value of imaging",
                    "needs both imaging and clinical predictors (imaging + clinical vs clinical only)")
    metrics = result.tables["metrics"]
    main = metrics[(metrics["model"] == primary[0]) & (metrics["feature_set"] == primary[1])]
    metric = "auc" if spec.task == "classification" else "r2"
    row = main[main["metric"] == metric].iloc[0]
    summary = {"model": primary[0], "feature_set": primary[1], "metric": metric,
               "estimate": float(row["estimate"]), "ci_low": float(row["ci_low"]),
               "ci_high": float(row["ci_high"])}
    if "permutation" in result.tables:
        perm = result.tables["permutation"].iloc[0]
        summary.update(p_value=float(perm["p_value"]), n_permutations=int(perm["n_permutations"]),
                       permutation_observed=float(perm["observed"]))
    result.summary["primary"] = summary
    result.summary["harmonized_in_folds"] = combat
    result.summary["feature_sets"] = {k: len(v) for k, v in sets.items()}
    return result


def describe_sample(table: pd.DataFrame, spec: PredictionSpec, result: AnalysisResult,
                    arms: Sequence[str] = ()) -> None:
    """Record n, class balance, sites, arms and the warnings in ``result.summary``."""
    result.summary["n"] = int(len(table))
    if spec.task == "classification":
        counts = table["y"].value_counts().sort_index()
        result.summary["classes"] = {(str(int(k)) if float(k).is_integer() else str(k)): int(v)
                                     for k, v in counts.items()}
    else:
        result.summary["outcome_mean"] = float(table["y"].mean()) if len(table) else None
        result.summary["outcome_sd"] = float(table["y"].std()) if len(table) > 1 else None
    if SITE_COLUMN in table:
        result.summary["sites"] = {str(k): int(v) for k, v in table[SITE_COLUMN].value_counts().items()}
    if "group" in table:
        result.summary["arms"] = {str(k): int(v) for k, v in table["group"].value_counts().items()}
    result.summary["n_imaging_features"] = len(spec.imaging)
    result.summary["clinical_predictors"] = list(spec.clinical)
    result.summary["warnings"] = sample_warnings(table, spec, arms)


def dropped_table(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One ``participant_id, step, reason`` table from the pieces (empty when nobody was dropped)."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=DROPPED_COLUMNS)
    return pd.concat(frames, ignore_index=True)[DROPPED_COLUMNS]


def _drop(ids, step: str, reason) -> pd.DataFrame:
    ids = [str(i) for i in ids]
    reasons = [reason] * len(ids) if isinstance(reason, str) else [str(r) for r in reason]
    return pd.DataFrame({"participant_id": ids, "step": step, "reason": reasons}, columns=DROPPED_COLUMNS)


def complete_rows(table: pd.DataFrame, columns: Sequence[str], step: str,
                  labels: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows with every ``columns`` value present, and the others listed with what they lack.

    ``labels`` renames columns in the reasons (``{"y": "outcome responder"}``).
    """
    columns = [c for c in columns if c in table]
    labels = labels or {}
    missing = table[columns].isna()
    bad = missing.any(axis=1)
    reasons = []
    for _, row in missing[bad].iterrows():
        names = [labels.get(c, c) for c in columns if row[c]]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        reasons.append(f"missing {shown}")
    return table[~bad].reset_index(drop=True), _drop(table.loc[bad, "participant_id"], step, reasons)


def select_features(columns: Sequence[str], patterns: Sequence[str], what: str) -> list[str]:
    """Columns matching any pattern: an exact key, a key prefix (``measure|task``) or a glob.

    Raises
    ------
    BadInputError
        A pattern that matches nothing (naming it and what is available).
    """
    import fnmatch

    columns = list(columns)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [c for c in columns if c == pattern or c.startswith(pattern.rstrip("|") + "|")
                or fnmatch.fnmatchcase(c, pattern)]
        if not hits:
            prefixes = sorted({"|".join(c.split("|")[:2]) for c in columns})
            raise BadInputError(f"{what}: {pattern!r} matches no feature; available prefixes: "
                                f"{', '.join(prefixes[:20]) or 'none'}")
        chosen.extend(hits)
    return list(dict.fromkeys(chosen))


def encode_columns(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Numeric columns as floats; text/boolean ones as 0/1 indicators of every level but the first.

    A fixed recoding of each participant's own values (nothing is learned from other rows), so it
    may precede the cross-validation.
    """
    out, names = {}, []
    for column in columns:
        values = frame[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum():
            out[column] = numeric.astype(float)
            names.append(column)
            continue
        levels = sorted(values.dropna().astype(str).unique())
        for level in levels[1:]:
            name = f"{column}={level}"
            out[name] = np.where(values.isna(), np.nan, (values.astype(str) == level).astype(float))
            names.append(name)
    return pd.DataFrame(out, index=frame.index), names


# ---------------------------------------------------------------------------------------------
# The group-level analysis


def _outcome_data(ctx, settings: dict[str, Any], result: AnalysisResult):
    """Outcome per participant on the declared instrument, and who lacks it."""
    from theramark.predict.early_change import treatment_outcomes

    scores = ctx.results.get("scores") or {}
    instrument = settings["instrument"] or ctx.results.get("primary_instrument")
    if not instrument:
        return None, None, "no outcome instrument: no scales were scored and [predict] instrument is empty"
    if instrument not in scores:
        if settings["instrument"]:
            raise BadInputError(f"{ctx.config_source}: [predict] instrument = {instrument!r} was not "
                                f"scored; instruments: {', '.join(scores) or 'none'}")
        return None, None, f"the primary instrument {instrument} has no scores"
    design = ctx.design
    baseline = settings["baseline"] or design.baseline
    endpoint = settings["endpoint"] or design.endpoint
    sessions = set(scores[instrument]["session"].astype(str).str.removeprefix("ses-"))
    for key, session in (("baseline", baseline), ("endpoint", endpoint)):
        if session not in sessions:
            raise BadInputError(f"{ctx.config_source}: [predict] {key} = {session!r}: {instrument} has "
                                f"no scores at that session (sessions: {', '.join(sorted(sessions))})")
    table = scores[instrument][["participant_id", "session", "total"]]
    outcomes, dropped = treatment_outcomes(table, instrument, baseline=baseline, endpoint=endpoint,
                                           reduction=settings["reduction"],
                                           remission_threshold=settings["remission_threshold"])
    result.parameters["outcome_definition"] = {k: (v if isinstance(v, int | float | str) else str(v))
                                               for k, v in outcomes.attrs.items()}
    return (instrument, baseline, endpoint), (outcomes, dropped), ""


def _clinical(ctx, names: list[str], outcomes: pd.DataFrame, instrument: str, baseline: str,
              ids: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    """Clinical predictor columns (index participant_id) from the outcome, scores and participants."""
    scores = ctx.results.get("scores") or {}
    participants = ctx.participants.astype({"participant_id": str}).set_index("participant_id")
    raw = pd.DataFrame(index=pd.Index(ids, name="participant_id"))
    for name in names:
        stem = name.removesuffix("_total")
        if name == "baseline_total":
            raw[name] = outcomes["baseline_total"].reindex(raw.index)
        elif stem in scores and name != stem or name in scores:
            table = scores[stem]
            at = table[table["session"].astype(str).str.removeprefix("ses-") == baseline]
            raw[f"{stem}_total"] = at.set_index(at["participant_id"].astype(str))["total"].reindex(raw.index)
        elif name in participants.columns:
            raw[name] = participants[name].reindex(raw.index)
        else:
            raise BadInputError(
                f"{ctx.config_source}: [predict] clinical: {name!r} is neither baseline_total (the "
                f"baseline total of {instrument}), a scored instrument ({', '.join(scores) or 'none'}) "
                f"nor a participants.tsv column ({', '.join(participants.columns)})")
    return encode_columns(raw, list(raw.columns))


def _imaging(ctx, patterns: list[str], session: str) -> pd.DataFrame | None:
    from theramark.group.features import wide_features

    features = ctx.results.get("features")
    if features is None or not len(features):
        return None
    wide = wide_features(features[features["measure"] != "qc"])
    at = wide.xs(session, level="session") if session in wide.index.get_level_values("session") else None
    if at is None:
        raise BadInputError(f"{ctx.config_source}: [predict] imaging: no features at the baseline "
                            f"session {session!r}")
    columns = select_features(at.columns, patterns, f"{ctx.config_source}: [predict] imaging")
    at = at[columns]
    at.index = at.index.astype(str)
    return at


def _early_change(ctx, settings, result, data, imaging_cols, outcomes, instrument, baseline,
                  endpoint, task, spec, dropped) -> None:
    from theramark.group.features import wide_features
    from theramark.predict.early_change import compare_early_change

    if not settings["early_change"]:
        result.skip("early change", "[predict] early_change = false")
        return
    sessions = list(ctx.design.sessions)
    early = settings["early"]
    if not early:
        after = sessions[sessions.index(baseline) + 1:] if baseline in sessions else []
        early = after[0] if after and after[0] != endpoint else ""
    if not early:
        result.skip("early change", f"no session between baseline ({baseline}) and endpoint "
                                    f"({endpoint}); declare [predict] early")
        return
    scores = ctx.results["scores"][instrument]
    frame = scores.assign(session=scores["session"].astype(str).str.removeprefix("ses-"),
                          participant_id=scores["participant_id"].astype(str))
    frame = frame[frame["session"].isin([baseline, early])]
    wide = frame.pivot(index="participant_id", columns="session", values="total")
    rows = [pd.DataFrame({"participant_id": wide.index, "session": s,
                          f"{instrument}_total": wide.get(s)}) for s in (baseline, early)]
    table = pd.concat(rows, ignore_index=True)
    if imaging_cols:
        features = ctx.results.get("features")
        imaging = wide_features(features[features["measure"] != "qc"]).reset_index()
        imaging = imaging[imaging["session"].isin([baseline, early])][["participant_id", "session",
                                                                        *imaging_cols]]
        table = table.merge(imaging.astype({"participant_id": str, "session": str}),
                            on=["participant_id", "session"], how="left")
    modelled = set(data["participant_id"])
    table = table[table["participant_id"].isin(modelled)]
    outcome = settings["outcome"]
    targets = outcomes.reset_index()[["participant_id", outcome]]
    try:
        comparison = compare_early_change(
            table, targets[targets["participant_id"].isin(modelled)], outcome=outcome,
            baseline=baseline, mid=early, n_splits=spec.n_splits, n_repeats=spec.n_repeats,
            inner_splits=spec.inner_splits, random_state=spec.random_state,
            param_grid=None if spec.tune else {})
    except (BadInputError, ValueError) as exc:
        result.skip("early change", str(exc))
        return
    result.add("early_change_metrics", comparison.metrics())
    result.add("early_change_comparison", comparison.comparison)
    dropped.append(comparison.dropped.assign(step="early change"))
    result.summary["early_change"] = {"early_session": early, "features": len(table.columns) - 2}


def _pai(ctx, settings, result, data, outcomes, spec, clinical_cols) -> None:
    from theramark.predict.pai import pai_summary, personalized_advantage

    if not settings["pai"]:
        result.skip("personalized advantage index", "[predict] pai = false")
        return
    arms = list(settings["pai_arms"] or ctx.design.arms)
    if len(arms) < 2:
        result.skip("personalized advantage index",
                    f"needs two therapy arms; the study has {arms or 'none'} ([predict] pai_arms)")
        return
    features = [c for c in (settings["pai_features"] or clinical_cols)]
    unknown = [c for c in features if c not in data]
    if unknown:
        raise BadInputError(f"{ctx.config_source}: [predict] pai_features {unknown} are not predictor "
                            f"columns ({', '.join(c for c in data if not c.startswith('_'))})")
    if not features:
        result.skip("personalized advantage index", "no clinical predictors to moderate the arms "
                                                     "(declare [predict] pai_features)")
        return
    column = settings["pai_outcome"]
    table = data[data["group"].isin(arms)][["participant_id", "group", *features]].copy()
    table["pai_outcome"] = outcomes[column].reindex(table["participant_id"]).to_numpy(float)
    options = dict(outcome="pai_outcome", arm="group", features=features, n_splits=spec.n_splits,
                   random_state=spec.random_state, lower_is_better=settings["lower_is_better"],
                   threshold=settings["pai_threshold"])
    try:
        per = personalized_advantage(table, **options)
        summary = pai_summary(table, n_boot=settings["pai_n_boot"], **options)
    except BadInputError as exc:
        result.skip("personalized advantage index", str(exc))
        return
    result.add("pai", per)
    result.add("pai_summary", summary.assign(outcome=column))
    result.summary["pai"] = {"arms": arms, "outcome": column, "features": features,
                             "threshold": settings["pai_threshold"],
                             "lower_is_better": settings["lower_is_better"]}


def run(ctx) -> AnalysisResult:
    """The ``predict`` analysis of the group level (see the module docstring)."""
    settings = ctx.settings(NAME)
    result = AnalysisResult(NAME)
    result.parameters["predict"] = settings
    if not settings["enabled"]:
        result.skip("response prediction", "[predict] enabled = false (declare [predict] with "
                                           "enabled = true, an outcome and predictors to run it)")
        return result
    if not settings["imaging"] and not settings["clinical"]:
        raise BadInputError(f"{ctx.config_source}: [predict] declares no predictors: set imaging "
                            "(feature keys or prefixes) and/or clinical")
    roles, outcome_data, why = _outcome_data(ctx, settings, result)
    if roles is None:
        result.skip("response prediction", why)
        return result
    instrument, baseline, endpoint = roles
    outcomes, outcome_dropped = outcome_data
    outcome = settings["outcome"]
    task = "classification" if outcome in CLASSIFICATION_OUTCOMES else "regression"
    study = ctx.settings("study")
    participants = ctx.participants.astype({"participant_id": str})
    group_column, site_column = study["group_column"], study["site_column"]
    groups = list(settings["groups"] or ctx.design.patient_groups)
    data = pd.DataFrame({"participant_id": participants["participant_id"]})
    data["group"] = (participants[group_column].astype(str).to_numpy()
                     if group_column in participants else "all")
    dropped: list[pd.DataFrame] = []
    if group_column in participants and groups:
        out = ~data["group"].isin(groups)
        dropped.append(_drop(data.loc[out, "participant_id"], "sample",
                             [f"group {g} is not modelled ([predict] groups: {', '.join(groups)})"
                              for g in data.loc[out, "group"]]))
        data = data[~out].reset_index(drop=True)
    ids = data["participant_id"]
    lost = outcome_dropped[outcome_dropped["participant_id"].astype(str).isin(set(ids))]
    dropped.append(_drop(lost["participant_id"], "outcome", lost["reason"]))
    absent = sorted(set(ids) - set(outcomes.index.astype(str)) - set(lost["participant_id"].astype(str)))
    dropped.append(_drop(absent, "outcome", f"no {instrument} scores"))
    outcomes = outcomes.copy()
    outcomes.index = outcomes.index.astype(str)
    y = outcomes[outcome].reindex(ids)
    data["y"] = (y.astype(float) if task == "regression" else y.map({True: 1, False: 0})).to_numpy()
    data = data[data["participant_id"].isin(outcomes.index)].reset_index(drop=True)

    clinical, clinical_cols = _clinical(ctx, list(settings["clinical"]), outcomes, instrument, baseline,
                                        data["participant_id"])
    data = data.join(clinical, on="participant_id")
    imaging_cols: list[str] = []
    if settings["imaging"]:
        imaging = _imaging(ctx, list(settings["imaging"]), baseline)
        if imaging is None:
            result.skip("imaging predictors", "no features table (the study has no imaging): "
                                              "clinical predictors only")
        else:
            imaging_cols = list(imaging.columns)
            data = data.join(imaging, on="participant_id")
    harmonize_covariates: list[str] = []
    if site_column in participants:
        data[SITE_COLUMN] = participants.set_index("participant_id")[site_column].reindex(
            data["participant_id"]).astype(str).to_numpy()
        for cov in settings["harmonize_covariates"]:
            if cov in participants:
                data[f"{COVARIATE_PREFIX}{cov}"] = participants.set_index("participant_id")[cov].reindex(
                    data["participant_id"]).to_numpy()
                harmonize_covariates.append(cov)
    data, incomplete = complete_rows(data, ["y", *clinical_cols, *imaging_cols,
                                            *[c for c in data if c.startswith(COVARIATE_PREFIX)]],
                                     "predictors")
    dropped.append(incomplete)
    spec = PredictionSpec(
        task=task, imaging=imaging_cols, clinical=clinical_cols, models=list(settings["models"]),
        cv=settings["cv"], n_splits=settings["n_splits"], n_repeats=settings["n_repeats"],
        inner_splits=settings["inner_splits"], tune=settings["tune"],
        n_permutations=settings["n_permutations"], n_boot=settings["n_boot"],
        harmonize=settings["harmonize"], harmonize_covariates=harmonize_covariates,
        unseen_site=settings["unseen_site"], random_state=ctx.random_state,
        min_arm_size=settings["min_arm_size"])
    pai_arms = list(settings["pai_arms"] or ctx.design.arms) if settings["pai"] else []
    describe_sample(data, spec, result, pai_arms)
    result.parameters.update({
        "task": task, "instrument": instrument, "outcome": outcome, "baseline": baseline,
        "endpoint": endpoint, "groups": groups, "imaging_features": imaging_cols,
        "clinical_predictors": clinical_cols, "harmonize_covariates": harmonize_covariates,
        "random_state": ctx.random_state, "min_sample": MIN_SAMPLE})
    result.add("sample", data[["participant_id", "group", *([SITE_COLUMN] if SITE_COLUMN in data else []),
                               "y"]].rename(columns={SITE_COLUMN: "site", "y": outcome}))
    try:
        predict_table(data, spec, result, client=getattr(ctx, "client", None))
    except BadInputError as exc:
        if str(exc).startswith(("[predict]", "no predictors")):
            raise BadInputError(f"{ctx.config_source}: {exc}") from None
        result.skip("response prediction", str(exc))
    _early_change(ctx, settings, result, data, imaging_cols, outcomes, instrument, baseline, endpoint,
                  task, spec, dropped)
    _pai(ctx, settings, result, data, outcomes, spec, clinical_cols)
    result.add("dropped", dropped_table(dropped))
    result.summary["n_dropped"] = int(result.tables["dropped"]["participant_id"].nunique())
    return result
