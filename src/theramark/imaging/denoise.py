"""Nuisance regression of fMRI signals from fMRIPrep confounds.

Two steps, kept apart so that each can be checked against nilearn:

* :func:`nuisance_design` turns a ``*_desc-confounds_timeseries.tsv`` (and its ``.json``) into a
  nuisance design and a sample mask, with the semantics of
  :func:`nilearn.interfaces.fmriprep.load_confounds_strategy` (same presets, same columns, same
  sample mask, same fill of the first-row ``n/a`` of derivatives, same demeaning).
* :func:`clean` removes that design from (n_volumes, n_features) signals with the semantics of
  :func:`nilearn.signal.clean` (detrend, Butterworth or cosine filtering of signals *and* confounds,
  censoring, projection on the orthogonal complement of the confounds, standardization), but with a
  single thin QR of the design instead of an (n × n) projector and with voxel blocks processed in
  float64 so that 300 × 200,000 float32 runs in bounded memory.

Censored volumes never enter a statistic: they are dropped from the output. When a Butterworth
filter is requested together with censoring, censored volumes are first replaced by a cubic-spline
interpolation of the kept ones so that the filter is not driven by motion spikes (Power et al. 2014,
the approach of nilearn ≥ 0.9); leading and trailing censored volumes are not extrapolated but cut.
nilearn 0.14 computes the interpolation with ``~sample_mask`` on an *integer* index array, which
interpolates the mirror-image volumes; censored volumes whose mirror is also censored therefore keep
their raw values there. This module interpolates every censored volume, so it agrees with nilearn in
every case nilearn gets right (tests cover them) and differs where nilearn is wrong.

A confound column that is a constant or a linear trend is dropped when detrending (it is in the
detrending already). nilearn keeps the rounding residue of such a column, standardizes it into a
random regressor and so removes a random direction from the data: its output then depends on
rounding at the 1e-6 level (a memory-order change of the design moves it by that much).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import linalg

from theramark._io import read_tsv
from theramark.errors import BadInputError

__all__ = [
    "PRESETS",
    "clean",
    "nuisance_design",
    "read_confounds",
]

#: Denoising presets of :func:`nilearn.interfaces.fmriprep.load_confounds_strategy` (nilearn 0.14).
PRESETS: dict[str, dict] = {
    "simple": {
        "strategy": ("high_pass", "motion", "wm_csf"),
        "motion": "full",
        "wm_csf": "basic",
    },
    "scrubbing": {
        "strategy": ("high_pass", "motion", "wm_csf", "scrub"),
        "motion": "full",
        "wm_csf": "full",
        "scrub": 5,
        "fd_threshold": 0.5,
        "std_dvars_threshold": 1.5,
    },
    "compcor": {
        "strategy": ("high_pass", "motion", "compcor"),
        "motion": "full",
        "compcor": "anat_combined",
        "n_compcor": "all",
    },
    "ica_aroma": {
        "strategy": ("high_pass", "wm_csf", "ica_aroma"),
        "wm_csf": "basic",
        "ica_aroma": "full",
    },
}

_COMPONENTS = ("motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma", "scrub")
_MODELS = ("basic", "power2", "derivatives", "full")
# (prefix, mask) pairs in nilearn's order; anatomical components are picked by the sidecar's Mask,
# fMRIPrep ≥ 21 also writes separated masks as w_comp_cor (WM) and c_comp_cor (CSF).
_COMPCOR_PREFIXES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "anat_combined": (("a", "combined"),),
    "anat_separated": (("a", "WM"), ("a", "CSF"), ("w", None), ("c", None)),
    "temporal": (("t", None),),
    "temporal_anat_combined": (("t", None), ("a", "combined")),
    "temporal_anat_separated": (
        ("t", None), ("a", "WM"), ("a", "CSF"), ("w", None), ("c", None),
    ),
}
_MODEL_SUFFIXES = {
    "basic": (),
    "derivatives": ("derivative1",),
    "power2": ("power2",),
    "full": ("derivative1", "power2", "derivative1_power2"),
}
_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
# fMRIPrep < 1.2 wrote CamelCase headers; they map one to one onto the current names.
_OLD_NAMES = {
    "X": "trans_x", "Y": "trans_y", "Z": "trans_z",
    "RotX": "rot_x", "RotY": "rot_y", "RotZ": "rot_z",
    "CSF": "csf", "WhiteMatter": "white_matter", "GlobalSignal": "global_signal",
    "FramewiseDisplacement": "framewise_displacement", "stdDVARS": "std_dvars",
    "non-stdDVARS": "dvars", "vx-wisestdDVARS": "vx-wisestdDVARS",
}
_OLD_PATTERNS = (
    (re.compile(r"^aCompCor(\d+)$"), "a_comp_cor_{:02d}"),
    (re.compile(r"^tCompCor(\d+)$"), "t_comp_cor_{:02d}"),
    (re.compile(r"^Cosine(\d+)$"), "cosine{:02d}"),
    (re.compile(r"^NonSteadyStateOutlier(\d+)$"), "non_steady_state_outlier{:02d}"),
    (re.compile(r"^AROMAAggrComp(\d+)$"), "aroma_motion_{:02d}"),
)


# --------------------------------------------------------------------------------------------
# Confounds table → design
# --------------------------------------------------------------------------------------------


def read_confounds(confounds: str | os.PathLike) -> pd.DataFrame:
    """Read an fMRIPrep confounds table, translating pre-1.2 CamelCase headers.

    Parameters
    ----------
    confounds : path
        ``*_desc-confounds_timeseries.tsv`` (fMRIPrep ≥ 20.2) or ``*_desc-confounds_regressors.tsv``
        (1.x). ``n/a`` is read as missing.

    Returns
    -------
    DataFrame
        One row per volume, columns with fMRIPrep ≥ 1.2 names. For a CamelCase (< 1.2) table the
        expansions fMRIPrep writes since 1.2 (``_derivative1`` backward differences with a missing
        first row, ``_power2`` squares) are added for motion, CSF, white matter and global signal.

    Raises
    ------
    BadInputError
        Missing or unreadable file, a header-less table, non-numeric columns.
    """
    path = Path(confounds)
    table = read_tsv(path)
    if table.shape[1] == 0 or table.shape[0] == 0:
        raise BadInputError(f"{path}: the confounds table is empty")
    try:
        float(table.columns[0])
        headerless = True
    except ValueError:
        headerless = False
    if headerless:
        raise BadInputError(
            f"{path}: the confounds table has no header row (expected fMRIPrep column names "
            "such as trans_x, csf, framewise_displacement)"
        )
    if any(name in _OLD_NAMES for name in table.columns if name != "vx-wisestdDVARS"):
        table = _translate_old_table(table)
    bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise BadInputError(
            f"{path}: confound columns must be numeric (or n/a)",
            [f"column {c!r} holds non-numeric values" for c in bad],
        )
    return table


def _translate_old_table(table: pd.DataFrame) -> pd.DataFrame:
    renamed = {}
    for name in table.columns:
        new = _OLD_NAMES.get(name)
        if new is None:
            for pattern, template in _OLD_PATTERNS:
                match = pattern.match(name)
                if match:
                    new = template.format(int(match.group(1)))
                    break
        renamed[name] = new or name
    table = table.rename(columns=renamed)
    extra = {}
    for base in (*_MOTION, "csf", "white_matter", "global_signal"):
        if base not in table:
            continue
        derivative = table[base].diff()
        extra.setdefault(f"{base}_derivative1", derivative)
        extra.setdefault(f"{base}_power2", table[base] ** 2)
        extra.setdefault(f"{base}_derivative1_power2", derivative**2)
    extra = {k: v for k, v in extra.items() if k not in table}
    return pd.concat([table, pd.DataFrame(extra)], axis=1)


def _read_sidecar(path: Path, needed: bool) -> dict | None:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        if needed:
            raise BadInputError(
                f"{path}: anatomical CompCor needs the confounds sidecar {sidecar.name} (it says "
                "which mask each a_comp_cor column comes from; fMRIPrep ≥ 1.4 writes it), "
                "and it was not found"
            )
        return None
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{sidecar}: not valid JSON ({exc})") from None


def _expand(names: Sequence[str], model: str) -> list[str]:
    return list(names) + [f"{n}_{s}" for n in names for s in _MODEL_SUFFIXES[model]]


def _compcor_columns(meta: dict, compcor: str, n_compcor: str | int, path: Path) -> list[str]:
    columns: list[str] = []
    for prefix, mask in _COMPCOR_PREFIXES[compcor]:
        # Components are numbered from 00 in the sidecar; nilearn names them from the count.
        count = sum(f"{prefix}_comp_cor" in key for key in meta)
        names = [f"{prefix}_comp_cor_{i:02d}" for i in range(count)]
        if mask is not None:
            try:
                names = [n for n in names if meta[n]["Mask"] == mask]
            except (KeyError, TypeError) as exc:
                raise BadInputError(
                    f"{path}: the confounds sidecar has no entry (or no 'Mask') for {exc}"
                ) from None
        if n_compcor != "all":
            names = names[: int(n_compcor)]
        columns += names
    return columns


def _scrub_outliers(
    table: pd.DataFrame, scrub: int, fd_threshold: float, std_dvars_threshold: float
) -> np.ndarray:
    """Indices of volumes to censor: FD or std-DVARS above threshold, plus short segments."""
    n_scans = len(table)
    fd = table["framewise_displacement"].to_numpy(dtype=float)
    dv = table["std_dvars"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        flagged = (fd > fd_threshold) | (dv > std_dvars_threshold)
    outliers = np.flatnonzero(flagged)
    if scrub > 0 and outliers.size:
        # Segments of fewer than `scrub` kept volumes are censored too (Power et al. 2014),
        # including those at the start and the end of the run.
        censored = np.zeros(n_scans, dtype=bool)
        censored[outliers] = True
        if outliers[0] < scrub:
            censored[: outliers[0]] = True
        if n_scans - (outliers[-1] + 1) < scrub:
            censored[outliers[-1] :] = True
        gaps = np.diff(outliers)
        for i in np.flatnonzero((gaps > 1) & (gaps < scrub + 1)):
            censored[outliers[i] + 1 : outliers[i + 1]] = True
        outliers = np.flatnonzero(censored)
    return outliers


def nuisance_design(
    confounds: str | os.PathLike,
    strategy: str | Sequence[str] = "simple",
    *,
    motion: str | None = None,
    wm_csf: str | None = None,
    global_signal: str | None = None,
    compcor: str | None = None,
    n_compcor: str | int | None = None,
    scrub: int | None = None,
    fd_threshold: float | None = None,
    std_dvars_threshold: float | None = None,
    demean: bool = True,
    ica_aroma: str | None = None,
    n_volumes: int | None = None,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Nuisance design and sample mask from an fMRIPrep confounds table.

    Same semantics as :func:`nilearn.interfaces.fmriprep.load_confounds_strategy` (for a preset
    name) and :func:`nilearn.interfaces.fmriprep.load_confounds` (for a tuple of components): same
    columns (sorted by name), same fill of the first row, same demeaning, same sample mask.

    Parameters
    ----------
    confounds : path
        ``*_desc-confounds_timeseries.tsv``; its ``.json`` sidecar is read from beside it (needed
        for anatomical CompCor only).
    strategy : {"simple", "scrubbing", "compcor", "ica_aroma"} or sequence of str
        A preset name (Wang et al. 2024, nilearn presets), or components among ``motion``,
        ``high_pass`` (fMRIPrep's cosine regressors), ``wm_csf``, ``global_signal``, ``compcor``,
        ``ica_aroma``, ``scrub``. Non-steady-state volumes are always censored.
    motion, wm_csf : {"basic", "power2", "derivatives", "full"}, optional
        Expansion of the 6 motion parameters / of CSF and white-matter signals (6, 12, 12 or 24
        regressors). ``None`` takes the preset's value (``"full"`` motion; ``"basic"`` wm_csf,
        ``"full"`` in "scrubbing").
    global_signal : {"basic", "power2", "derivatives", "full"}, optional
        Add global signal regression with this expansion (``None``: none, as in every preset).
    compcor : str, optional
        ``anat_combined`` (default), ``anat_separated``, ``temporal``, ``temporal_anat_combined``
        or ``temporal_anat_separated``.
    n_compcor : "all" or int, optional
        Number of CompCor components per mask (default ``"all"``).
    scrub : int, optional
        Minimum length (volumes) of a kept segment between censored volumes; shorter segments are
        censored too (default 5, as Power et al. 2014).
    fd_threshold : float, optional
        Framewise displacement (mm) above which a volume is censored (default 0.5).
    std_dvars_threshold : float, optional
        Standardized DVARS above which a volume is censored (default 1.5).
    demean : bool
        Subtract each regressor's mean over the kept volumes.
    ica_aroma : {"full", "basic"}, optional
        ``"full"`` (default): the design goes with fMRIPrep's ``desc-smoothAROMAnonaggr_bold``
        (no AROMA columns, the noise components are already removed); ``"basic"``: the
        ``aroma_motion_*`` columns are regressed. Either needs a table written by an fMRIPrep run
        with ICA-AROMA (``aroma_motion_*`` columns present).
    n_volumes : int, optional
        Number of volumes of the BOLD run; a table of another length is rejected naming the file
        and both lengths.

    Returns
    -------
    design : DataFrame, shape (n_volumes, n_regressors)
        Nuisance regressors, all volumes (censoring is the sample mask's job). ``design.attrs
        ["source"]`` holds the file name so that :func:`clean` can name it in errors.
    sample_mask : ndarray of int or None
        Indices of the volumes to keep; ``None`` when none is censored.

    Raises
    ------
    BadInputError
        Unknown strategy or model; columns the strategy needs are missing; a strategy the file
        cannot provide (e.g. ``ica_aroma`` without AROMA columns, anatomical CompCor without
        sidecar); ``n/a`` beyond the first row; length different from ``n_volumes``.
    """
    path = Path(confounds)
    # -- resolve the strategy and its parameters (preset values unless given) -----------------
    params = {
        "motion": "full", "wm_csf": "basic", "compcor": "anat_combined", "n_compcor": "all",
        "scrub": 5, "fd_threshold": 0.5, "std_dvars_threshold": 1.5, "ica_aroma": "full",
    }
    if isinstance(strategy, str):
        if strategy not in PRESETS:
            raise BadInputError(
                f"{path}: unknown denoising strategy {strategy!r}; expected one of "
                f"{sorted(PRESETS)} or a list of components among {list(_COMPONENTS)}"
            )
        preset = PRESETS[strategy]
        components = list(preset["strategy"])
        params.update({k: v for k, v in preset.items() if k != "strategy"})
    else:
        components = [c for c in strategy if c != "non_steady_state"]
        unknown = [c for c in components if c not in _COMPONENTS]
        if unknown:
            raise BadInputError(
                f"{path}: unknown confound component(s) {unknown}; expected among "
                f"{list(_COMPONENTS)}"
            )
        if "compcor" in components and "high_pass" not in components:
            raise BadInputError(
                f"{path}: CompCor components are computed after fMRIPrep's high-pass filter; "
                "include 'high_pass' with 'compcor'"
            )
    given = {
        "motion": motion, "wm_csf": wm_csf, "compcor": compcor, "n_compcor": n_compcor,
        "scrub": scrub, "fd_threshold": fd_threshold,
        "std_dvars_threshold": std_dvars_threshold, "ica_aroma": ica_aroma,
    }
    params.update({k: v for k, v in given.items() if v is not None})
    uses = {
        "motion": "motion", "wm_csf": "wm_csf", "compcor": "compcor", "n_compcor": "compcor",
        "scrub": "scrub", "fd_threshold": "scrub", "std_dvars_threshold": "scrub",
        "ica_aroma": "ica_aroma",
    }
    unused = [k for k, v in given.items() if v is not None and uses[k] not in components]
    if unused:
        warnings.warn(
            f"{path}: {unused} have no effect with strategy {strategy!r} (components "
            f"{components}); they are ignored",
            UserWarning,
            stacklevel=2,
        )
    if global_signal is not None and "global_signal" not in components:
        components.append("global_signal")
    params["global_signal"] = global_signal or "basic"
    for key in ("motion", "wm_csf", "global_signal"):
        if params[key] not in _MODELS:
            raise BadInputError(f"{path}: {key}={params[key]!r}; expected one of {list(_MODELS)}")
    if params["compcor"] not in _COMPCOR_PREFIXES:
        raise BadInputError(
            f"{path}: compcor={params['compcor']!r}; expected one of {list(_COMPCOR_PREFIXES)}"
        )
    if params["ica_aroma"] not in ("full", "basic"):
        raise BadInputError(f"{path}: ica_aroma={params['ica_aroma']!r}; expected full or basic")
    if params["n_compcor"] != "all" and not (
        isinstance(params["n_compcor"], int | np.integer) and params["n_compcor"] > 0
    ):
        raise BadInputError(f"{path}: n_compcor must be 'all' or a positive integer")

    table = read_confounds(path)
    if n_volumes is not None and len(table) != n_volumes:
        raise BadInputError(
            f"{path}: the confounds table has {len(table)} rows but the BOLD run has "
            f"{n_volumes} volumes; they must describe the same volumes"
        )
    needs_acompcor = "compcor" in components and "anat" in params["compcor"]
    meta = _read_sidecar(path, needed=needs_acompcor)

    # -- select columns --------------------------------------------------------------------
    selected: list[str] = []
    missing: list[str] = []

    def take(names: list[str], label: str, all_or_nothing: bool = True) -> None:
        absent = [n for n in names if n not in table.columns]
        if absent and (all_or_nothing or len(absent) < len(names)):
            missing.append(f"{label}: missing column(s) {absent}")
        selected.extend(n for n in names if n in table.columns)

    nss = [c for c in table.columns if "non_steady_state" in c]
    for component in components:
        if component == "motion":
            take(_expand(_MOTION, params["motion"]), f"motion ({params['motion']})")
        elif component == "high_pass":
            selected.extend(c for c in table.columns if "cosine" in c)
        elif component == "wm_csf":
            take(_expand(("csf", "white_matter"), params["wm_csf"]), f"wm_csf ({params['wm_csf']})")
        elif component == "global_signal":
            take(
                _expand(("global_signal",), params["global_signal"]),
                f"global_signal ({params['global_signal']})",
            )
        elif component == "compcor":
            names = _compcor_columns(meta or {}, params["compcor"], params["n_compcor"], path)
            if not names:
                missing.append(f"compcor ({params['compcor']}): no such components in the sidecar")
            take(names, f"compcor ({params['compcor']})")
        elif component == "ica_aroma":
            aroma = [c for c in table.columns if "aroma" in c]
            if not aroma:
                missing.append(
                    "ica_aroma: no aroma_motion_* columns (fMRIPrep ran without --use-aroma; "
                    "fMRIPrep ≥ 23.1 no longer offers it)"
                )
            elif params["ica_aroma"] == "basic":
                selected.extend(aroma)
        elif component == "scrub":
            absent = [c for c in ("framewise_displacement", "std_dvars") if c not in table]
            if absent:
                missing.append(f"scrub: missing column(s) {absent}")
    if missing:
        raise BadInputError(
            f"{path}: the confounds table cannot provide the {strategy!r} strategy", missing
        )

    # -- censoring --------------------------------------------------------------------------
    censored = np.zeros(len(table), dtype=bool)
    if nss:
        censored |= table[nss].fillna(0).to_numpy().sum(axis=1) > 0
    if "scrub" in components:
        censored[
            _scrub_outliers(
                table, int(params["scrub"]), params["fd_threshold"], params["std_dvars_threshold"]
            )
        ] = True
    sample_mask = None if not censored.any() else np.flatnonzero(~censored)
    if sample_mask is not None and sample_mask.size == 0:
        raise BadInputError(
            f"{path}: every volume is censored (FD > {params['fd_threshold']} mm or std DVARS > "
            f"{params['std_dvars_threshold']}); nothing is left to analyse"
        )

    # -- design: sorted unique columns, first-row n/a filled from the second row ----------------
    columns = sorted(set(selected))
    design = table[columns].astype(float).copy()
    if len(design.columns):
        first = design.iloc[0].isna()
        if first.any() and len(design) > 1:
            design.iloc[0, first.to_numpy()] = design.iloc[1, first.to_numpy()]
        holes = design.columns[design.isna().any()].tolist()
        if holes:
            raise BadInputError(
                f"{path}: confound columns have n/a values beyond the first row",
                [f"{c}: {int(design[c].isna().sum())} n/a" for c in holes],
            )
        if demean:
            rows = slice(None) if sample_mask is None else sample_mask
            design = design - design.iloc[rows].mean(axis=0)
    design.attrs["source"] = str(path)
    return design, sample_mask


# --------------------------------------------------------------------------------------------
# Signals → cleaned signals
# --------------------------------------------------------------------------------------------


def _as_confound_array(confounds, n_volumes: int) -> tuple[np.ndarray | None, str]:
    if confounds is None:
        return None, ""
    source = ""
    if isinstance(confounds, pd.DataFrame):
        source = str(confounds.attrs.get("source", ""))
        array = confounds.to_numpy(dtype=float)
    elif isinstance(confounds, str | os.PathLike):
        source = str(confounds)
        array = read_tsv(confounds).to_numpy(dtype=float)
    else:
        array = np.asarray(confounds, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    where = source or "confounds"
    if array.ndim != 2:
        raise BadInputError(f"{where}: expected a 2-D (n_volumes, n_regressors) design")
    if array.shape[0] != n_volumes:
        raise BadInputError(
            f"{where}: the confounds have {array.shape[0]} rows but the signals have "
            f"{n_volumes} volumes"
        )
    if not np.isfinite(array).all():
        raise BadInputError(f"{where}: the confounds hold n/a or infinite values")
    return array, where


def _normalize_sample_mask(sample_mask, n_volumes: int) -> np.ndarray | None:
    if sample_mask is None:
        return None
    mask = np.asarray(sample_mask)
    if mask.dtype == bool:
        if mask.shape != (n_volumes,):
            raise BadInputError(
                f"sample_mask: a boolean mask must have one entry per volume ({n_volumes}), "
                f"got {mask.shape}"
            )
        index = np.flatnonzero(mask)
    else:
        index = mask.astype(np.int64).ravel()
        if index.size and (index.min() < 0 or index.max() >= n_volumes):
            raise BadInputError(
                f"sample_mask: indices must lie in [0, {n_volumes - 1}] (the signals have "
                f"{n_volumes} volumes)"
            )
        if np.any(np.diff(index) <= 0):
            raise BadInputError("sample_mask: indices must be strictly increasing")
    if index.size == 0:
        raise BadInputError("sample_mask: every volume is censored; nothing is left to clean")
    return index


def _trend_basis(n: int) -> np.ndarray:
    """Orthonormal constant and linear-trend columns (what nilearn's detrend removes)."""
    basis = np.empty((n, 2))
    basis[:, 0] = 1.0 / np.sqrt(n)
    ramp = np.arange(n, dtype=float)
    ramp -= ramp.mean()
    norm = np.sqrt((ramp**2).sum())
    basis[:, 1] = ramp / norm if norm > np.finfo(float).eps else 0.0
    return basis if n > 1 else basis[:, :1]


def _detrend(x: np.ndarray) -> np.ndarray:
    """Remove mean and linear trend with nilearn's exact sequence of floating-point operations.

    Real confound sets often hold a column that is almost a linear trend; once detrended it is
    rounding-level residue that standardization then scales up. Using the same operations as
    nilearn makes that residue, hence the nuisance subspace, bitwise the same. The mean goes
    first and exactly, so a constant feature becomes exactly 0.
    """
    x = x - x.mean(axis=0)
    n = x.shape[0]
    if n < 2:
        return x
    ramp = np.arange(n, dtype=np.float64)
    ramp -= ramp.mean()
    norm = np.sqrt((ramp**2).sum())
    if not norm < np.finfo(np.float64).eps:
        ramp /= norm
    x -= np.dot(ramp, x) * ramp[:, None]
    return x


def _interpolate(x: np.ndarray, kept: np.ndarray, t_r: float) -> np.ndarray:
    from scipy.interpolate import CubicSpline

    out = x.copy()
    frame_times = np.arange(x.shape[0]) * t_r
    gaps = np.setdiff1d(np.arange(x.shape[0]), kept)
    if gaps.size:
        out[gaps] = CubicSpline(frame_times[kept], x[kept], extrapolate=False)(frame_times[gaps])
    return out


def _cosine_drift(n: int, high_pass: float, t_r: float) -> np.ndarray:
    from nilearn.signal import create_cosine_drift

    return create_cosine_drift(high_pass, np.arange(n) * t_r)[:, :-1]


def _orthonormal_confounds(confounds: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the standardized confounds, as nilearn's pivoted QR keeps it."""
    centered = confounds - confounds.mean(axis=0)
    sd = centered.std(axis=0, ddof=1) if confounds.shape[0] > 1 else np.ones(confounds.shape[1])
    sd[sd < np.finfo(np.float64).eps] = 1.0
    q, r, _ = linalg.qr(centered / sd, mode="economic", pivoting=True)
    return q[:, np.abs(np.diag(r)) > np.finfo(np.float64).eps * 100.0]


def clean(
    signals: np.ndarray,
    *,
    confounds: pd.DataFrame | np.ndarray | str | os.PathLike | None = None,
    sample_mask: np.ndarray | None = None,
    t_r: float | None = None,
    detrend: bool = True,
    standardize: str | None = "zscore_sample",
    high_pass: float | None = None,
    low_pass: float | None = None,
    filter: str | None = "butterworth",  # noqa: A002 - nilearn's name
    block_size: int = 16384,
) -> np.ndarray:
    """Remove nuisance signals, filter, censor and standardize, as :func:`nilearn.signal.clean`.

    Parameters
    ----------
    signals : ndarray, shape (n_volumes, n_features)
        Time along the first axis (ROI time series or masked voxels). float32 stays float32 in
        the output; the arithmetic is float64 on blocks of ``block_size`` features.
    confounds : DataFrame, ndarray (n_volumes, n_regressors), path or None
        Nuisance design, typically from :func:`nuisance_design`. It is detrended and filtered like
        the signals (Lindquist et al. 2019), then standardized; the signals are projected on the
        orthogonal complement of its span.
    sample_mask : ndarray of int or bool, optional
        Volumes to keep (indices, or a boolean mask of length n_volumes). Censored volumes are
        absent from the output.
    t_r : float, optional
        Repetition time in seconds; required when filtering.
    detrend : bool
        Remove the mean and a linear trend (over the kept volumes, or over the interpolated series
        when Butterworth-filtering a censored run).
    standardize : {"zscore_sample", "psc", None}
        Final scaling: z-score with ddof=1, percent signal change, or none.
    high_pass, low_pass : float, optional
        Cut-off frequencies in Hz.
    filter : {"butterworth", "cosine", None}
        Butterworth (order 5, zero-phase, nilearn's :func:`~nilearn.signal.butterworth`), or a
        discrete cosine basis added to the confounds (``high_pass`` only).
    block_size : int
        Features processed at a time (memory: about 3 × n_volumes × block_size × 8 bytes).

    Returns
    -------
    ndarray, shape (n_kept, n_features)
        Cleaned signals, in the dtype of ``signals`` when it is floating point.

    Raises
    ------
    BadInputError
        Confounds whose length differs from the signals (naming the confounds file when known),
        non-finite confounds or signals, a bad sample mask, filtering without ``t_r``.
    """
    x = np.asarray(signals)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise BadInputError(f"signals: expected (n_volumes, n_features), got shape {x.shape}")
    n_volumes, n_features = x.shape
    out_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    if filter not in ("butterworth", "cosine", None, False):
        raise BadInputError(f"filter={filter!r}: expected 'butterworth', 'cosine' or None")
    if standardize not in ("zscore_sample", "psc", None, False):
        raise BadInputError(f"standardize={standardize!r}: expected 'zscore_sample', 'psc' or None")
    filtering = filter == "butterworth" and (high_pass is not None or low_pass is not None)
    if not filter and (high_pass is not None or low_pass is not None):
        warnings.warn(
            f"clean: filter={filter!r} but high_pass={high_pass}, low_pass={low_pass} given; "
            "no filtering is done",
            UserWarning,
            stacklevel=2,
        )
    if (filtering or (filter == "cosine" and high_pass is not None)) and not t_r:
        raise BadInputError(
            "t_r: the repetition time (seconds) is required to filter (high_pass="
            f"{high_pass}, low_pass={low_pass}); read it from the BOLD sidecar's RepetitionTime"
        )
    conf, where = _as_confound_array(confounds, n_volumes)
    kept = _normalize_sample_mask(sample_mask, n_volumes)

    if filter == "cosine" and high_pass is not None:
        drift = _cosine_drift(n_volumes, high_pass, t_r)
        if drift.shape[1] == 0:
            warnings.warn(
                "cosine filter: the run is too short for this high_pass; no drift term added",
                stacklevel=2,
            )
        elif conf is None:
            conf = drift
        else:
            with np.errstate(invalid="ignore", divide="ignore"):  # constant columns: NaN
                corr = np.corrcoef(drift.T, conf.T)[: drift.shape[1], drift.shape[1] :]
            if not (corr > 0.9).any():  # fMRIPrep's cosines already in the design: keep those
                conf = np.hstack([conf, drift])

    # Rows entering detrend/filter, and rows kept in the output (positions within the former).
    if kept is None:
        rows, out_rows = slice(None), None
    elif filtering:
        rows = slice(int(kept[0]), int(kept[-1]) + 1)
        out_rows = kept - kept[0]
    else:
        rows, out_rows = kept, None
    if conf is not None:
        conf = conf[rows]
        if filtering and kept is not None:
            conf = _interpolate(conf, out_rows, t_r)
        if detrend:
            spread = np.linalg.norm(conf - conf.mean(axis=0), axis=0)
            conf = _detrend(conf)
            # A confound that is (numerically) a constant or a linear trend leaves only rounding
            # residue once detrended; standardizing would turn that residue into a random
            # regressor and remove a random direction from the data (nilearn 0.14 does). It is
            # already in the detrending, so it is dropped.
            conf = conf[:, np.linalg.norm(conf, axis=0) > 1e-8 * spread]
        if filtering:
            conf = _butterworth(conf, t_r, high_pass, low_pass)
        if out_rows is not None:
            conf = conf[out_rows]
    n_out = n_volumes if kept is None else kept.size
    q = None
    if conf is not None and conf.shape[1]:
        q = _orthonormal_confounds(conf) if n_out > 1 else None
    # Without filtering, detrending and confound removal are one projection (the detrended
    # confounds are orthogonal to the trend basis).
    if detrend and not filtering and n_out > 1:
        trend = _trend_basis(n_out)
        q = trend if q is None else np.hstack([trend, q - trend @ (trend.T @ q)])

    if standardize == "psc":  # nilearn's psc rule looks at every feature at once
        block_size = max(n_features, 1)
    out = np.empty((n_out, n_features), dtype=out_dtype)
    for start in range(0, n_features, block_size):
        cols = slice(start, min(start + block_size, n_features))
        block = np.array(x[rows, cols], dtype=np.float64)  # a copy: never write into the input
        if not np.isfinite(block).all():
            raise BadInputError(
                "signals: non-finite values (NaN or inf) in features "
                f"{start}..{cols.stop - 1}; mask them out before cleaning"
            )
        original_mean = None
        if filtering:
            if kept is not None:
                block = _interpolate(block, out_rows, t_r)
            original_mean = block.mean(axis=0)
            if detrend:
                block = _detrend(block)
            block = _butterworth(block, t_r, high_pass, low_pass)
            if out_rows is not None:
                block = block[out_rows]
        else:
            original_mean = block.mean(axis=0)
            if detrend:
                block -= original_mean  # exact centring first (see _detrend)
        if q is not None:
            block -= q @ (q.T @ block)
        out[:, cols] = _standardize(block, standardize, original_mean)
    return out


def _butterworth(x: np.ndarray, t_r: float, high_pass, low_pass) -> np.ndarray:
    from nilearn.signal import butterworth

    if x.shape[1] == 0:
        return x
    return butterworth(x, sampling_rate=1.0 / t_r, low_pass=low_pass, high_pass=high_pass, copy=True)


def _standardize(block: np.ndarray, standardize, original_mean: np.ndarray) -> np.ndarray:
    if not standardize or block.shape[0] < 2:
        return block
    if standardize == "zscore_sample":
        block = block - block.mean(axis=0)
        sd = block.std(axis=0, ddof=1)
        sd[sd < np.finfo(np.float64).eps] = 1.0
        return block / sd
    # Percent signal change: when detrending / filtering removed the mean, nilearn adds the
    # original mean back so that the scale refers to the raw signal level.
    mean_now = block.mean(axis=0)
    if np.abs(mean_now).mean() / np.abs(original_mean).mean() < 1e-1:
        block = block + original_mean
    mean = block.mean(axis=0)
    invalid = np.abs(mean) < np.finfo(np.float64).eps
    with np.errstate(divide="ignore", invalid="ignore"):
        block = (block - mean) / np.abs(mean) * 100.0
    block[:, invalid] = 0.0
    return block
