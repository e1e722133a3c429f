"""Statistical cores shared by the analyses: one least-squares engine.

See :mod:`theramark.stats.least_squares`.
"""

from theramark.stats.least_squares import (
    Contrast,
    LeastSquaresFit,
    Projection,
    ols,
    rank_tolerance,
    solve_normal_equations,
)

__all__ = ["Contrast", "LeastSquaresFit", "Projection", "ols", "rank_tolerance",
           "solve_normal_equations"]
