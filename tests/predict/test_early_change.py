"""Early-change features, outcome definitions and the baseline vs early-change comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from theramark.errors import BadInputError
from theramark.predict.compare import same_splits
from theramark.predict.early_change import (
    compare_early_change,
    early_change_features,
    treatment_outcomes,
)


def _study(seed: int = 0, n: int = 160):
    """Features at pre/mid; the HAMD-17 endpoint depends on the early change of feature ``a``."""
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i:03d}" for i in range(n)]
    pre = rng.normal(size=(n, 3))
    delta = rng.normal(size=(n, 3))
    mid = pre + delta
    rows = []
    for i, pid in enumerate(ids):
        rows.append({"participant_id": pid, "session": "ses-pre", **dict(zip("abc", pre[i], strict=True))})
        rows.append({"participant_id": pid, "session": "ses-mid", **dict(zip("abc", mid[i], strict=True))})
    features = pd.DataFrame(rows)
    baseline_total = rng.integers(18, 30, n).astype(float)
    reduction = np.clip(0.5 + 0.25 * delta[:, 0] + rng.normal(0, 0.1, n), 0, 1)
    endpoint_total = np.round(baseline_total * (1 - reduction))
    scores = pd.DataFrame({"participant_id": np.repeat(ids, 2), "session": ["pre", "post"] * n,
                           "total": np.column_stack([baseline_total, endpoint_total]).ravel()})
    return features, scores, pre, mid


def test_baseline_and_change_features_with_dropped_participants():
    features, _, pre, mid = _study(n=20)
    features = features[~((features.participant_id == "sub-004") & (features.session == "ses-mid"))]
    features.loc[(features.participant_id == "sub-007") & (features.session == "ses-pre"), "b"] = np.nan
    out = early_change_features(features, baseline="pre", mid="mid")
    keep = [i for i in range(20) if i not in (4, 7)]
    np.testing.assert_allclose(out.baseline.to_numpy(), pre[keep])
    np.testing.assert_allclose(out.change.to_numpy(), mid[keep] - pre[keep])
    assert list(out.change.columns) == ["a_change", "b_change", "c_change"]
    assert out.dropped.to_dict("records") == [
        {"participant_id": "sub-004", "reason": "no mid session"},
        {"participant_id": "sub-007", "reason": "missing b at pre"}]
    # a wide_features-style table (index participant_id, session) is accepted as is
    again = early_change_features(features.set_index(["participant_id", "session"]))
    pd.testing.assert_frame_equal(again.change, out.change)
    with pytest.raises(BadInputError, match="no rows for session 'week2'"):
        early_change_features(features, mid="week2")


def test_outcome_definitions_by_hand():
    scores = pd.DataFrame({"participant_id": ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s5", "s5"],
                           "session": ["pre", "post", "pre", "post", "pre", "post", "pre", "pre", "post"],
                           "total": [20, 10, 20, 11, 24, 7, 22, 0, 3]})
    out, dropped = treatment_outcomes(scores, "hamd17")
    assert out.index.tolist() == ["s1", "s2", "s3"]
    assert out["response"].tolist() == [True, False, True]  # >= 50% reduction: 50%, 45%, 71%
    assert out["remission"].tolist() == [False, False, True]  # HAMD-17 <= 7
    np.testing.assert_allclose(out["percent_change"], [-50.0, -45.0, -100 * 17 / 24])
    assert dropped.to_dict("records") == [
        {"participant_id": "s4", "reason": "no post total"},
        {"participant_id": "s5", "reason": "baseline at the scale floor: percent change undefined"}]
    declared, _ = treatment_outcomes(scores, "hamd17", remission_threshold=10)
    assert declared["remission"].tolist() == [True, False, True]
    assert declared.attrs["remission_threshold"] == 10


def test_early_change_beats_baseline_when_the_change_carries_the_signal():
    features, scores, _, _ = _study(seed=1, n=160)
    features = features[~((features.participant_id == "sub-000") & (features.session == "ses-mid"))]
    outcomes, _ = treatment_outcomes(scores, "hamd17")
    outcomes = outcomes.drop(index="sub-001")
    model = make_pipeline(StandardScaler(), LogisticRegression())
    res = compare_early_change(features, outcomes, outcome="response", estimator=model, n_splits=5,
                               n_repeats=2)
    assert same_splits(res.baseline_result, res.early_result)
    row = res.comparison.iloc[0]
    assert row["model_a"] == "early_change" and row["metric"] == "auc"
    assert row["mean_a"] > 0.75 and row["mean_b"] < 0.65
    assert row["mean_difference"] > 0 and row["p_value"] < 0.05
    reasons = dict(zip(res.dropped["participant_id"], res.dropped["reason"], strict=True))
    assert reasons == {"sub-000": "no mid session", "sub-001": "no response outcome"}
    assert len(res.baseline_result.predictions) == 2 * 158
    table = res.metrics()
    assert set(table["model"]) == {"baseline", "early_change"}
