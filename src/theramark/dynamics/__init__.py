"""Brain dynamics: dynamic-FC states, their metrics and nulls, and temporal precedence.

:func:`fit_states` clusters the windowed connectivity of many runs (Allen et al. 2014) or the
leading eigenvectors of their phase coherence (LEiDA, Cabral et al. 2017) into states common to
all of them; :func:`state_metrics` gives each run's fractional occupancy, dwell times, transitions
and switching rate; :func:`select_n_states` compares numbers of states; :func:`match_states` keeps
a state's label across fits; :func:`phase_randomize`, :func:`mvar_surrogates` and
:func:`surrogate_test` give the stationary null (Liégeois et al. 2017); :func:`cross_lagged` fits
(random-intercept) cross-lagged panel models (Hamaker et al. 2015). The group-level analyses are
in :mod:`theramark.dynamics.pipeline` (``[dynamics]`` in study.toml; ``docs/dynamics.md``).

The names below are imported on first use, so ``import theramark.dynamics`` stays light.
"""

from __future__ import annotations

from theramark._lazy import lazy_exports

_EXPORTS = {
    "fit_states": "states",
    "StateFit": "states",
    "match_states": "states",
    "state_metrics": "metrics",
    "select_n_states": "selection",
    "phase_randomize": "surrogates",
    "mvar_surrogates": "surrogates",
    "surrogate_test": "surrogates",
    "window_fd": "surrogates",
    "motion_state_association": "surrogates",
    "cross_lagged": "cross_lagged",
    "fit_cross_lagged": "cross_lagged",
    "CrossLaggedResult": "cross_lagged",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
