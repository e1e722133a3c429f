"""theramark: fMRI markers of psychotherapy response in depression.

From a BIDS dataset with fMRIPrep derivatives and questionnaire items, theramark scores the scales,
extracts quality-controlled imaging features, tests treatment x time effects with correct
multiple-comparison control, runs the psychosocial analyses and writes a report a clinician can read.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
