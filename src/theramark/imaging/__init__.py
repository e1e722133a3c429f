"""Participant-level imaging: denoise, QC, ROIs, connectivity, task GLM, orchestration.

Modules: :mod:`~theramark.imaging.denoise` (nuisance regression), :mod:`~theramark.imaging.qc`,
:mod:`~theramark.imaging.rois` (ROI sets and fast extraction), :mod:`~theramark.imaging.connectivity`
(static and dynamic FC), :mod:`~theramark.imaging.glm` (task activation),
:mod:`~theramark.imaging.participant` (one job per run, in parallel) and
:mod:`~theramark.imaging.outputs` (the tidy table the group level reads).

The entry points are importable from here without loading the heavy modules up front.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_masked_bold", "read_participant_outputs", "run_participant_level"]


def __getattr__(name: str) -> Any:
    if name == "run_participant_level":
        from theramark.imaging.participant import run_participant_level

        return run_participant_level
    if name == "read_participant_outputs":
        from theramark.imaging.outputs import read_participant_outputs

        return read_participant_outputs
    if name == "load_masked_bold":
        from theramark.imaging._image import load_masked_bold

        return load_masked_bold
    raise AttributeError(f"module 'theramark.imaging' has no attribute {name!r}")
