"""Task activation: first-level GLM on ROI time series and voxel maps, multi-run fixed effects.

The model is nilearn's first-level GLM (``FirstLevelModel`` semantics, same design matrix, same
``run_glm`` / ``compute_contrast`` machinery), applied to arrays the participant pipeline already
holds in memory instead of re-reading the image:

- the design comes from ``events.tsv`` with frame times shifted by the slice-timing reference found
  in the run's metadata (:func:`slice_time_reference`), a cosine drift model and the nuisance
  regressors of the chosen denoising strategy; censored volumes are dropped from data and design
  (``sample_masks`` in nilearn);
- ROI statistics fit the model to each region's mean time series (the MarsBaR convention: one
  noise model per region) and report the contrast ``effect`` (signal units), ``psc`` (the same
  effect in percent of the region's mean signal, identical to nilearn's ``signal_scaling=0``), its
  ``variance`` and ``z``;
- voxel maps (effect and z per contrast) are fitted in the mask only.

Runs of one participant × session × task are combined by precision-weighted fixed effects
(:func:`fixed_effects`, as :func:`nilearn.glm.compute_fixed_effects`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from theramark._io import read_tsv
from theramark.errors import BadInputError

#: Contrasts used when the study config names none for a task (Knutson et al. 2001 MID task).
DEFAULT_CONTRASTS: dict[str, list[str]] = {
    "mid": [
        "gain_anticipation - neutral_anticipation",
        "loss_anticipation - neutral_anticipation",
        "gain_outcome - neutral_outcome",
    ],
}


def contrast_name(expression: str) -> str:
    """The name a contrast takes in tables: the expression without spaces (``a-b``)."""
    return re.sub(r"\s+", "", expression)


def contrast_label(expression: str) -> str:
    """A BIDS-safe ``desc-`` label for a contrast (``gainAnticipationMinusNeutralAnticipation``)."""
    text = contrast_name(expression).replace("-", "_minus_").replace("+", "_plus_")
    text = text.replace("*", "_times_")
    words = [w for w in re.split(r"[^0-9A-Za-z]+", text) if w]
    return words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else "c"


def slice_time_reference(metadata: Mapping[str, Any], t_r: float) -> tuple[float, str]:
    """Slice-timing reference as a fraction of the TR, and where it came from.

    The order of precedence:

    1. ``StartTime`` (s) of the fMRIPrep BOLD sidecar: fMRIPrep corrected slice timing to this
       time, so the reference is ``StartTime / TR`` (what ``nilearn.glm.first_level_from_bids``
       infers);
    2. ``SliceTimingRef`` (fraction of the TR) if a pipeline wrote it;
    3. ``SliceTiming`` (s) without correction: each slice keeps its own time, and the middle of the
       acquisition (``(min + max) / 2 / TR``) is the least-biased single reference;
    4. none of these: 0 (the volume's acquisition start), reported as an assumption.
    """
    if "StartTime" in metadata and metadata["StartTime"] is not None:
        start = float(metadata["StartTime"])
        if not 0 <= start < t_r:
            raise BadInputError(f"StartTime={start} s must lie in [0, TR={t_r} s)")
        return start / t_r, "StartTime"
    if "SliceTimingRef" in metadata and metadata["SliceTimingRef"] is not None:
        ref = float(metadata["SliceTimingRef"])
        if not 0 <= ref <= 1:
            raise BadInputError(f"SliceTimingRef={ref} must be a fraction of the TR in [0, 1]")
        return ref, "SliceTimingRef"
    timing = metadata.get("SliceTiming")
    if timing:
        times = np.asarray(timing, dtype=float)
        return float((times.min() + times.max()) / 2 / t_r), "SliceTiming (middle of acquisition)"
    return 0.0, "assumed 0 (no StartTime, SliceTimingRef or SliceTiming in the metadata)"


def read_events(path: str | os.PathLike, n_volumes: int, t_r: float) -> pd.DataFrame:
    """A BIDS ``events.tsv`` checked against its run.

    Raises
    ------
    BadInputError
        Missing ``onset``/``duration``/``trial_type`` columns, missing or negative values, or onsets
        at or beyond the end of the run (``n_volumes × t_r`` s); the message names the file and rows.
    """
    path = Path(path)
    table = read_tsv(path)
    missing = [c for c in ("onset", "duration", "trial_type") if c not in table]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}")
    problems = []
    for column in ("onset", "duration"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            problems.append(f"{column} is missing or not a number in row(s) {(bad + 2).tolist()[:10]}")
        table[column] = values
    if table["trial_type"].isna().any():
        rows = (np.flatnonzero(table["trial_type"].isna().to_numpy()) + 2).tolist()
        problems.append(f"trial_type is missing in row(s) {rows[:10]}")
    if problems:
        raise BadInputError(f"{path}: invalid events", problems)
    duration = n_volumes * t_r
    late = np.flatnonzero((table["onset"] >= duration).to_numpy())
    if late.size:
        raise BadInputError(
            f"{path}: {late.size} event(s) start at or after the end of the run "
            f"({n_volumes} volumes × {t_r} s = {duration:g} s), first at onset "
            f"{table['onset'].iloc[late[0]]:g} s (row {late[0] + 2})"
        )
    if (table["duration"] < 0).any() or (table["onset"] < -t_r * n_volumes).any():
        raise BadInputError(f"{path}: negative durations")
    table["trial_type"] = table["trial_type"].astype(str)
    return table[["onset", "duration", "trial_type"] + [c for c in table if c not in
                                                        ("onset", "duration", "trial_type")]]


def design_matrix(
    events: pd.DataFrame, n_volumes: int, t_r: float, slice_time_ref: float = 0.0,
    confounds: pd.DataFrame | None = None, hrf_model: str = "glover",
    drift_model: str | None = "cosine", high_pass: float = 0.01,
) -> pd.DataFrame:
    """The first-level design matrix of one run (all volumes), as ``FirstLevelModel`` builds it.

    Parameters
    ----------
    events : DataFrame
        ``onset, duration, trial_type`` (s).
    n_volumes : int
    t_r : float
        Repetition time (s).
    slice_time_ref : float
        Fraction of the TR at which the (slice-time-corrected) volume was sampled.
    confounds : DataFrame, optional
        Nuisance regressors (n_volumes rows), added as columns.
    hrf_model, drift_model, high_pass
        As in :func:`nilearn.glm.first_level.make_first_level_design_matrix` (high_pass in Hz).
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    start = slice_time_ref * t_r
    frame_times = np.linspace(start, (n_volumes - 1 + slice_time_ref) * t_r, n_volumes)
    add_regs, names = None, None
    if confounds is not None and confounds.shape[1]:
        if len(confounds) != n_volumes:
            raise BadInputError(
                f"{confounds.attrs.get('source', 'confounds')}: {len(confounds)} rows, "
                f"expected {n_volumes} (one per volume)"
            )
        add_regs, names = confounds.to_numpy(dtype=float), list(confounds.columns)
    return make_first_level_design_matrix(
        frame_times, events[["onset", "duration", "trial_type"]], hrf_model=hrf_model,
        drift_model=drift_model, high_pass=high_pass, add_regs=add_regs, add_reg_names=names,
    )


def contrast_vectors(expressions: Sequence[str], columns: Sequence[str],
                     source: str = "events") -> dict[str, np.ndarray]:
    """Contrast weights over the design columns for each expression (``"a - b"``).

    Raises
    ------
    BadInputError
        An expression names a condition absent from the design (the message lists the
        conditions present in ``source``).
    """
    from nilearn.glm.contrasts import expression_to_contrast_vector

    vectors = {}
    for expression in expressions:
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
        unknown = sorted(words - set(columns))
        if unknown:
            raise BadInputError(
                f"{source}: contrast '{expression}' names condition(s) {', '.join(unknown)} that "
                f"the events do not have (conditions: "
                f"{', '.join(c for c in columns if not c.startswith(('drift_', 'constant')))})"
            )
        vectors[contrast_name(expression)] = np.asarray(
            expression_to_contrast_vector(expression, list(columns)), dtype=float)
    return vectors


def _fit(y: np.ndarray, design: np.ndarray, noise_model: str):
    from nilearn.glm.first_level import run_glm

    return run_glm(y, design, noise_model=noise_model, bins=100, n_jobs=1, random_state=0)


def fit_contrasts(
    signals: np.ndarray, design: pd.DataFrame, contrasts: Mapping[str, np.ndarray],
    noise_model: str = "ar1",
) -> dict[str, dict[str, np.ndarray]]:
    """Fit the GLM to each column of ``signals`` and evaluate the contrasts.

    Parameters
    ----------
    signals : ndarray, shape (n_volumes, n_features)
        Kept volumes only (censoring applied to rows of signals and design alike).
    design : DataFrame, shape (n_volumes, n_regressors)
    contrasts : mapping of name to weight vector (n_regressors,)
    noise_model : {"ar1", "ols", "arN"}

    Returns
    -------
    dict
        ``{name: {"effect", "variance", "z", "t", "dof"}}`` arrays of shape (n_features,);
        ``dof`` is the residual degrees of freedom of the fit (kept volumes − design rank).
    """
    from nilearn.glm.contrasts import compute_contrast

    if len(signals) != len(design):
        raise ValueError(f"signals have {len(signals)} volumes, design {len(design)}")
    labels, results = _fit(np.asarray(signals, dtype=np.float64), design.to_numpy(float),
                           noise_model)
    out = {}
    for name, vector in contrasts.items():
        contrast = compute_contrast(labels, results, vector, stat_type="t")
        effect = np.ravel(contrast.effect_size())
        out[name] = {
            "effect": effect,
            "variance": np.ravel(contrast.effect_variance()),
            "z": np.ravel(contrast.z_score()),
            "t": np.ravel(contrast.stat()),
            "dof": np.full(effect.shape, float(contrast.dof)),
        }
    return out


def roi_statistics(
    roi_signals: np.ndarray, roi_names: Sequence[str], design: pd.DataFrame,
    contrasts: Mapping[str, np.ndarray], noise_model: str = "ar1",
) -> pd.DataFrame:
    """Contrast statistics of every ROI's mean time series.

    Parameters
    ----------
    roi_signals : ndarray, shape (n_volumes, n_rois)
        Raw (not standardized) ROI mean signals, kept volumes only.
    roi_names : sequence of str
    design : DataFrame (n_volumes, n_regressors)
    contrasts : mapping of name to weight vector

    Returns
    -------
    DataFrame
        ``roi, contrast, effect, psc, variance, z, dof`` (one row per ROI × contrast). ``psc`` is
        ``100 × effect / mean signal``: the contrast in percent of the region's mean, per unit of
        the HRF-convolved regressor (for a block, the plateau response).
    """
    signals = np.asarray(roi_signals, dtype=np.float64)
    mean = signals.mean(axis=0)
    if np.any(np.abs(mean) < 1e-12):
        zero = [roi_names[i] for i in np.flatnonzero(np.abs(mean) < 1e-12)]
        raise BadInputError(f"ROI(s) {', '.join(zero[:10])} have a zero mean signal; "
                            "percent signal change needs unscaled BOLD")
    fitted = fit_contrasts(signals, design, contrasts, noise_model)
    frames = [
        pd.DataFrame({"roi": list(roi_names), "contrast": name, "effect": stats["effect"],
                      "psc": 100.0 * stats["effect"] / mean, "variance": stats["variance"],
                      "z": stats["z"], "dof": stats["dof"]})
        for name, stats in fitted.items()
    ]
    return pd.concat(frames, ignore_index=True)


def t_to_z(t: np.ndarray, dof: float | np.ndarray) -> np.ndarray:
    """z with the same tail probability as a Student t (nilearn's ``Contrast.z_score``).

    Each tail is converted from its own side (``sf`` for t ≥ 0, ``cdf`` for t < 0), so far-tail
    values keep their precision instead of rounding to ±inf through ``1 − p``.
    """
    from scipy import stats

    t = np.asarray(t, dtype=np.float64)
    upper = stats.norm.isf(stats.t.sf(t, dof))
    lower = -stats.norm.isf(stats.t.cdf(t, dof))
    return np.where(t >= 0, upper, lower)


def fixed_effects(effects: np.ndarray, variances: np.ndarray,
                  dofs: Sequence[float] | np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-weighted fixed-effects combination over runs (axis 0).

    Parameters
    ----------
    effects, variances : ndarray, shape (n_runs, ...)
    dofs : array of float, shape (n_runs,) or (n_runs, ...), optional
        Residual degrees of freedom of each run's fit (kept volumes − design rank), one per run
        or one per run and feature. The
        combined ``effect / √variance`` is a t with ``Σ dofs`` degrees of freedom, converted to
        z through its tail probability, as :func:`nilearn.glm.compute_fixed_effects` does. Without
        them, z is ``effect / √variance`` itself (the large-sample normal approximation, which
        overstates |z| in the far tail of short runs).

    Returns
    -------
    effect, variance, z : ndarray, shape (...)
        ``effect = Σ(e/v) / Σ(1/v)``, ``variance = 1 / Σ(1/v)`` (as
        :func:`nilearn.glm.compute_fixed_effects` with ``precision_weighted=True``) and z.
    """
    effects = np.asarray(effects, dtype=np.float64)
    variances = np.asarray(variances, dtype=np.float64)
    if effects.shape != variances.shape:
        raise ValueError("effects and variances must have the same shape")
    if np.any(variances <= 0):
        raise BadInputError("fixed effects: every run's effect variance must be positive")
    precision = 1.0 / variances
    variance = 1.0 / precision.sum(axis=0)
    effect = (effects * precision).sum(axis=0) * variance
    t = effect / np.sqrt(variance)
    if dofs is None:
        return effect, variance, t
    dofs = np.asarray(dofs, dtype=np.float64)
    if dofs.shape not in ((effects.shape[0],), effects.shape) or np.any(~(dofs > 0)):
        raise BadInputError(f"fixed effects: expected positive degrees of freedom per run "
                            f"({effects.shape[0]}), got shape {dofs.shape}: {dofs.tolist()}")
    return effect, variance, t_to_z(t, dofs.sum(axis=0))


def combine_runs(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Fixed-effects combination of several runs' ROI statistics (same ROIs and contrasts).

    ``psc`` is combined with the same precision weights as ``effect``. With a ``dof`` column in
    every table (:func:`roi_statistics` writes one) z uses the summed degrees of freedom (see
    :func:`fixed_effects`) and the result carries the summed ``dof``; tables without it (written
    by earlier versions) get z = effect / √variance.
    """
    keyed = [t.set_index(["roi", "contrast"]).sort_index() for t in tables]
    index = keyed[0].index
    for table in keyed[1:]:
        if not table.index.equals(index):
            raise BadInputError("runs to combine have different ROIs or contrasts")
    effects = np.stack([t["effect"].to_numpy() for t in keyed])
    variances = np.stack([t["variance"].to_numpy() for t in keyed])
    # one dof per run and row: each ROI × contrast has its own fit in every run
    with_dof = all("dof" in t.columns for t in keyed)
    dofs = np.stack([t["dof"].to_numpy(dtype=float) for t in keyed]) if with_dof else None
    effect, variance, z = fixed_effects(effects, variances, dofs)
    weights = (1.0 / variances) * variance
    psc = (np.stack([t["psc"].to_numpy() for t in keyed]) * weights).sum(axis=0)
    combined = pd.DataFrame({"roi": index.get_level_values(0),
                             "contrast": index.get_level_values(1),
                             "effect": effect, "psc": psc, "variance": variance, "z": z})
    if with_dof:
        combined["dof"] = dofs.sum(axis=0)
    return combined


def task_contrasts(config_contrasts: Mapping[str, Sequence[str]], task: str) -> list[str]:
    """Contrast expressions for ``task``: the study config's, else :data:`DEFAULT_CONTRASTS`."""
    if task in config_contrasts:
        value = config_contrasts[task]
        return [value] if isinstance(value, str) else list(value)
    return list(DEFAULT_CONTRASTS.get(task, []))
