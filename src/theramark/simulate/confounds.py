"""fMRIPrep (>= 21) confounds table and JSON computed from a simulated run.

The columns, their order, the ``n/a`` in the first row, the zeros of CompCor and cosine regressors at
non-steady-state volumes and the CompCor metadata follow fMRIPrep 21-23 (compare the real table in
``shared/data/fmriprep_confounds/nilearn_test_data/test-v21_desc-confounds_timeseries.tsv``). Every
signal column is computed from the simulated image, as fMRIPrep computes it from the real one:

- ``global_signal``, ``csf``, ``white_matter``, ``csf_wm``, ``tcompcor``: mask means;
- ``dvars`` and ``std_dvars``: Nichols' DVARS and its standardised form, as nipype's ComputeDVARS
  (median intensity scaled to 1000, robust SD and AR(1) per voxel);
- ``a_comp_cor`` (combined WM+CSF mask), ``c_comp_cor`` (CSF), ``w_comp_cor`` (WM), ``t_comp_cor``
  (top 2% variance voxels): cosine-filtered, variance-normalised voxel time series, SVD, components
  kept until 50% of the variance is explained;
- ``cosine``: DCT basis with a 128 s cutoff;
- ``motion_outlier``: one-hot columns for FD > 0.5 mm or standardised DVARS > 1.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from theramark.simulate.motion import Motion

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
FD_THRESHOLD_MM = 0.5
STD_DVARS_THRESHOLD = 1.5
HIGHPASS_CUTOFF_S = 128.0
COMPCOR_VARIANCE = 0.5
TCOMPCOR_FRACTION = 0.02


def cosine_basis(n_volumes: int, repetition_time: float,
                 cutoff_s: float = HIGHPASS_CUTOFF_S) -> np.ndarray:
    """DCT-II drift basis (without the constant), shape (n_volumes, K), K = floor(2 n TR / cutoff)."""
    order = int(np.floor(2.0 * n_volumes * repetition_time / cutoff_s))
    t = np.arange(n_volumes)
    k = np.arange(1, order + 1)
    return np.sqrt(2.0 / n_volumes) * np.cos(np.pi * np.outer(t + 0.5, k) / n_volumes)


def _expand(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """A signal and its backward derivative, square and derivative square (fMRIPrep's expansion)."""
    derivative = np.concatenate([[np.nan], np.diff(values)])
    return {
        name: values,
        f"{name}_derivative1": derivative,
        f"{name}_power2": values**2,
        f"{name}_derivative1_power2": derivative**2,
    }


def compcor(data: np.ndarray, basis: np.ndarray,
            variance: float = COMPCOR_VARIANCE) -> tuple[np.ndarray, np.ndarray]:
    """CompCor components of ``data`` (T, Vm) after removing the mean and ``basis`` (T, K).

    Voxel time series are variance-normalised before the SVD (computed from the T x T Gram matrix,
    which costs O(T^2 Vm) instead of a full SVD). Components are kept until their cumulative
    explained variance reaches ``variance``.

    Returns
    -------
    components : ndarray, shape (T, k)
    singular_values : ndarray, shape (n,)
        All singular values (for the variance-explained metadata).
    """
    design = np.column_stack([np.ones(len(data)), basis])
    orthonormal, _ = np.linalg.qr(design)
    x = data.astype(np.float64)
    x = x - orthonormal @ (orthonormal.T @ x)
    sd = x.std(axis=0)
    x = x[:, sd > 0] / sd[sd > 0]
    gram = x @ x.T
    eigenvalues, vectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    vectors = vectors[:, order]
    # the residualised data have rank T - 1 - K; drop the null directions
    rank = len(data) - design.shape[1]
    eigenvalues, vectors = eigenvalues[:rank], vectors[:, :rank]
    explained = eigenvalues / eigenvalues.sum()
    n_keep = int(np.searchsorted(np.cumsum(explained), variance) + 1)
    components = vectors[:, :n_keep]
    # deterministic sign: the largest-magnitude entry of each component is positive
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(n_keep)])
    return components * signs, np.sqrt(eigenvalues)


def _quartile_range(x: np.ndarray) -> np.ndarray:
    """Interquartile range of each column of ``x`` (T, V), linear interpolation as numpy's."""
    ordered = np.sort(np.ascontiguousarray(x.T), axis=1)
    n = ordered.shape[1]

    def quantile(q: float) -> np.ndarray:
        position = q * (n - 1)
        low = int(np.floor(position))
        high = min(low + 1, n - 1)
        frac = position - low
        return ordered[:, low] * (1.0 - frac) + ordered[:, high] * frac

    return quantile(0.75) - quantile(0.25)


def dvars(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and standardised DVARS (Nichols 2013; nipype's ComputeDVARS), first value NaN.

    Parameters
    ----------
    data : ndarray, shape (T, V)
        In-mask voxel time series.
    """
    x = data * np.float32(1000.0 / np.median(data[::7]))
    robust_sd = _quartile_range(x) / 1.349
    centred = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    denominator = np.einsum("tv,tv->v", centred, centred, dtype=np.float64)
    lagged = np.einsum("tv,tv->v", centred[1:], centred[:-1], dtype=np.float64)
    ar1 = np.divide(lagged, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    expected = np.sqrt(2.0 * (1.0 - ar1)) * robust_sd
    difference = np.diff(x, axis=0)
    raw = np.sqrt(np.einsum("tv,tv->t", difference, difference, dtype=np.float64) / x.shape[1])
    standardised = raw / expected.mean()
    return np.concatenate([[np.nan], raw]), np.concatenate([[np.nan], standardised])


def confounds_table(data: np.ndarray, wm: np.ndarray, csf: np.ndarray, motion: Motion,
                    n_non_steady: int, repetition_time: float) -> tuple[pd.DataFrame, dict]:
    """The fMRIPrep confounds table and its JSON metadata for one run.

    Parameters
    ----------
    data : ndarray, shape (T, V)
        Preprocessed in-mask voxel time series.
    wm, csf : ndarray of bool, shape (V,)
        White-matter and CSF masks over the in-mask voxels.
    motion : Motion
        The run's motion.
    n_non_steady : int
        Number of non-steady-state volumes at the start.
    repetition_time : float
        TR in seconds.
    """
    n = data.shape[0]
    steady = slice(n_non_steady, n)
    columns: dict[str, np.ndarray] = {}
    metadata: dict[str, dict] = {}
    means = {
        "global_signal": data.mean(axis=1, dtype=np.float64),
        "csf": data[:, csf].mean(axis=1, dtype=np.float64),
        "white_matter": data[:, wm].mean(axis=1, dtype=np.float64),
    }
    for name, values in means.items():
        columns.update(_expand(name, values))
        metadata[name] = {"Method": "Mean"}
    columns["csf_wm"] = data[:, wm | csf].mean(axis=1, dtype=np.float64)
    metadata["csf_wm"] = {"Method": "Mean"}

    basis = cosine_basis(n - n_non_steady, repetition_time)
    steady_data = data[steady]
    residual = steady_data - steady_data.mean(axis=0)
    residual = residual - basis @ (basis.T @ residual)
    variance = residual.var(axis=0)
    n_top = max(1, int(np.ceil(TCOMPCOR_FRACTION * data.shape[1])))
    top = np.argsort(variance)[::-1][:n_top]
    columns["tcompcor"] = data[:, top].mean(axis=1, dtype=np.float64)
    metadata["tcompcor"] = {"Method": "Mean"}

    std_dvars_values = None
    dvars_values, std_dvars_values = dvars(data)
    columns["std_dvars"] = std_dvars_values
    columns["dvars"] = dvars_values
    columns["framewise_displacement"] = motion.framewise_displacement
    columns["rmsd"] = motion.rmsd

    sets = (("t_comp_cor", steady_data[:, top], None, "tCompCor"),
            ("c_comp_cor", steady_data[:, csf], "CSF", "aCompCor"),
            ("w_comp_cor", steady_data[:, wm], "WM", "aCompCor"),
            ("a_comp_cor", steady_data[:, wm | csf], "combined", "aCompCor"))
    for prefix, subset, mask, method in sets:
        components, singular = compcor(subset, basis)
        explained = singular**2 / (singular**2).sum()
        cumulative = np.cumsum(explained)
        for k in range(components.shape[1]):
            name = f"{prefix}_{k:02d}"
            full = np.zeros(n)
            full[steady] = components[:, k]
            columns[name] = full
            entry = {"CumulativeVarianceExplained": float(cumulative[k])}
            if mask is not None:
                entry["Mask"] = mask
            entry.update({"Method": method, "Retained": True,
                          "SingularValue": float(singular[k]),
                          "VarianceExplained": float(explained[k])})
            metadata[name] = entry
    for k in range(basis.shape[1]):
        full = np.zeros(n)
        full[steady] = basis[:, k]
        columns[f"cosine{k:02d}"] = full
    for k in range(n_non_steady):
        column = np.zeros(n)
        column[k] = 1.0
        columns[f"non_steady_state_outlier{k:02d}"] = column
    for j, name in enumerate(MOTION_COLUMNS):
        columns.update(_expand(name, motion.parameters[:, j].astype(np.float64)))
    fd = np.nan_to_num(motion.framewise_displacement, nan=0.0)
    std_dv = np.nan_to_num(std_dvars_values, nan=0.0)
    outliers = np.flatnonzero((fd > FD_THRESHOLD_MM) | (std_dv > STD_DVARS_THRESHOLD))
    for k, volume in enumerate(outliers):
        column = np.zeros(n)
        column[volume] = 1.0
        columns[f"motion_outlier{k:02d}"] = column
    table = pd.DataFrame(columns)
    return table, dict(sorted(metadata.items()))
