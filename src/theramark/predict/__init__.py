"""Response prediction: fold-safe transformers, CPM, nested cross-validation, metrics, early change
and the Personalized Advantage Index.

Everything that learns from data is fitted inside the folds: :class:`ComBatTransformer` and
:class:`ConfoundRegressor` are scikit-learn transformers for a ``Pipeline``; :class:`CPM` is
connectome-based predictive modelling (Shen et al. 2017) as a regressor;
:func:`cross_validate_nested` tunes in the inner loop only; :func:`permutation_test_nested` reruns
the whole nested procedure; :func:`personalized_advantage` gives out-of-fold counterfactual
predictions under every arm (DeRubeis et al. 2014). The group-level analysis is
:mod:`theramark.predict.pipeline` (``[predict]`` in study.toml).

The names below are imported on first use, so ``import theramark.predict`` stays light.
"""

from __future__ import annotations

from theramark._lazy import lazy_exports

_EXPORTS = {
    "ComBatTransformer": "transformers",
    "ConfoundRegressor": "transformers",
    "CPM": "cpm",
    "cpm_permutation_test": "cpm",
    "CPMPermutationResult": "cpm",
    "cross_validate_nested": "validation",
    "make_model": "validation",
    "make_outer_splits": "validation",
    "permutation_test_nested": "validation",
    "NestedCVResult": "validation",
    "PermutationResult": "validation",
    "compute_metrics": "metrics",
    "bootstrap_metrics": "metrics",
    "calibration_slope_intercept": "metrics",
    "reliability_curve": "metrics",
    "corrected_resampled_ttest": "compare",
    "compare_models": "compare",
    "early_change_features": "early_change",
    "treatment_outcomes": "early_change",
    "compare_early_change": "early_change",
    "personalized_advantage": "pai",
    "pai_summary": "pai",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
