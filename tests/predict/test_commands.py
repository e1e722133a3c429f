"""``theramark predict`` on features tables: end to end, and bad input as exit 2 with a message."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from theramark.cli import main

FAST = ["--n-repeats", "1", "--no-tune", "--n-boot", "200"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def wide(n=60, seed=0, planted=1.5):
    """One row per participant: 6 edges, the first planted, a text outcome, age and a site."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = planted * X[:, 0] + rng.normal(size=n) > 0
    table = pd.DataFrame(X, columns=[f"pearsoncorrelation|rest|a__{c}" for c in "bcdefg"])
    table.insert(0, "participant_id", [f"sub-{i:03d}" for i in range(n)])
    table["responder"] = np.where(y, "yes", "no")
    table["age"] = rng.normal(40, 10, n)
    table["site"] = rng.choice(["s1", "s2"], n)
    return table


def test_predict_end_to_end_on_a_tsv(tmp_path, capsys):
    table = wide()
    table.loc[4, "responder"] = np.nan  # no outcome: dropped and listed
    path = tmp_path / "features.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    out = tmp_path / "out"
    code = main(["predict", str(path), "--outcome", "responder", "--out", str(out), "--clinical", "age",
                 "--features", "pearsoncorrelation|rest", "--site-column", "site",
                 "--n-permutations", "9", *FAST])
    assert code == 0
    folder = out / "group" / "predict"
    for name in ("predictions", "metrics", "permutation", "permutation_null", "comparison", "roc",
                 "reliability", "feature_stability", "dropped", "sample"):
        assert (folder / f"{name}.tsv").is_file(), name
    record = json.loads((folder / "predict.json").read_text())
    assert record["Summary"]["n"] == 59 and record["Summary"]["harmonized_in_folds"]
    dropped = pd.read_csv(folder / "dropped.tsv", sep="\t")
    assert dropped["participant_id"].tolist() == ["sub-004"] and "responder" in dropped["reason"][0]
    predictions = pd.read_csv(folder / "predictions.tsv", sep="\t")
    combined = predictions[predictions["feature_set"] == "combined"]
    assert set(combined["participant_id"]) == set(table["participant_id"]) - {"sub-004"}
    metrics = pd.read_csv(folder / "metrics.tsv", sep="\t").set_index(["feature_set", "metric"])
    pooled = combined.groupby("participant_id").agg(y=("y_true", "first"), p=("y_prob", "mean"))
    assert metrics.loc[("combined", "auc"), "estimate"] == pytest.approx(roc_auc_score(pooled["y"],
                                                                                       pooled["p"]))
    assert metrics.loc[("combined", "auc"), "estimate"] > 0.75  # the planted edge
    stability = pd.read_csv(folder / "feature_stability.tsv", sep="\t")
    top = stability[stability["feature_set"] == "imaging"].sort_values("mean_weight").iloc[-1]
    assert top["feature"] == "pearsoncorrelation|rest|a__b"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Warning: only 59 participants" in html and "Model card" in html
    assert "auc" in capsys.readouterr().out


def test_predict_regression_with_cpm_on_a_long_features_table(tmp_path):
    rng = np.random.default_rng(1)
    n, edges = 60, [f"r{i}__r{j}" for i in range(5) for j in range(i + 1, 5)]
    values = rng.normal(size=(n, len(edges)))
    outcome = values[:, :2].sum(axis=1) + rng.normal(0, 0.3, n)
    rows = [(f"sub-{i:02d}", s, "rest", "pearsoncorrelation", e, values[i, k] + (0.1 if s == "post" else 0),
             outcome[i]) for i in range(n) for s in ("pre", "post") for k, e in enumerate(edges)]
    long = pd.DataFrame(rows, columns=["participant_id", "session", "task", "measure", "feature", "value",
                                       "hamd17_change"])
    path = tmp_path / "features.parquet"
    long.to_parquet(path)
    out = tmp_path / "out"
    assert main(["predict", str(path), "--outcome", "hamd17_change", "--out", str(out), "--session",
                 "pre", "--model", "cpm", "elasticnet", "--features", "pearsoncorrelation|rest",
                 "--n-permutations", "0", *FAST]) == 0
    metrics = pd.read_csv(out / "group" / "predict" / "metrics.tsv", sep="\t")
    cpm = metrics[metrics["model"] == "cpm"].set_index("metric")["estimate"]
    assert cpm["pearson_r"] > 0.5 and cpm["r2"] > 0.2
    stability = pd.read_csv(out / "group" / "predict" / "feature_stability.tsv", sep="\t")
    positive = stability[(stability["model"] == "cpm") & (stability["direction"] == "positive")]
    chosen = positive[positive["frequency"] == 1.0]["feature"]
    assert set(chosen) == {"pearsoncorrelation|rest|r0__r1", "pearsoncorrelation|rest|r0__r2"}


@pytest.mark.parametrize(("change", "args", "message"), [
    (None, ["--outcome", "nope"], "no outcome column 'nope'"),
    ("one_class", ["--outcome", "responder", "--task", "classification"], "two outcome classes"),
    ("constant", ["--outcome", "responder"], "constant predictor"),
    (None, ["--outcome", "responder", "--features", "partialcorrelation|rest"], "matches no feature"),
    (None, ["--outcome", "responder", "--model", "cpm"], "no model can run"),
    ("duplicate", ["--outcome", "responder"], "one row per participant"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, change, args, message):
    table = wide(n=30).drop(columns=["site"])
    if change == "one_class":
        table["responder"] = "yes"
    elif change == "constant":
        table["pearsoncorrelation|rest|a__c"] = 1.0
    elif change == "duplicate":
        table.loc[1, "participant_id"] = table.loc[0, "participant_id"]
    path = tmp_path / "features.tsv"
    table.to_csv(path, sep="\t", index=False)
    code = main(["predict", str(path), "--out", str(tmp_path / "out"), "--n-permutations", "0", *FAST,
                 *args])
    assert code == 2
    assert message in capsys.readouterr().err
