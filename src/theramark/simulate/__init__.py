"""Realistic synthetic psychotherapy fMRI studies with planted, documented effects.

:func:`simulate_study` writes a BIDS 1.9 dataset (raw BOLD, MID events, phenotype item tables) with
fMRIPrep-style derivatives in MNI152NLin2009cAsym space and ``sourcedata/ground_truth.json``, which
lists every planted effect with its size, location and feature name.
"""

from theramark.simulate.study import simulate_study

__all__ = ["simulate_study"]
