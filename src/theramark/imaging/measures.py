"""The connectivity measures of a rest run, one function each, named by the measure registry.

Each function takes the run's cleaned ROI signals (:class:`RestSignals`) and returns a
:class:`MeasureOutput`: the region × region matrix written as ``*_meas-<name>_relmat.dense.tsv``,
its sidecar fields and any extra files, or a note saying why it could not be computed. The
participant level calls the functions of the measures ``[connectivity] measures`` lists through
:data:`theramark.registry.MEASURES`; adding a measure is one function here and one registry entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from theramark.imaging import connectivity as conn


@dataclass
class RestSignals:
    """The denoised ROI signals of one rest run.

    Attributes
    ----------
    cleaned : ndarray, shape (n_kept, n_rois)
        Denoised, standardized signals of the kept volumes.
    kept : ndarray of int, shape (n_kept,)
        Indices of the kept volumes among the run's ``n_volumes``.
    n_volumes : int
        Volumes in the run (before censoring).
    t_r : float
        Repetition time (s).
    settings : mapping
        The resolved ``[connectivity]`` table.
    """

    cleaned: np.ndarray
    kept: np.ndarray
    n_volumes: int
    t_r: float
    settings: Mapping[str, Any]


@dataclass
class MeasureOutput:
    """What a measure gives: its matrix and sidecar, extra arrays, or why it was not computed."""

    matrix: np.ndarray | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)
    #: ``(name, array, sidecar)`` of extra ``.npy`` files (e.g. the sliding windows).
    arrays: list[tuple[str, np.ndarray, dict[str, Any]]] = field(default_factory=list)
    note: str = ""


def pearson_correlation(signals: RestSignals) -> MeasureOutput:
    """Fisher z of the Pearson correlation between ROI signals."""
    return MeasureOutput(conn.fc_matrix(signals.cleaned, kind="correlation", fisher_z=True),
                         {"RelationshipMeasure": "Pearson correlation, Fisher z (arctanh)",
                          "Weighted": True, "Directed": False})


def partial_correlation(signals: RestSignals) -> MeasureOutput:
    """Fisher z of the partial correlation (needs more kept volumes than ROIs + 1)."""
    n_kept, n_rois = signals.cleaned.shape
    if n_kept <= n_rois + 1:
        return MeasureOutput(note=f"partial correlation skipped ({n_kept} kept volumes for "
                                  f"{n_rois} ROIs)")
    return MeasureOutput(conn.fc_matrix(signals.cleaned, kind="partial correlation", fisher_z=True),
                         {"RelationshipMeasure": "partial correlation, Fisher z",
                          "Weighted": True, "Directed": False})


def dfc_variability(signals: RestSignals) -> MeasureOutput:
    """SD over sliding windows of the windowed Fisher z (censored volumes left out of windows)."""
    settings, t_r, n_volumes, kept = signals.settings, signals.t_r, signals.n_volumes, signals.kept
    window = conn.window_length_volumes(settings["window_s"], t_r)
    step = 1 if not settings["step_s"] else max(1, int(round(settings["step_s"] / t_r)))
    if window > n_volumes or kept.size < window:
        return MeasureOutput(note=f"dynamic FC skipped (run of {n_volumes} volumes, {kept.size} "
                                  f"kept, window of {window})")
    full = np.zeros((n_volumes, signals.cleaned.shape[1]))
    full[kept] = signals.cleaned
    keep = np.zeros(n_volumes, bool)
    keep[kept] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        windows = conn.sliding_window_fc(full, window, step=step, taper=settings["taper"],
                                         keep=keep, dtype=np.float32)
    extra = {"WindowVolumes": window, "WindowSeconds": window * t_r, "StepVolumes": step,
             "Taper": settings["taper"], "NWindows": int(windows.shape[0])}
    output = MeasureOutput(conn.dfc_variability(windows, fisher_z=True),
                           {"RelationshipMeasure": "SD over sliding windows of Fisher z", **extra})
    if settings["write_windows"]:
        output.arrays.append(("desc-windows_relmat.npy", windows.astype(np.float32, copy=False),
                              {"RelationshipMeasure": "windowed Pearson r",
                               "Shape": "(n_windows, n_rois, n_rois)", **extra}))
    return output
