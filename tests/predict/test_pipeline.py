"""The group-level ``predict`` analysis end to end on simulated studies with a planted predictor.

The studies are simulated at the feature level here (no BOLD): baseline sgACC–NAcc connectivity
rises with a latent response propensity that raises the odds of response, as the simulator's
``baseline_sgacc_nacc_fc_predicts_response`` (theramark.simulate.study / design) plants it.
Simulating BOLD for the ``large`` preset takes far too long for a test; the planted relation has
the preset's form (added correlation ``slope × propensity``, log-odds ``1.8 × propensity``), with
the measurement noise of an edge set to a between-participant SD of 0.1 (Fisher z).
"""

from __future__ import annotations

import itertools
import tomllib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from theramark.config import load_config
from theramark.context import GroupContext
from theramark.errors import BadInputError
from theramark.group.features import build_features
from theramark.report import Report
from theramark.report.build import analysis_sections
from theramark.results import AnalysisFiles
from theramark.study.design import infer_design
from theramark.workflow import DEMO_CONFIG, run_analysis

ROIS = ["sgacc", "nacc_L", "nacc_R", "amygdala_L", "dacc", "vmpfc"]
PLANTED = ["nacc_L__sgacc", "nacc_R__sgacc"]
FAST = {"n_repeats": 1, "tune": False, "n_boot": 200, "pai_n_boot": 100}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def simulated_study(seed=0, n_per_arm=20, n_controls=6, slope=0.1, noise=0.1, logodds=1.8,
                    sites=("A", "B")):
    """Long participant outputs, participants and HAMD-17 scores (pre, mid, post).

    Patients' baseline sgACC–NAcc edges carry ``slope × propensity``; response (≥ 50% HAMD-17
    reduction) goes to the 40% of patients with the highest ``logodds × propensity + logistic
    noise``. Site B adds 0.1 to every edge (removed by ComBat inside the folds).
    """
    rng = np.random.default_rng(seed)
    edges = ["__".join(sorted(pair)) for pair in itertools.combinations(ROIS, 2)]
    arms = ["CBT"] * n_per_arm + ["MBCT"] * n_per_arm + ["waitlist"] * n_per_arm + ["HC"] * n_controls
    n = len(arms)
    participants = pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)], "age": rng.integers(20, 60, n),
        "sex": rng.choice(["F", "M"], n), "site": rng.choice(list(sites), n), "group": arms})
    propensity = rng.normal(size=n)
    score = logodds * propensity + rng.logistic(size=n)
    patient = participants["group"].to_numpy() != "HC"
    responder = patient & (score > np.quantile(score[patient], 0.6))
    planted = np.array([e in PLANTED for e in edges])
    rows, scores = [], []
    for i, person in participants.iterrows():
        before = rng.normal(22, 4) if patient[i] else 3.0
        after = before * (rng.uniform(0.15, 0.45) if responder[i] else rng.uniform(0.65, 1.0)) \
            if patient[i] else 3.0
        totals = {"pre": before, "mid": (before + after) / 2 + rng.normal(0, 1), "post": after}
        for session, total in totals.items():
            values = 0.3 + rng.normal(0, noise, len(edges)) + 0.1 * (person["site"] == "B")
            if patient[i]:
                values[planted] += slope * propensity[i]
            rows += [(person["participant_id"], session, "rest", 1, "pearsoncorrelation", e, v)
                     for e, v in zip(edges, values, strict=True)]
            scores.append((person["participant_id"], session, float(round(total))))
    long = pd.DataFrame(rows, columns=["participant_id", "session", "task", "run", "measure", "feature",
                                       "value"])
    return long, participants, {"hamd17": pd.DataFrame(scores, columns=["participant_id", "session",
                                                                        "total"])}


def context(tmp_path, predict, study=None, **kwargs):
    long, participants, scores = study or simulated_study(**kwargs)
    return GroupContext(
        bids_dir=tmp_path / "bids", out_dir=tmp_path / "out",
        config={"study": {"reference_group": "waitlist", "control_group": "HC"}, "predict": predict},
        participants=participants, design=infer_design(participants, ["pre", "mid", "post"]),
        results={"scores": scores, "primary_instrument": "hamd17",
                 "features": build_features(long, participants, scores)},
        random_state=0)


def test_every_table_written_and_the_section_drawn(tmp_path):
    long, participants, scores = simulated_study(seed=1)
    # one patient without a post score, one without a baseline edge: listed, never silently lost
    scores["hamd17"] = scores["hamd17"][~((scores["hamd17"]["participant_id"] == "sub-001")
                                          & (scores["hamd17"]["session"] == "post"))]
    long = long[~((long["participant_id"] == "sub-002") & (long["session"] == "pre")
                  & (long["feature"] == "amygdala_L__dacc"))]
    ctx = context(tmp_path, {"enabled": True, "imaging": ["pearsoncorrelation|rest"],
                             "clinical": ["baseline_total", "age", "sex"], "n_permutations": 9, **FAST},
                  study=(long, participants, scores))
    result = run_analysis(ctx, "predict")
    files = AnalysisFiles(ctx.group_dir, "predict")
    expected = {"sample", "dropped", "predictions", "metrics", "fold_metrics", "permutation",
                "permutation_null", "comparison", "roc", "reliability", "feature_stability",
                "early_change_metrics", "early_change_comparison", "pai", "pai_summary"}
    assert expected <= set(files.names()) and all(files.path(n).is_file() for n in expected)
    dropped = files.table("dropped").set_index("participant_id")
    assert "no post total" in dropped.loc["sub-001", "reason"]
    assert "amygdala_L__dacc" in dropped.loc["sub-002", "reason"]
    controls = participants.loc[participants["group"] == "HC", "participant_id"]
    assert set(controls) <= set(dropped.index)
    modelled = set(files.table("sample")["participant_id"])
    patients = set(participants.loc[participants["group"] != "HC", "participant_id"])
    assert modelled | {"sub-001", "sub-002"} == patients and not modelled & set(dropped.index)
    # metrics against scikit-learn on the repeat-averaged out-of-fold probabilities
    predictions = files.table("predictions")
    metrics = files.table("metrics").set_index(["model", "feature_set", "metric"])
    for fset in ("combined", "clinical", "imaging"):
        rows = predictions[predictions["feature_set"] == fset]
        pooled = rows.groupby("participant_id").agg(y=("y_true", "first"), p=("y_prob", "mean"))
        auc = roc_auc_score(pooled["y"], pooled["p"])
        assert metrics.loc[("elasticnet", fset, "auc"), "estimate"] == pytest.approx(auc, abs=1e-12)
        roc = files.table("roc").query("feature_set == @fset")
        assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(auc, abs=1e-12)
    assert len(predictions) == 3 * len(modelled)  # 3 feature sets x 1 repeat
    null = files.table("permutation_null")
    assert len(null) == 9 and files.table("permutation")["n_permutations"].iloc[0] == 9
    stability = files.table("feature_stability")
    assert set(stability["feature_set"]) == {"combined", "clinical", "imaging"}
    assert stability["frequency"].between(0, 1).all() and (stability["n_fits"] == 5).all()
    assert set(files.table("pai")["indicated_arm"]) <= {"CBT", "MBCT"}
    assert result.summary["n"] == len(modelled)
    assert any(w.startswith("Warning: only") for w in result.summary["warnings"])
    assert any("arm(s) with fewer than 20" in w for w in result.summary["warnings"])
    html = Report().add(*analysis_sections(ctx.group_dir, "predict")).to_html()
    for text in ("Response prediction", "Warning: only", "Model card", "Nadeau", "Feature stability",
                 "Personalized Advantage Index", "Participants left out", "Early change"):
        assert text in html, text


def test_disabled_by_default_with_the_reason(tmp_path):
    ctx = context(tmp_path, {}, n_per_arm=6)
    result = run_analysis(ctx, "predict")
    assert result.tables == {} and "enabled = false" in result.skipped[0][1]
    assert analysis_sections(ctx.group_dir, "predict") == []


@pytest.mark.parametrize(("predict", "key"), [
    ({"instrument": "madrs"}, "[predict] instrument"),
    ({"clinical": ["baseline_total", "income"]}, "[predict] clinical"),
    ({"imaging": ["partialcorrelation|rest"]}, "[predict] imaging"),
    ({"clinical": [], "imaging": []}, "[predict] declares no predictors"),
    ({"cv": "site", "unseen_site": "error", "imaging": ["pearsoncorrelation|rest"]}, "unseen_site"),
    ({"models": ["cpm"], "imaging": ["pearsoncorrelation|rest"]}, "[predict] models"),
])
def test_config_errors_name_the_key(tmp_path, predict, key):
    ctx = context(tmp_path, {"enabled": True, **FAST, **predict}, n_per_arm=10)
    with pytest.raises(BadInputError, match=key.replace("[", r"\[").replace("]", r"\]")):
        run_analysis(ctx, "predict")


def test_unknown_model_and_outcome_rejected_by_the_schema(tmp_path):
    for text, key in (('models = ["forest"]', "models"), ('outcome = "survival"', "outcome")):
        path = tmp_path / "study.toml"
        path.write_text(f"[predict]\nenabled = true\n{text}\n")
        with pytest.raises(BadInputError, match=rf"predict.*{key}|{key}.*predict"):
            load_config(path)


def test_too_few_responders_is_a_recorded_skip_not_a_crash(tmp_path):
    ctx = context(tmp_path, {"enabled": True, "reduction": 0.95, "n_permutations": 0, **FAST},
                  n_per_arm=8)
    result = run_analysis(ctx, "predict")
    reasons = dict(result.skipped)
    assert "smaller outcome class" in reasons["response prediction"] or \
        "class(es)" in reasons["response prediction"]
    assert "dropped" in result.tables and "sample" in result.tables
    html = Report().add(*analysis_sections(ctx.group_dir, "predict")).to_html()
    assert "No prediction model was fitted" in html and "Warning: only" in html


def test_demo_config_declares_the_planted_predictor():
    predict = tomllib.loads(DEMO_CONFIG)["predict"]
    assert predict["enabled"] and predict["outcome"] == "response"
    assert {f"pearsoncorrelation|rest|{e}" for e in PLANTED} == set(predict["imaging"])


@pytest.mark.slow
@pytest.mark.parametrize("null", [False, True])
def test_planted_baseline_predictor_recovered_and_null_not(tmp_path, null):
    """Large-preset-sized study (50 per arm, three sites): AUC >= 0.70 with permutation p < 0.05;
    with nothing planted (slope 0, propensity without effect) neither."""
    ctx = context(tmp_path, {"enabled": True, "imaging": ["pearsoncorrelation|rest"], "clinical": [],
                             "n_permutations": 39, "early_change": False, "pai": False, **FAST},
                  seed=6, n_per_arm=50, sites=("A", "B", "C"), slope=0.0 if null else 0.1,
                  logodds=0.0 if null else 1.8)
    result = run_analysis(ctx, "predict")
    primary = result.summary["primary"]
    assert primary["feature_set"] == "imaging" and result.summary["harmonized_in_folds"]
    if null:
        assert primary["estimate"] < 0.65 and primary["p_value"] > 0.05
    else:
        assert primary["estimate"] >= 0.70 and primary["p_value"] < 0.05
        stability = result.tables["feature_stability"].set_index("feature")
        planted = [f"pearsoncorrelation|rest|{e}" for e in PLANTED]
        assert (stability.loc[planted, "frequency"] == 1.0).all()
        others = stability.drop(index=planted)["mean_weight"].abs()
        assert stability.loc[planted, "mean_weight"].min() > others.max() > 0


def test_clinical_predictors_from_instruments_and_participants(tmp_path):
    long, participants, scores = simulated_study(seed=2, n_per_arm=8)
    ctx = context(tmp_path, {"enabled": True, "clinical": ["hamd17_total", "age", "sex"],
                             "n_permutations": 0, "early_change": False, "pai": False, **FAST},
                  study=(long, participants, scores))
    result = run_analysis(ctx, "predict")
    assert result.parameters["clinical_predictors"] == ["hamd17_total", "age", "sex=M"]
    assert result.parameters["imaging_features"] == [] and "metrics" in result.tables
    assert set(result.tables["metrics"]["feature_set"]) == {"clinical"}
    assert "incremental value of imaging" in dict(result.skipped)
    from theramark.predict.pipeline import _clinical

    outcomes = result.tables["sample"].set_index("participant_id")
    ids = outcomes.index.to_series()
    values, names = _clinical(ctx, ["hamd17_total", "sex"], None, "hamd17", "pre", ids)
    pre = scores["hamd17"].query("session == 'pre'").set_index("participant_id")["total"]
    sex = participants.set_index("participant_id")["sex"]
    assert names == ["hamd17_total", "sex=M"]
    assert np.array_equal(values["hamd17_total"].to_numpy(), pre.loc[ids].to_numpy())
    assert np.array_equal(values["sex=M"].to_numpy(), (sex.loc[ids] == "M").to_numpy(float))
