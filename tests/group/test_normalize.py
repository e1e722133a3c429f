"""Normalization toward healthy controls: closed forms, scipy references, planted effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from theramark.errors import BadInputError
from theramark.group.normalize import control_distances, normalization, normalization_contrast

#: The study design these tests simulate (the functions take it; none is assumed).
DESIGN = {"control_group": "HC", "baseline": "pre", "endpoint": "post"}


def _study(seed=0, n=30, n_features=50, n_normalizing=10):
    """Patients start 2 SD above controls; CBT returns to the control mean on the first features."""
    rng = np.random.default_rng(seed)
    rows = []
    arms = {"HC": 0.0, "CBT": 2.0, "waitlist": 2.0}
    k = 0
    for arm, offset in arms.items():
        for _ in range(n):
            k += 1
            trait = rng.normal(0, 0.3, n_features)
            for session in ("pre", "post"):
                shift = np.full(n_features, offset)
                if arm == "CBT" and session == "post":
                    shift[:n_normalizing] = 0.0
                values = shift + trait + rng.normal(0, 0.95, n_features)
                rows.append({"participant_id": f"sub-{k:03d}", "group": arm, "session": session,
                             **{f"f{i}": v for i, v in enumerate(values)}})
    return pd.DataFrame(rows)


def test_z_scores_closed_form():
    table = _study(n=8, n_features=3)
    z_pre, z_post, arm = control_distances(table, ["f0", "f1", "f2"], **DESIGN)
    controls = table[table["group"] == "HC"].groupby("participant_id")[["f0", "f1", "f2"]].mean()
    patient = table[(table["group"] == "CBT") & (table["session"] == "post")].iloc[0]
    expected = (patient[["f0", "f1", "f2"]].astype(float) - controls.mean()) / controls.std()
    np.testing.assert_allclose(z_post.loc[patient["participant_id"]], expected)
    assert set(arm) == {"CBT", "waitlist"}


def test_normalization_matches_scipy_and_finds_planted_effect():
    features = [f"f{i}" for i in range(50)]
    table = _study()
    result = normalization(table, features, **DESIGN)
    cbt = result[result["arm"] == "CBT"].set_index("feature")
    z_pre, z_post, arm = control_distances(table, features, **DESIGN)
    mask = (arm == "CBT").to_numpy()
    ref = stats.ttest_rel(np.abs(z_post.to_numpy()[mask, 0]), np.abs(z_pre.to_numpy()[mask, 0]))
    assert cbt.loc["f0", "statistic"] == pytest.approx(ref.statistic)
    assert cbt.loc["f0", "p"] == pytest.approx(ref.pvalue)
    # planted: CBT back to the control mean on f0..f9 (about 100 % normalized), unchanged elsewhere
    assert cbt.loc[features[:10], "percent_normalized"].median() > 70
    assert cbt.loc[features[10:], "percent_normalized"].abs().median() < 30
    assert (cbt.loc[features[:10], "p"] < 0.05).mean() >= 0.8
    # an arm that was not abnormal at baseline has no percent normalized
    assert normalization(table, features[:2], min_baseline_distance=50, **DESIGN)[
        "percent_normalized"].isna().all()
    waitlist = result[result["arm"] == "waitlist"]
    assert (waitlist["p"] < 0.05).mean() < 0.15
    contrast = normalization_contrast(table, features, reference_group="waitlist", **DESIGN)
    contrast = contrast.set_index("feature")
    assert (contrast.loc[features[:10], "estimate"] < 0).all()
    assert (contrast.loc[features[:10], "p"] < 0.05).mean() >= 0.7
    assert (contrast.loc[features[10:], "p"] < 0.05).mean() < 0.15


def test_bad_inputs():
    table = _study(n=4, n_features=2)
    with pytest.raises(BadInputError, match="control group"):
        normalization(table, ["f0"], **{**DESIGN, "control_group": "controls"})
    with pytest.raises(BadInputError, match="session 'week8'"):
        normalization(table, ["f0"], **{**DESIGN, "endpoint": "week8"})
    with pytest.raises(BadInputError, match="not in the table"):
        normalization(table, ["zz"], **DESIGN)
    few = table[(table["group"] != "HC") | table["participant_id"].isin(["sub-001", "sub-002"])]
    with pytest.raises(BadInputError, match="fewer than 3 controls"):
        normalization(few, ["f0"], **DESIGN)
