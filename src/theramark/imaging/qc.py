"""Quality control of fMRI runs: head motion, DVARS, tSNR, exclusion rules and QC-FC.

The metrics follow the definitions fMRIPrep writes in its confounds table, so a value computed here
and one read from fMRIPrep mean the same thing:

* framewise displacement (Power et al. 2012): sum of absolute backward differences of the three
  translations (mm) and of the three rotations (radians) converted to arc length on a sphere of
  50 mm radius;
* DVARS (Smyser et al. 2010; Power et al. 2012) on data scaled to a median of 1000, and its
  standardized form (Nichols 2013/2017 as in Nipype's ``ComputeDVARS``): DVARS divided by its
  expected value under a lag-1 autoregressive null, ``mean_v(IQR_v / 1.349 · sqrt(2 (1 − ρ_v)))``.

Exclusion rules (the ``[qc]`` table of :data:`theramark.config.SCHEMA`, where each threshold names
its source) follow the "lenient" criteria of Parkes et al. (2018) (mean FD > 0.55 mm; more than
20 % of FD values above 0.2 mm; any FD above 5 mm), plus a data-left rule after censoring (more
than 20 % of volumes censored, or fewer than 4 minutes of data left; cf. Power et al. 2014, who
keep at least 5 minutes, and Satterthwaite et al. 2013).

References
----------
Power JD et al. (2012) NeuroImage 59:2142. Power JD et al. (2014) NeuroImage 84:320.
Parkes L et al. (2018) NeuroImage 171:415. Satterthwaite TD et al. (2013) NeuroImage 64:240.
Nichols TE (2017) arXiv:1704.01469 (standardized DVARS). Ciric R et al. (2017) NeuroImage 154:174.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from theramark.config import defaults
from theramark.errors import BadInputError

__all__ = [
    "dvars",
    "framewise_displacement",
    "qc_fc",
    "qc_fc_distance",
    "run_qc",
    "tsnr",
]

_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def framewise_displacement(
    motion: np.ndarray, radius: float = 50.0, first: float = np.nan
) -> np.ndarray:
    """Framewise displacement of Power et al. (2012).

    Parameters
    ----------
    motion : ndarray, shape (n_volumes, 6)
        ``trans_x, trans_y, trans_z`` in mm and ``rot_x, rot_y, rot_z`` in radians (fMRIPrep's
        order and units).
    radius : float
        Head radius in mm turning rotations into displacements.
    first : float
        Value for the first volume, which has no predecessor (fMRIPrep writes ``n/a``: NaN).

    Returns
    -------
    ndarray, shape (n_volumes,)
        FD in mm.
    """
    m = np.asarray(motion, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 6:
        raise BadInputError(f"motion: expected (n_volumes, 6) parameters, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise BadInputError("motion: the motion parameters hold n/a or infinite values")
    step = np.abs(np.diff(m, axis=0))
    fd = np.empty(m.shape[0])
    fd[0] = first
    fd[1:] = step[:, :3].sum(axis=1) + radius * step[:, 3:].sum(axis=1)
    return fd


def dvars(
    data: np.ndarray,
    intensity_normalization: float = 1000.0,
    variance_tol: float = 1e-7,
    block_size: int = 32768,
) -> pd.DataFrame:
    """DVARS and standardized DVARS, as fMRIPrep (Nipype ``ComputeDVARS``) computes them.

    Parameters
    ----------
    data : ndarray, shape (n_volumes, n_voxels)
        Masked BOLD data, raw intensities (not z-scored).
    intensity_normalization : float
        Scale the data so that the median of all values is this (0: no scaling).
    variance_tol : float
        Voxels whose robust SD (IQR / 1.349) is not above this are left out.
    block_size : int
        Voxels processed at a time.

    Returns
    -------
    DataFrame, shape (n_volumes, 2)
        Columns ``dvars`` (root mean square over voxels of the backward temporal difference) and
        ``std_dvars`` (``dvars`` over its expectation under an AR(1) null); NaN in the first row,
        which has no predecessor.
    """
    x = np.asarray(data, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise BadInputError(
            f"dvars: expected (n_volumes ≥ 3, n_voxels) masked data, got shape {x.shape}"
        )
    scale = np.float32(intensity_normalization / np.median(x)) if intensity_normalization else None
    # Voxel blocks bound the float64 work space (300 volumes × 200k voxels stays < 0.5 GB).
    n_volumes = x.shape[0]
    sum_sq_diff = np.zeros(n_volumes - 1)
    expected_sum = 0.0
    n_good = 0
    for start in range(0, x.shape[1], block_size):
        block = x[:, start : start + block_size]
        if scale is not None:
            block = block * scale
        # Robust SD with FSL's "lower" percentiles, as Nipype.
        q75, q25 = np.percentile(block, [75, 25], axis=0, method="lower")
        robust_sd = (q75 - q25) / 1.349
        good = robust_sd > variance_tol
        if not good.any():
            continue
        block = block[:, good].astype(np.float64)
        centered = block - block.mean(axis=0)
        # Yule-Walker lag-1 autocorrelation (biased autocovariances).
        ar1 = np.einsum("tv,tv->v", centered[1:], centered[:-1]) / np.einsum(
            "tv,tv->v", centered, centered
        )
        expected_sum += float((np.sqrt(2.0 * (1.0 - ar1)) * robust_sd[good]).sum())
        n_good += int(good.sum())
        diff = np.diff(block, axis=0)
        sum_sq_diff += np.einsum("tv,tv->t", diff, diff)
    if n_good == 0:
        raise BadInputError("dvars: every voxel is constant over time")
    raw = np.sqrt(sum_sq_diff / n_good)
    expected = expected_sum / n_good
    out = pd.DataFrame({"dvars": np.r_[np.nan, raw], "std_dvars": np.r_[np.nan, raw / expected]})
    return out


def tsnr(data: np.ndarray, axis: int = 0) -> np.ndarray:
    """Temporal signal-to-noise ratio: mean over time / SD over time (ddof=0, as Nipype's TSNR).

    Parameters
    ----------
    data : ndarray
        Raw (not z-scored, not demeaned) intensities with time along ``axis``.
    axis : int
        Time axis.

    Returns
    -------
    ndarray
        tSNR per voxel; NaN where the SD is 0.
    """
    x = np.asarray(data, dtype=np.float64)
    mean = x.mean(axis=axis)
    sd = x.std(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), np.nan)


def run_qc(
    confounds_path: str | os.PathLike,
    bold_data: np.ndarray | None,
    sample_mask: np.ndarray | None,
    rules: Mapping[str, float | None] | None = None,
    *,
    t_r: float | None = None,
) -> dict[str, Any]:
    """QC metrics of one run and whether it is excluded.

    Parameters
    ----------
    confounds_path : path
        fMRIPrep ``*_desc-confounds_timeseries.tsv`` of the run (FD from its
        ``framewise_displacement`` column, or from the motion parameters when absent).
    bold_data : ndarray, shape (n_volumes, n_voxels), or None
        Masked preprocessed BOLD (raw intensities) for DVARS and tSNR. ``None``: DVARS from the
        confounds' ``dvars`` column and tSNR NaN.
    sample_mask : ndarray of int or bool, or None
        Volumes kept after censoring (e.g. from :func:`theramark.imaging.denoise.nuisance_design`);
        ``None``: all kept.
    rules : mapping, optional
        Overrides of the ``[qc]`` defaults (:func:`theramark.config.defaults`); a rule set to
        ``None`` is not applied.
    t_r : float, optional
        Repetition time (s), for the minutes-of-data rule; without it that rule is skipped.

    Returns
    -------
    dict
        ``mean_fd, max_fd, percent_fd_over_threshold, percent_censored, mean_dvars, tsnr,
        n_volumes, n_volumes_kept, minutes_kept, excluded, exclusion_reason`` (see
        docs/contracts.md). FD statistics use every volume with an FD (not only the kept ones:
        they describe the run); ``mean_dvars`` is the mean of non-standardized DVARS
        (intensity-normalized to 1000); ``tsnr`` is the median voxel tSNR over kept volumes.
        ``exclusion_reason`` lists every violated rule, ``""`` when none.
    """
    from theramark.imaging.denoise import read_confounds

    path = Path(confounds_path)
    default_rules = defaults("qc")
    unknown = set(rules or {}) - set(default_rules)
    if unknown:
        raise BadInputError(
            f"QC rules: unknown rule(s) {sorted(unknown)}; expected among {sorted(default_rules)}"
        )
    rule = {**default_rules, **(rules or {})}
    table = read_confounds(path)
    n_volumes = len(table)
    if "framewise_displacement" in table:
        fd = table["framewise_displacement"].to_numpy(dtype=float)
    else:
        missing = [c for c in _MOTION if c not in table]
        if missing:
            raise BadInputError(
                f"{path}: neither framewise_displacement nor the motion parameters {missing}"
            )
        fd = framewise_displacement(table[list(_MOTION)].to_numpy(dtype=float))
    fd_values = fd[np.isfinite(fd)]

    kept = np.ones(n_volumes, dtype=bool)
    if sample_mask is not None:
        mask = np.asarray(sample_mask)
        if mask.dtype == bool:
            if mask.shape != (n_volumes,):
                raise BadInputError(
                    f"{path}: sample_mask has {mask.size} entries for {n_volumes} volumes"
                )
            kept = mask.copy()
        else:
            if mask.size and (mask.min() < 0 or mask.max() >= n_volumes):
                raise BadInputError(
                    f"{path}: sample_mask indices outside [0, {n_volumes - 1}]"
                )
            kept = np.zeros(n_volumes, dtype=bool)
            kept[mask.astype(int)] = True
    n_kept = int(kept.sum())

    if bold_data is not None:
        bold = np.asarray(bold_data)
        if bold.ndim != 2 or bold.shape[0] != n_volumes:
            raise BadInputError(
                f"{path}: the confounds table has {n_volumes} rows but the BOLD data has shape "
                f"{bold.shape} (expected ({n_volumes}, n_voxels))"
            )
        mean_dvars = float(np.nanmean(dvars(bold)["dvars"].to_numpy()))
        tsnr_value = float(np.nanmedian(tsnr(bold[kept]))) if n_kept > 1 else float("nan")
    else:
        mean_dvars = (
            float(np.nanmean(table["dvars"].to_numpy(dtype=float)))
            if "dvars" in table
            else float("nan")
        )
        tsnr_value = float("nan")

    threshold = rule["fd_threshold"] if rule["fd_threshold"] is not None else 0.2
    metrics: dict[str, Any] = {
        "mean_fd": float(fd_values.mean()) if fd_values.size else float("nan"),
        "max_fd": float(fd_values.max()) if fd_values.size else float("nan"),
        "percent_fd_over_threshold": (
            float(100.0 * (fd_values > threshold).mean()) if fd_values.size else float("nan")
        ),
        "percent_censored": float(100.0 * (1.0 - n_kept / n_volumes)),
        "mean_dvars": mean_dvars,
        "tsnr": tsnr_value,
        "n_volumes": int(n_volumes),
        "n_volumes_kept": n_kept,
        "minutes_kept": float(n_kept * t_r / 60.0) if t_r else float("nan"),
    }

    reasons = []
    checks = (
        ("max_mean_fd", "mean_fd", ">", "mm"),
        ("max_fd", "max_fd", ">", "mm"),
        ("max_percent_fd_over_threshold", "percent_fd_over_threshold", ">", "%"),
        ("max_percent_censored", "percent_censored", ">", "%"),
        ("min_minutes_kept", "minutes_kept", "<", "min"),
    )
    for key, metric, op, unit in checks:
        limit = rule[key]
        value = metrics[metric]
        if limit is None:
            continue
        if not np.isfinite(value):
            if key == "min_minutes_kept":
                warnings.warn(
                    f"{path}: no repetition time given; the min_minutes_kept rule is skipped",
                    stacklevel=2,
                )
            continue
        if (op == ">" and value > limit) or (op == "<" and value < limit):
            label = f"{metric} {value:.3g} {op} {limit:g} {unit}"
            if key == "max_percent_fd_over_threshold":
                label = f"{value:.3g}% of FD > {threshold:g} mm {op} {limit:g}%"
            reasons.append(label)
    metrics["excluded"] = bool(reasons)
    metrics["exclusion_reason"] = "; ".join(reasons)
    return metrics


def qc_fc(edge_values: np.ndarray | pd.DataFrame, mean_fd: np.ndarray) -> pd.DataFrame:
    """QC-FC: correlation of each edge's FC with mean FD across participants (Power 2012).

    Parameters
    ----------
    edge_values : ndarray or DataFrame, shape (n_participants, n_edges)
        One row per participant (DataFrame columns name the edges).
    mean_fd : ndarray, shape (n_participants,)

    Returns
    -------
    DataFrame
        One row per edge: ``edge, r, p`` (two-sided test of Pearson r, n − 2 df).
    """
    names = (
        list(edge_values.columns)
        if isinstance(edge_values, pd.DataFrame)
        else [f"edge_{i}" for i in range(np.shape(edge_values)[1])]
    )
    y = np.asarray(edge_values, dtype=np.float64)
    fd = np.asarray(mean_fd, dtype=np.float64).ravel()
    if y.ndim != 2 or y.shape[0] != fd.size:
        raise BadInputError(
            f"qc_fc: edge values {y.shape} and mean FD ({fd.size},) must have one row per "
            "participant"
        )
    n = fd.size
    if n < 4:
        raise BadInputError(f"qc_fc: {n} participants; at least 4 are needed")
    if not (np.isfinite(y).all() and np.isfinite(fd).all()):
        raise BadInputError("qc_fc: edge values and mean FD must be finite")
    fdc = fd - fd.mean()
    yc = y - y.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (fdc @ yc) / np.sqrt((fdc**2).sum() * (yc**2).sum(axis=0))
    r = np.clip(r, -1.0, 1.0)
    df = n - 2
    with np.errstate(divide="ignore"):
        t = r * np.sqrt(df / np.maximum(1.0 - r**2, 1e-300))
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return pd.DataFrame({"edge": names, "r": r, "p": p})


def qc_fc_distance(qc_fc_r: np.ndarray, distance: np.ndarray) -> dict[str, float]:
    """Distance dependence of motion artefact: Spearman rho of QC-FC r with edge length.

    Parameters
    ----------
    qc_fc_r : ndarray, shape (n_edges,)
        QC-FC correlations (from :func:`qc_fc`).
    distance : ndarray, shape (n_edges,)
        Euclidean distance between the two ROI centres (mm), same edge order.

    Returns
    -------
    dict
        ``rho`` and ``p`` (Parkes et al. 2018: residual motion shows as negative rho).
    """
    r = np.asarray(qc_fc_r, dtype=float).ravel()
    d = np.asarray(distance, dtype=float).ravel()
    if r.shape != d.shape or r.size < 3:
        raise BadInputError("qc_fc_distance: one distance per edge (at least 3 edges) is needed")
    result = stats.spearmanr(r, d)
    return {"rho": float(result.statistic), "p": float(result.pvalue)}
