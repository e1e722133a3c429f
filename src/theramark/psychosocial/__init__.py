"""Psychosocial pathways to anhedonia: mediation, moderation, breakpoints, networks and EMA.

Every function takes a tidy DataFrame and column names and returns a tidy DataFrame (pingouin's
habit), with what was dropped or coded stated in ``attrs["note"]``.

- :func:`mediation`: PROCESS models 4 (parallel), 6 (serial), 7, 14 and 58 (moderated mediation),
  vectorized bootstrap of indirect effects.
- :func:`moderation`: PROCESS model 1, simple slopes, Johnson–Neyman regions.
- :func:`breakpoint`: segmented regression with a global-optimum breakpoint, its SE and Davies' test.
- :func:`ebicglasso`, :func:`centrality` (and stability / comparison tools): regularized partial
  correlation networks, as qgraph / bootnet / networktools.
- :func:`ema_multilevel`, :func:`ema_compliance`, :func:`lag_within_day`,
  :func:`person_mean_center`: momentary data.
"""

from theramark.psychosocial.breakpoint import breakpoint, davies_test
from theramark.psychosocial.ema import (
    ema_compliance,
    ema_multilevel,
    lag_within_day,
    person_mean_center,
)
from theramark.psychosocial.mediation import mediation
from theramark.psychosocial.moderation import johnson_neyman_regions, moderation
from theramark.psychosocial.network import centrality, ebicglasso

__all__ = [
    "breakpoint",
    "centrality",
    "davies_test",
    "ebicglasso",
    "ema_compliance",
    "ema_multilevel",
    "johnson_neyman_regions",
    "lag_within_day",
    "mediation",
    "moderation",
    "person_mean_center",
]

from theramark.psychosocial.network_compare import network_comparison_test  # noqa: E402
from theramark.psychosocial.network_stability import (  # noqa: E402
    bootstrap_edges,
    case_drop_stability,
)

__all__ += ["bootstrap_edges", "case_drop_stability", "network_comparison_test"]
