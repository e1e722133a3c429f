"""Session summary: regulation per run (paired t-test on block means, d_z), learning across runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from theramark.errors import BadInputError
from theramark.realtime.log import FeedbackLog
from theramark.realtime.summary import block_means, regulation, summarize

N, TR = 120, 1.0


def _log(effect: float, rng: np.random.Generator, n: int = N) -> pd.DataFrame:
    """A synthetic feedback log: AR(1) noise, drift, motion, and ``effect`` % in lagged regulate blocks."""
    labels = np.tile(np.repeat(["baseline", "regulate"], 20), n // 40 + 1)[:n]
    lagged = np.r_[np.full(4, "baseline"), labels[:-4]]
    noise = np.zeros(n)
    for t in range(1, n):
        noise[t] = 0.5 * noise[t - 1] + rng.normal()
    motion = np.cumsum(rng.normal(0, 0.02, (n, 6)), axis=0)
    roi = 1000 * (1 + effect / 100 * (lagged == "regulate")) + 2 * noise + np.linspace(0, 3, n) + motion[:, 0]
    table = pd.DataFrame({"volume": np.arange(1, n + 1), "status": "ok", "block": labels, "roi": roi,
                          "feedback": np.clip(0.5 + (roi - 1000) / 20, 0, 1),
                          "latency_ms": 20.0, "fd": 0.1})
    for i, c in enumerate(["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]):
        table[c] = motion[:, i]
    return table


def test_regulation_statistics_equal_scipy_and_closed_form():
    rng = np.random.default_rng(0)
    log = _log(0.8, rng)
    result = regulation(log, TR)
    y = 100 * (log["roi"] / log["roi"].mean() - 1)
    # block k of the lagged labels covers volumes 4 + 20 k ... 23 + 20 k (0-based)
    means = [y[4 + 20 * k: 24 + 20 * k].mean() for k in range(6)]
    a, b = np.array(means[1::2]), np.array(means[0::2])
    expected = stats.ttest_rel(a, b)
    assert result["n_pairs"] == 3
    assert result["t"] == pytest.approx(expected.statistic) and result["p"] == pytest.approx(expected.pvalue)
    assert result["d_z"] == pytest.approx((a - b).mean() / (a - b).std(ddof=1))
    assert result["d_ci_low"] < result["d_z"] < result["d_ci_high"]
    assert result["difference"] == pytest.approx(0.8, abs=0.2) and result["p"] < 0.05
    assert result["glm_psc"] == pytest.approx(0.8 * 1.2, rel=0.5)  # regressor peak / plateau
    blocks = block_means(log, TR, values=y.to_numpy())
    assert list(blocks["n_volumes"][:2]) == [20, 20] and blocks["trial_type"].iloc[0] == "baseline"
    assert result["feedback_regulate"] > result["feedback_baseline"]


def test_false_positive_rate_is_nominal_on_null_runs():
    rng = np.random.default_rng(1)
    p = np.array([regulation(_log(0.0, rng), TR, glm=False)["p"] for _ in range(400)])
    assert 0.025 <= (p < 0.05).mean() <= 0.085  # binomial 99% interval around 5% with 400 runs
    assert stats.kstest(p, "uniform").pvalue > 0.001  # p-values roughly uniform


def _write_run(folder, log: pd.DataFrame) -> None:
    writer = FeedbackLog(folder, list(log.columns), {"tr": TR})
    writer.open()
    for record in log.to_dict("records"):
        writer.append(record)
    writer.close()


def test_summarize_writes_tables_and_finds_learning(tmp_path):
    rng = np.random.default_rng(2)
    effects = [0.0, 0.3, 0.6, 0.9]
    for k, effect in enumerate(effects, start=1):
        _write_run(tmp_path / f"run-{k}", _log(effect, rng))
    result = summarize(tmp_path)
    runs, learning = result["runs"], result["learning"].iloc[0]
    assert list(runs["run"]) == ["run-1", "run-2", "run-3", "run-4"]
    fit = stats.linregress(runs["order"], runs["difference"])
    assert learning["slope"] == pytest.approx(fit.slope) and learning["p"] == pytest.approx(fit.pvalue)
    assert learning["slope"] == pytest.approx(0.3, abs=0.15)
    for name in ("runs.tsv", "learning.tsv", "summary.json"):
        assert (tmp_path / "summary" / name).is_file()
    data = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert data["learning"]["n_runs"] == 4 and len(data["runs"]) == 4
    single = summarize(tmp_path / "run-4")
    assert len(single["runs"]) == 1 and np.isnan(single["learning"]["slope"].iloc[0])


def test_summarize_errors(tmp_path):
    with pytest.raises(BadInputError, match="no feedback.tsv"):
        summarize(tmp_path)
    _write_run(tmp_path / "run-1", _log(0.0, np.random.default_rng(3)))
    with pytest.raises(BadInputError, match="no column 'roi_x'"):
        summarize(tmp_path, column="roi_x")
