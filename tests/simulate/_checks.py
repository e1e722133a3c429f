"""Direct (generative-level) measurements used by the simulator's effect tests.

They measure planted effects the simplest way, independently of theramark.imaging: mean signal in
spheres at the literature coordinates, Pearson correlation, windowed correlation, least squares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.simulate.bold import simulate_run, task_regressors
from theramark.simulate.events import TRIAL_TYPES


def sphere_means(space, data: np.ndarray, names: list[str]) -> np.ndarray:
    """Mean of ``data`` (T, V) over the in-mask voxels within each ROI's radius, (T, len(names))."""
    rois = space.rois.set_index("name")
    columns = []
    for name in names:
        centre = rois.loc[name, ["x", "y", "z"]].to_numpy(float)
        inside = ((space.coordinates - centre) ** 2).sum(axis=1) <= rois.loc[name, "radius_mm"] ** 2
        columns.append(data[:, inside].mean(axis=1))
    return np.column_stack(columns)


def clean(series: np.ndarray, run) -> np.ndarray:
    """Drop non-steady-state volumes; regress out the global mean and motion; z-score."""
    keep = slice(run.n_non_steady, None)
    x = series[keep]
    nuisance = np.column_stack([np.ones(len(x)), run.data[keep].mean(axis=1),
                                run.motion.parameters[keep]])
    x = x - nuisance @ np.linalg.lstsq(nuisance, x, rcond=None)[0]
    return (x - x.mean(0)) / x.std(0)


def edge_stats(space, specs, pairs, window: int = 30, step: int = 5) -> pd.DataFrame:
    """Static Fisher z and SD of windowed Fisher z of ROI pairs for every rest spec."""
    names = sorted({n for pair in pairs for n in pair})
    rows = []
    for spec in specs:
        run = simulate_run(space, spec)
        ts = clean(sphere_means(space, run.data, names), run)
        for a, b in pairs:
            x, y = ts[:, names.index(a)], ts[:, names.index(b)]
            starts = range(0, len(x) - window + 1, step)
            windowed = [np.corrcoef(x[s:s + window], y[s:s + window])[0, 1] for s in starts]
            rows.append({"participant_id": spec.participant_id, "group": spec.group,
                         "session": spec.session, "edge": f"{a}__{b}",
                         "fc": np.arctanh(np.corrcoef(x, y)[0, 1]),
                         "dfc": np.std(np.arctanh(windowed))})
    return pd.DataFrame(rows)


def gain_contrast(space, specs, roi: str = "nacc_L") -> pd.DataFrame:
    """Gain minus neutral anticipation effect (percent signal) in a sphere, per MID spec."""
    rows = []
    for spec in specs:
        run = simulate_run(space, spec)
        series = sphere_means(space, run.data, [roi])[:, 0]
        keep = slice(run.n_non_steady, None)
        regressors = task_regressors(run.events, spec.n_volumes,
                                     spec.extra.get("reference_time", 0.0))
        design = np.column_stack([regressors, np.ones(spec.n_volumes),
                                  np.arange(spec.n_volumes), run.motion.parameters])[keep]
        beta = np.linalg.lstsq(design, series[keep], rcond=None)[0]
        psc = 100.0 * beta / series[keep].mean()
        rows.append({"participant_id": spec.participant_id, "group": spec.group,
                     "session": spec.session,
                     "contrast": psc[TRIAL_TYPES.index("gain_anticipation")]
                     - psc[TRIAL_TYPES.index("neutral_anticipation")]})
    return pd.DataFrame(rows)


EDGES = [("amygdala_L", "dacc"), ("dlpfc_L", "precuneus"), ("nacc_L", "sgacc")]
ROIS = sorted({n for pair in EDGES for n in pair})


def edge_row(ts: np.ndarray, names: list[str], window: int = 30, step: int = 5) -> dict:
    """Static Fisher z and SD of windowed Fisher z of :data:`EDGES` from cleaned series (T, R)."""
    out = {}
    for a, b in EDGES:
        x, y = ts[:, names.index(a)], ts[:, names.index(b)]
        starts = range(0, len(x) - window + 1, step)
        windowed = [np.corrcoef(x[s:s + window], y[s:s + window])[0, 1] for s in starts]
        out[f"fc:{a}__{b}"] = np.arctanh(np.corrcoef(x, y)[0, 1])
        out[f"dfc:{a}__{b}"] = np.std(np.arctanh(windowed))
    return out


def clean_with(series: np.ndarray, nuisance: np.ndarray, n_skip: int) -> np.ndarray:
    """Drop ``n_skip`` volumes, regress out ``nuisance`` (T, k) and a constant, z-score."""
    x = series[n_skip:]
    design = np.column_stack([np.ones(len(x)), nuisance[n_skip:]])
    x = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    return (x - x.mean(0)) / x.std(0)


def gain_minus_neutral(series: np.ndarray, regressors: np.ndarray, nuisance: np.ndarray,
                       n_skip: int) -> float:
    """Gain minus neutral anticipation (percent signal) by least squares on one ROI series."""
    n = len(series)
    design = np.column_stack([regressors, np.ones(n), np.arange(n), nuisance])[n_skip:]
    beta = np.linalg.lstsq(design, series[n_skip:], rcond=None)[0]
    psc = 100.0 * beta / series[n_skip:].mean()
    return psc[TRIAL_TYPES.index("gain_anticipation")] - psc[TRIAL_TYPES.index("neutral_anticipation")]


def planted_statistics(edges: pd.DataFrame, gains: pd.DataFrame,
                       truth: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """(effect, two-sided p) of each planted imaging effect measured directly.

    ``edges``: participant_id, group, session + fc:/dfc: columns (rest runs, pre and post);
    ``gains``: participant_id, group, session, contrast (MID runs, pre and post).
    """
    from scipy import stats

    truth = truth.set_index("participant_id")
    result = {}

    def change(table, column):
        wide = table.pivot_table(index="participant_id", columns="session", values=column)
        return (wide["post"] - wide["pre"]).rename(column)

    groups = truth["group"]
    amyg = "fc:amygdala_L__dacc"
    post = edges[edges["session"] == "post"].set_index("participant_id")[amyg]
    result["amygdala_acc_post_cbt_vs_waitlist"] = _two_groups(post, groups, stats)
    amyg_change = change(edges, amyg)
    patients = amyg_change.index[groups[amyg_change.index] != "HC"]
    r, p = stats.pearsonr(amyg_change[patients], truth.loc[patients, "improvement_post"])
    result["amygdala_acc_change_tracks_improvement"] = (r, p)
    result["dfc_change_cbt_vs_waitlist"] = _two_groups(change(edges, "dfc:dlpfc_L__precuneus"),
                                                       groups, stats)
    result["nacc_gain_change_cbt_vs_waitlist"] = _two_groups(change(gains, "contrast"), groups,
                                                             stats)
    pre = edges[edges["session"] == "pre"].set_index("participant_id")["fc:nacc_L__sgacc"]
    pre = pre[groups[pre.index] != "HC"]
    result["sgacc_nacc_pre_tracks_propensity"] = stats.pearsonr(pre,
                                                                truth.loc[pre.index, "propensity_z"])
    return {k: (float(v[0]), float(v[1])) for k, v in result.items()}


def _two_groups(values: pd.Series, groups: pd.Series, stats) -> tuple[float, float]:
    cbt = values[groups[values.index] == "CBT"]
    waitlist = values[groups[values.index] == "waitlist"]
    return cbt.mean() - waitlist.mean(), stats.ttest_ind(cbt, waitlist).pvalue
