"""HTML report: sections built from result tables, assembled into one self-contained file.

Each stage has a builder in ``theramark.report.sections.<stage>`` that turns its result tables into
:class:`Section` objects; the report computes nothing itself.
"""

from theramark.report.document import Figure, Report, Section, Table, Text

__all__ = ["Figure", "Report", "Section", "Table", "Text"]
