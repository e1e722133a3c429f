"""Study discovery and validation: BIDS raw data, fMRIPrep derivatives, participants, phenotype."""

from theramark.study.layout import DEFAULT_SPACE, Run, discover_runs, inherited_metadata
from theramark.study.participants import (
    load_participants,
    load_phenotype,
    session_columns_to_long,
)
from theramark.study.validate import format_problems, validate_study

__all__ = [
    "DEFAULT_SPACE",
    "Run",
    "discover_runs",
    "format_problems",
    "inherited_metadata",
    "load_participants",
    "load_phenotype",
    "session_columns_to_long",
    "validate_study",
]
