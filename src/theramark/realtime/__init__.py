"""Real-time fMRI neurofeedback: ingestion, per-volume engine, scanner simulator, web display.

A run is: a source of volumes in acquisition order (:class:`FolderSource` watching a scanner's
export folder, or :class:`SocketSource`), :func:`run_realtime` processing each one (realignment,
ROI means, Kalman spike filter, cumulative GLM, feedback) into ``LOG_DIR/feedback.tsv`` and onto
a :class:`DisplayServer`, and :func:`summarize` afterwards. :func:`simulate_scanner` replays a run
as a scanner would export it. See ``docs/realtime.md``; the commands are ``theramark realtime
run|simulate-scanner|summarize``.

The names below are imported on first use, so ``import theramark.realtime`` stays light.
"""

from __future__ import annotations

from theramark._lazy import lazy_exports

_EXPORTS = {
    "Volume": "volumes",
    "FolderSource": "ingest",
    "SocketSource": "ingest",
    "send_volume": "ingest",
    "send_end": "ingest",
    "run_realtime": "engine",
    "RealtimeEngine": "engine",
    "mask_rois": "engine",
    "library_rois": "engine",
    "read_protocol": "protocol",
    "summarize": "summary",
    "simulate_scanner": "scanner",
    "DisplayServer": "display",
    "FeedbackSender": "display",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
