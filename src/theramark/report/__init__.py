"""HTML report: built from the group-level result files, assembled into one self-contained file.

Each analysis has a builder in ``theramark.report.sections.<stage>`` that reads its result folder
(:class:`theramark.results.AnalysisFiles`) and draws :class:`Section` objects;
:func:`build_report` assembles them. The report computes no statistic.
"""

from theramark.report.build import build_report
from theramark.report.document import Figure, Report, Section, Table, Text

__all__ = ["Figure", "Report", "Section", "Table", "Text", "build_report"]
