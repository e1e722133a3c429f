"""After the session: regulation success per run and learning across runs, from the feedback logs.

Regulation of a run is measured on the logged raw ROI means (``roi``: the feedback ROI, or any
``roi_<name>``) in percent of the run's mean: one mean per block, over the block's volumes shifted
by the haemodynamic lag (``lag_s``, default 4 s: a volume counts for the block that was on
``lag_s`` earlier); each regulate block is compared with the baseline block just before it (paired
t-test over the pairs, effect size d_z). Pairing neighbours cancels slow drifts; volumes within a
block are autocorrelated, blocks much less so, so that testing block means keeps the
false-positive rate near its nominal level where a test over volumes would not. The online
``psc`` column is not used (each value is referenced to the latest baseline block, which couples
neighbouring blocks). The offline GLM estimate of the regulate effect (drift and motion
regressed, :func:`glm_test`) and the mean feedback in regulate and baseline blocks are reported
too. For connectivity feedback, ``column="signal"`` takes the logged correlations as they are.

Learning is the ordinary least-squares slope of each run's regulation (mean paired difference)
over the run's order, with its t-test (two or more runs; three for a test).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import BadInputError
from theramark.realtime.log import LOG_NAME, read_log
from theramark.realtime.protocol import BASELINE, REGULATE

__all__ = ["block_means", "cleaned_psc", "find_runs", "glm_test", "regulation", "summarize"]


def find_runs(log_dir: str | os.PathLike) -> list[Path]:
    """Run folders of a session: ``LOG_DIR`` itself if it holds ``feedback.tsv``, else its subfolders
    that do (in name order, the order of the runs)."""
    log_dir = Path(log_dir)
    if (log_dir / LOG_NAME).is_file():
        return [log_dir]
    runs = sorted(p.parent for p in log_dir.glob(f"*/{LOG_NAME}"))
    if not runs:
        raise BadInputError(f"{log_dir}: no {LOG_NAME} here or in its subfolders")
    return runs


def block_means(log: pd.DataFrame, tr: float, lag_s: float = 4.0, column: str = "psc",
                values: np.ndarray | None = None) -> pd.DataFrame:
    """Mean of ``column`` (or of ``values``) per protocol block, each volume assigned to the block
    ``lag_s`` earlier.

    Returns
    -------
    DataFrame
        ``block`` (running number), ``trial_type``, ``n_volumes``, ``mean``.
    """
    shift = int(round(lag_s / tr))
    labels = log["block"].fillna("").astype(str).to_numpy()
    lagged = np.concatenate([np.full(shift, ""), labels[: len(labels) - shift]]) if shift else labels
    start = np.r_[True, lagged[1:] != lagged[:-1]]
    if values is None:
        values = pd.to_numeric(log[column], errors="coerce").to_numpy()
    table = pd.DataFrame({"block": np.cumsum(start), "trial_type": lagged, "value": values})
    table = table[table["trial_type"] != ""]
    grouped = table.groupby(["block", "trial_type"], sort=True)["value"]
    out = grouped.agg(n_volumes="count", mean="mean").reset_index()
    return out[out["n_volumes"] > 0].reset_index(drop=True)


def cleaned_psc(log: pd.DataFrame, tr: float, column: str = "roi", drift_model: str = "cosine",
                high_pass: float = 0.008, drift_order: int = 2, motion: bool = True) -> np.ndarray:
    """The whole run's ``column`` with drift and motion regressed out, in percent of its mean.

    Returns
    -------
    ndarray, shape (n_volumes,)
        NaN where the volume is not ``ok`` or the value is missing.
    """
    from theramark.realtime.glm import drift_regressors
    from theramark.realtime.realign import MOTION_COLUMNS

    y = pd.to_numeric(log[column], errors="coerce").to_numpy(float)
    drift = drift_regressors(int(log["volume"].max()), tr, drift_model, high_pass, drift_order)
    rows = log["volume"].to_numpy(int) - 1
    design = drift.to_numpy()[rows]
    constant = list(drift.columns).index("constant")
    if motion:
        design = np.column_stack([design, log[list(MOTION_COLUMNS)].to_numpy(float)])
    ok = np.isfinite(y) & np.all(np.isfinite(design), axis=1) & (log["status"].astype(str) == "ok").to_numpy()
    out = np.full(len(y), np.nan)
    if ok.sum() <= design.shape[1]:
        return out
    beta = np.linalg.lstsq(design[ok], y[ok], rcond=None)[0]
    nuisance = np.delete(np.arange(design.shape[1]), constant)
    residual = y[ok] - design[ok][:, nuisance] @ beta[nuisance]
    out[ok] = 100.0 * (residual / beta[constant] - 1.0)
    return out


def glm_test(log: pd.DataFrame, tr: float, column: str = "roi", drift_model: str = "cosine",
             high_pass: float = 0.008, drift_order: int = 2, motion: bool = True,
             hrf_model: str = "glover") -> dict[str, float]:
    """Offline first-level GLM of a run's logged signal: regulate effect, t and p with AR(1) noise.

    The design is the engine's: the regulate blocks of the log (``block`` column) convolved with
    the HRF, the drift model, the constant and the six logged motion parameters; it is fitted by
    :func:`nilearn.glm.first_level.run_glm` (AR(1) prewhitening) on the ``ok`` volumes.

    Returns
    -------
    dict
        ``glm_psc`` (``100 beta peak / constant``: the PSC at the regressor's peak), ``glm_t``,
        ``glm_p`` (two-sided).
    """
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import compute_regressor, run_glm

    from theramark.realtime.glm import drift_regressors
    from theramark.realtime.realign import MOTION_COLUMNS

    out = {"glm_psc": np.nan, "glm_t": np.nan, "glm_p": np.nan}
    n = int(log["volume"].max())
    labels = np.full(n, "", dtype=object)
    labels[log["volume"].to_numpy(int) - 1] = log["block"].fillna("").astype(str).to_numpy()
    regulate = labels == REGULATE
    if not regulate.any() or regulate.all():
        return out
    edges = np.flatnonzero(np.diff(np.r_[0, regulate.astype(int), 0]))
    onsets, ends = edges[::2] * tr, edges[1::2] * tr
    task, _ = compute_regressor(np.vstack([onsets, ends - onsets, np.ones(len(onsets))]), hrf_model,
                                np.arange(n) * tr, oversampling=16)
    drift = drift_regressors(n, tr, drift_model, high_pass, drift_order)
    rows = log["volume"].to_numpy(int) - 1
    design = np.column_stack([task[rows, 0], drift.to_numpy()[rows]])
    if motion:
        design = np.column_stack([design, log[list(MOTION_COLUMNS)].to_numpy(float)])
    y = pd.to_numeric(log[column], errors="coerce").to_numpy(float)
    ok = np.isfinite(y) & np.all(np.isfinite(design), axis=1) & (log["status"].astype(str) == "ok").to_numpy()
    if ok.sum() <= design.shape[1] + 2:
        return out
    labels_, results = run_glm(y[ok, None], design[ok], noise_model="ar1")
    contrast = np.zeros(design.shape[1])
    contrast[0] = 1.0
    con = compute_contrast(labels_, results, contrast, stat_type="t")
    beta = results[labels_[0]].theta[:, 0]
    constant = 1 + list(drift.columns).index("constant")
    out["glm_psc"] = float(100.0 * beta[0] * np.abs(task[:, 0]).max() / beta[constant])
    out["glm_t"] = float(np.ravel(con.stat())[0])
    out["glm_p"] = float(2 * min(np.ravel(con.p_value())[0], 1 - np.ravel(con.p_value())[0]))
    return out


def regulation(log: pd.DataFrame, tr: float, lag_s: float = 4.0, column: str = "roi",
               settings: dict[str, Any] | None = None, glm: bool = True) -> dict[str, Any]:
    """Regulate versus baseline blocks of one run: each regulate block against the baseline block
    before it.

    Parameters
    ----------
    log : DataFrame
        ``feedback.tsv``.
    tr : float
    lag_s : float
    column : str
        Raw signal column (``roi``, ``roi_<name>``: in percent of its run mean) or ``signal``
        (taken as logged, e.g. connectivity).
    settings : dict, optional
        The run's ``[realtime]`` settings (drift model and motion regressors of the GLM estimate);
        default the defaults.
    glm : bool
        Also fit the offline GLM (``glm_psc``).

    Returns
    -------
    dict
        ``n_pairs``, ``regulate``, ``baseline`` (means of block means), ``difference`` (mean paired
        difference), ``t``, ``df``, ``p`` (paired t-test, two-sided), ``d_z`` (mean difference
        over its SD), ``d_ci_low``, ``d_ci_high`` (95%, normal approximation), ``glm_psc`` (the
        offline GLM's regulate effect, :func:`glm_test`; not for ``signal``),
        ``feedback_regulate``, ``feedback_baseline`` (mean feedback), ``n_volumes``,
        ``n_missing``, ``median_latency_ms``, ``mean_fd``.

    Notes
    -----
    Pairing neighbouring blocks cancels slow drifts without regressing them out; regressing smooth
    nuisance signals (drift, motion random walks) out of a short run removes the slow variance
    between blocks of one kind and makes an unpaired test of block means liberal (about 9-10% at a
    nominal 5% in our simulations of AR(1) noise with motion), where the paired test is near 5%.
    """
    from theramark.config import defaults

    s = {**defaults("realtime"), **(settings or {})}
    values = pd.to_numeric(log[column], errors="coerce").to_numpy(float)
    ok = (log["status"].astype(str) == "ok").to_numpy() & np.isfinite(values)
    if column != "signal" and ok.any():
        values = 100.0 * (values / values[ok].mean() - 1.0)
    values = np.where(ok, values, np.nan)
    blocks = block_means(log, tr, lag_s, values=values).dropna(subset=["mean"])
    pairs, previous = [], None
    for kind, mean in blocks[["trial_type", "mean"]].itertuples(index=False):
        if kind == BASELINE:
            previous = mean
        elif kind == REGULATE and previous is not None:
            pairs.append((mean, previous))
            previous = None
    a, b = (np.array([p[i] for p in pairs]) for i in (0, 1))
    out: dict[str, Any] = {"n_pairs": len(pairs),
                           "regulate": float(a.mean()) if len(a) else np.nan,
                           "baseline": float(b.mean()) if len(b) else np.nan}
    out["difference"] = float((a - b).mean()) if len(a) else np.nan
    t = df = p = d = low = high = np.nan
    if len(pairs) >= 2:
        diff = a - b
        res = stats.ttest_1samp(diff, 0.0)
        t, p, df = float(res.statistic), float(res.pvalue), float(len(diff) - 1)
        sd = diff.std(ddof=1)
        d = float(diff.mean() / sd) if sd > 0 else np.nan
        se = np.sqrt(1 / len(diff) + d**2 / (2 * len(diff)))
        low, high = d - 1.959964 * se, d + 1.959964 * se
    out.update({"t": t, "df": df, "p": p, "d_z": d, "d_ci_low": low, "d_ci_high": high})
    if glm and column != "signal":
        out["glm_psc"] = glm_test(log, tr, column, s["drift_model"], s["high_pass"], s["drift_order"],
                                  s["motion_regressors"], s["hrf_model"])["glm_psc"]
    feedback = block_means(log, tr, lag_s, "feedback")
    status = log["status"].astype(str)

    def mean_or_nan(series: pd.Series) -> float:
        return float(np.nanmean(series)) if series.notna().any() else np.nan

    out.update({"feedback_regulate": mean_or_nan(feedback.loc[feedback["trial_type"] == REGULATE, "mean"]),
                "feedback_baseline": mean_or_nan(feedback.loc[feedback["trial_type"] == BASELINE, "mean"]),
                "n_volumes": int(len(log)), "n_missing": int((status != "ok").sum()),
                "median_latency_ms": float(np.nanmedian(log["latency_ms"])) if log["latency_ms"].notna().any()
                else np.nan,
                "mean_fd": mean_or_nan(log["fd"])})
    return out


def summarize(log_dir: str | os.PathLike, lag_s: float = 4.0, column: str = "roi") -> dict[str, pd.DataFrame]:
    """Regulation per run and learning across runs; writes ``LOG_DIR/summary/``.

    Parameters
    ----------
    log_dir : path
        A run's ``LOG_DIR`` (with ``feedback.tsv``), or a session folder of run folders.
    lag_s : float
        Haemodynamic lag (s) between a block and the signal it drives.
    column : str
        Logged column measured (``roi`` or ``roi_<name>``; ``signal`` for connectivity feedback).

    Returns
    -------
    dict of DataFrame
        ``runs`` (one row per run: :func:`regulation`'s fields plus ``run``, ``order``) and
        ``learning`` (``n_runs``, ``slope`` per run, ``intercept``, ``t``, ``p``, ``r``).
        Written as ``summary/runs.tsv``, ``summary/learning.tsv`` and ``summary/summary.json``.
    """
    log_dir = Path(log_dir)
    rows = []
    for order, run in enumerate(find_runs(log_dir), start=1):
        log = read_log(run)
        sidecar = run / "feedback.json"
        settings = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        if settings.get("tr") is None:
            raise BadInputError(f"{run}: feedback.json with the run's tr is missing")
        if column not in log:
            raise BadInputError(f"{run / LOG_NAME}: no column {column!r}")
        from theramark.config import defaults

        keep = {k: v for k, v in settings.items() if k in defaults("realtime")}
        rows.append({"run": run.name if run != log_dir else ".", "order": order,
                     **regulation(log, float(settings["tr"]), lag_s, column, keep)})
    runs = pd.DataFrame(rows)
    learning = {"n_runs": len(runs), "slope": np.nan, "intercept": np.nan, "t": np.nan, "p": np.nan,
                "r": np.nan}
    ok = runs[np.isfinite(runs["difference"])]
    if len(ok) >= 2:
        fit = stats.linregress(ok["order"].to_numpy(float), ok["difference"].to_numpy(float))
        learning.update(slope=float(fit.slope), intercept=float(fit.intercept), r=float(fit.rvalue))
        if len(ok) >= 3:
            t = float(fit.slope / fit.stderr) if fit.stderr > 0 else np.nan
            learning.update(t=t, p=float(fit.pvalue))
    learning_table = pd.DataFrame([learning])
    out = log_dir / "summary"
    out.mkdir(parents=True, exist_ok=True)
    from theramark._io import write_json, write_tsv

    write_tsv(out / "runs.tsv", runs)
    write_tsv(out / "learning.tsv", learning_table)
    write_json(out / "summary.json", {"lag_s": lag_s, "column": column,
                                      "test": "paired t-test of block means",
                                      "runs": runs.to_dict("records"), "learning": learning})
    return {"runs": runs, "learning": learning_table}
