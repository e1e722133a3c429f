"""The study configuration (``study.toml``): one schema, checked when the file is read.

Every table of the file, every key, its type, its default, its allowed values and a one-line
description are declared once, in :data:`SCHEMA`. :func:`load_config` checks a whole file against
it (an unknown table or key at any depth, a value of the wrong type or outside the allowed values
is an error naming the file, the dotted key and the nearest valid key); :func:`section` gives one
table with the schema defaults filled in; :func:`format_toml` writes a resolved configuration back
as commented TOML (``theramark config show`` and ``config init``) that :func:`load_config` reads
again.

Types are Python type expressions: ``int``, ``float`` (an integer is accepted and becomes a
float), ``str``, ``bool`` (not an integer), ``list[str]``, ``dict[str, str]`` (a mapping whose keys
the user names, e.g. ``[psychosocial] variables``: its values are checked, its keys are free) and
unions with ``None`` for keys that may be left unset. TOML has no null: a key whose default is
``None`` is simply left out of the file.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import os
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from theramark import registry as _registry
from theramark.errors import BadInputError

__all__ = [
    "CONNECTIVITY_MEASURES",
    "FEATURE_MEASURES",
    "RESERVED_TABLES",
    "SCHEMA",
    "Key",
    "Table",
    "defaults",
    "format_toml",
    "load_config",
    "resolve",
    "section",
    "validate",
]

#: Measures the participant level can compute on rest runs (``[connectivity] measures``), by
#: their one name in :data:`theramark.registry.MEASURES`.
CONNECTIVITY_MEASURES: tuple[str, ...] = _registry.CONNECTIVITY_MEASURES
#: Feature measures group analyses can model (``[longitudinal] measures`` and ``nbs_measure``).
FEATURE_MEASURES: tuple[str, ...] = _registry.MODELLED_MEASURES

#: Tables reserved for stages this version does not implement: declaring one is an error.
RESERVED_TABLES: tuple[str, ...] = ("inference", "features", "group")

# Vocabularies of the participant level (theramark.imaging.denoise / rois, nilearn's GLM); a test
# checks they equal the modules' own.
_DENOISE_PRESETS = ("simple", "scrubbing", "compcor", "ica_aroma")
_CONFOUND_COMPONENTS = ("motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma",
                        "scrub", "non_steady_state")
_EXPANSIONS = ("basic", "power2", "derivatives", "full")
_COMPCOR = ("anat_combined", "anat_separated", "temporal", "temporal_anat_combined",
            "temporal_anat_separated")
_ROI_SETS = ("literature", "power264", "dosenbach160", "seitzman300")
_HRF_MODELS = ("glover", "glover + derivative", "glover + derivative + dispersion",
               "spm", "spm + derivative", "spm + derivative + dispersion")
_NOISE_MODEL = r"ols|ar[1-9][0-9]*"
# Vocabularies of the psychosocial stage (theramark.psychosocial.mediation).
_PROCESS_MODELS = (4, 6, 7, 14, 58)
_CI_METHODS = ("percentile", "bias-corrected")

#: Keys that were replaced by a key of another name: (table, key) → what to write instead.
_RENAMED = {("psychosocial", "seed"): "[study] random_state"}


@dataclass(frozen=True)
class Key:
    """One setting of study.toml.

    Parameters
    ----------
    name : str
        The key as written in the file.
    type : type expression
        ``int``, ``float``, ``str``, ``bool``, ``list[X]``, ``dict[str, X]`` or a union of these
        and ``None``.
    default : object
        The value used when the file does not set the key.
    description : str
        One line for ``config show`` and ``config init``.
    choices : tuple, optional
        Allowed values of a scalar value (checked on values of the choices' own kind, so that
        ``n_compcor`` may be an integer or ``"all"``).
    items : tuple, optional
        Allowed items of a list value.
    pattern : str, optional
        Regular expression a string value must match in full.
    """

    name: str
    type: Any
    default: Any
    description: str
    choices: tuple | None = None
    items: tuple | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of study.toml: keys and nested tables.

    Parameters
    ----------
    name : str
        The table's own name (``mediation`` for ``[psychosocial.mediation]``).
    description : str
        One line for ``config show`` and ``config init``.
    members : tuple of Key or Table
        Keys and nested tables, in the order they are written.
    optional : bool
        A nested table that is absent (``None``) unless the file declares it; when declared, its
        keys take their defaults like any table's.
    """

    name: str
    description: str
    members: tuple[Key | Table, ...]
    optional: bool = False

    def member(self, name: str) -> Key | Table | None:
        """The key or nested table called ``name``, or ``None``."""
        for member in self.members:
            if member.name == name:
                return member
        return None


_EMPTY_X = "label of a [psychosocial] variable; empty: not declared, the analysis is skipped"

#: The schema of study.toml: every table, in the order ``config show`` writes them.
SCHEMA: dict[str, Table] = {table.name: table for table in (
    Table("study", "the study design: seeds, group and session labels, the comparison arm", (
        Key("random_state", int, 0,
            "one seed for every resampling step: permutations, bootstraps"),
        Key("title", str, "theramark report", "title of the HTML report"),
        Key("group_column", str, "group", "participants.tsv column holding each participant's group"),
        Key("site_column", str, "site", "participants.tsv column holding the scanning site"),
        Key("groups", list[str], [], "group labels in display order; empty: inferred from participants.tsv"),
        Key("sessions", list[str], [], "session labels in visit order; empty: inferred from the dataset"),
        Key("baseline", str, "", "session change is measured from; empty: the first session"),
        Key("endpoint", str, "", "session change is measured to; empty: the last session"),
        Key("reference_group", str, "",
            "the arm each therapy is compared with (waitlist, treatment as usual...); empty: "
            "inferred from the group names, none if nothing matches"),
        Key("control_group", str, "",
            "healthy controls, for normalization; empty: inferred from the group names"),
    )),
    Table("participant", "participant level: which runs are processed", (
        Key("space", str, "MNI152NLin2009cAsym", "template space of the fMRIPrep outputs to use"),
        Key("tasks", list[str], [], "process only these tasks; empty: every task"),
        Key("rest_tasks", list[str], ["rest"],
            "tasks analysed for connectivity (besides any task without an events file)"),
        Key("resume", bool, True, "skip runs whose outputs exist with the same parameters"),
    )),
    Table("denoise", "nuisance regression of rest runs (nilearn load_confounds_strategy presets)", (
        Key("strategy", str | list[str], "simple",
            "a preset name, or a list of confound components", choices=_DENOISE_PRESETS,
            items=_CONFOUND_COMPONENTS),
        Key("motion", str | None, None, "expansion of the 6 motion parameters; unset: the preset's",
            choices=_EXPANSIONS),
        Key("wm_csf", str | None, None, "expansion of the WM and CSF signals; unset: the preset's",
            choices=_EXPANSIONS),
        Key("global_signal", str | None, None,
            "expansion of the global signal (adds global signal regression); unset: none",
            choices=_EXPANSIONS),
        Key("compcor", str | None, None, "CompCor variant; unset: the preset's", choices=_COMPCOR),
        Key("n_compcor", int | str | None, None,
            'number of CompCor components, or "all"; unset: the preset\'s', choices=("all",)),
        Key("scrub", int | None, None,
            "censor segments shorter than this many volumes between outliers; unset: the preset's"),
        Key("fd_threshold", float | None, None,
            "framewise displacement (mm) above which a volume is censored; unset: the preset's"),
        Key("std_dvars_threshold", float | None, None,
            "standardized DVARS above which a volume is censored; unset: the preset's"),
        Key("detrend", bool, True, "remove linear trends from signals and confounds"),
        Key("standardize", str | bool | None, "zscore_sample",
            "standardization of the cleaned signals; false: none",
            choices=("zscore_sample", "psc", False)),
        Key("high_pass", float | None, None,
            "high-pass cutoff (Hz); unset: the strategy's cosine regressors do the high-pass"),
        Key("low_pass", float | None, None, "low-pass cutoff (Hz), e.g. 0.08; unset: none"),
    )),
    Table("qc", "exclusion rules of runs (Parkes et al. 2018, lenient; a run violating any is excluded)", (
        Key("fd_threshold", float | None, 0.2,
            "FD (mm) counted by max_percent_fd_over_threshold (Parkes et al. 2018: 0.2)"),
        Key("max_mean_fd", float | None, 0.55, "highest mean FD (mm) (Parkes et al. 2018: 0.55)"),
        Key("max_percent_fd_over_threshold", float | None, 20.0,
            "highest % of volumes with FD above fd_threshold (Parkes et al. 2018: 20)"),
        Key("max_fd", float | None, 5.0, "highest FD (mm) of any volume (Parkes et al. 2018: 5)"),
        Key("max_percent_censored", float | None, 20.0, "highest % of volumes censored"),
        Key("min_minutes_kept", float | None, 4.0,
            "fewest minutes of data left after censoring (cf. Power et al. 2014: 5)"),
    )),
    Table("rois", "regions whose signals are extracted", (
        Key("roiset", str, "literature",
            "named ROI set: literature (31 regions of the depression literature), power264, "
            "dosenbach160 or seitzman300", choices=_ROI_SETS),
        Table("atlas", "an atlas of your own, used instead of roiset: image + labels, or a table "
              "of spheres (paths relative to this file)", (
                  Key("image", str, "", "labels image (NIfTI) of the atlas"),
                  Key("labels", str, "", "region names of the labels image, one per line"),
                  Key("table", str, "", "TSV of spheres with columns name, x, y, z (MNI mm)"),
                  Key("name", str, "", "name of the atlas in file names; empty: from the file"),
              ), optional=True),
        Key("radius_mm", float | None, None, "sphere radius (mm) of every ROI; unset: the set's own"),
        Key("on_empty", str, "error",
            "a region with no voxel in a run's mask: error, or drop it (listed in the QC sidecar)",
            choices=("error", "drop")),
    )),
    Table("connectivity", "static and dynamic functional connectivity of rest runs", (
        Key("measures", list[str], list(CONNECTIVITY_MEASURES), "connectivity measures computed",
            items=CONNECTIVITY_MEASURES),
        Key("window_s", float, 60.0,
            "sliding-window length (s) of dynamic FC (30-60 s tracks changes; Leonardi & Van De "
            "Ville 2015 ask >= 1/f_min of the band)"),
        Key("step_s", float | None, None, "sliding-window step (s); unset: one volume"),
        Key("taper", str, "rectangular",
            "window shape: rectangular, or gaussian (Allen et al. 2014, sigma = 3 volumes)",
            choices=("rectangular", "gaussian")),
        Key("write_windows", bool, True, "write the windowed connectivity matrices"),
    )),
    Table("glm", "first-level GLM of task runs (nilearn FirstLevelModel semantics)", (
        Key("contrasts", dict[str, list[str] | str], {},
            'task -> contrasts, e.g. {mid = ["gain_anticipation - neutral_anticipation"]}; '
            "tasks not named use the built-in ones (MID)"),
        Key("hrf_model", str, "glover", "haemodynamic response model", choices=_HRF_MODELS),
        Key("drift_model", str | None, "cosine", "drift regressors of the design (up to high_pass)",
            choices=("cosine", "polynomial")),
        Key("high_pass", float, 0.01, "high-pass cutoff (Hz) of the cosine drift model"),
        Key("noise_model", str, "ar1", "noise model of the ROI statistics: ar1 (arN) or ols",
            pattern=_NOISE_MODEL),
        Key("strategy", str | list[str], ["motion"],
            "nuisance regressors of the design: a denoise preset or confound components",
            choices=_DENOISE_PRESETS, items=_CONFOUND_COMPONENTS),
        Key("motion", str | None, "basic", "expansion of the motion parameters in the design",
            choices=_EXPANSIONS),
        Key("wm_csf", str | None, None, "expansion of the WM and CSF signals in the design",
            choices=_EXPANSIONS),
        Key("scrub", int | None, None,
            "censor high-motion volumes in the GLM too (minimum segment, volumes); unset: no"),
        Key("maps", bool, True, "write per-run voxel maps of each contrast"),
        Key("maps_noise_model", str, "ols",
            "noise model of the voxel maps (OLS is ~50x cheaper than per-voxel AR(1))",
            pattern=_NOISE_MODEL),
        Key("tasks", list[str], [], "tasks treated as task runs; empty: every task with an events file"),
    )),
    Table("scales", "questionnaire scoring", (
        Key("primary", str, "", "primary outcome instrument; empty: chosen among the instruments found"),
        Key("errors", str, "flag",
            "an invalid answer: raise an error, or flag it and go on (listed in the report)",
            choices=("raise", "flag")),
        Key("scoring", dict[str, str], {"shaps": "continuous"},
            "instrument -> named alternative scoring (SHAPS: continuous 14-56, or original 0-14)"),
        Key("instruments", list[str], [],
            "study-specific instrument JSON files or folders, relative to this file"),
        Key("totals", dict[str, str], {},
            'instrument -> stem of participants.tsv columns holding its total per session, '
            'e.g. {bdi2 = "BDI"} for BDI_ses-pre, BDI_ses-post'),
    )),
    Table("harmonize", "ComBat harmonization of imaging features across sites", (
        Key("enabled", bool, True, "harmonize when there are two sites or more"),
        Key("parametric", bool, True, "parametric empirical Bayes priors (else non-parametric)"),
        Key("empirical_bayes", bool, True, "shrink site effects by empirical Bayes"),
        Key("ref_site", str, "", "site left unchanged, the others mapped onto it; empty: none"),
        Key("fit_on", str, "all", "rows that estimate the site effects",
            choices=("all", "controls", "baseline")),
        Key("longitudinal", bool, True,
            "random intercept per participant (longitudinal ComBat) when sessions repeat"),
        Key("preserve", list[str], ["group", "session", "age", "sex"],
            "covariates whose effects ComBat preserves"),
    )),
    Table("longitudinal", "group x time models, normalization and brain-symptom links", (
        Key("measures", list[str], list(FEATURE_MEASURES), "feature measures modelled",
            items=FEATURE_MEASURES),
        Key("covariates", list[str], [], "covariates of the group x time models"),
        Key("change_covariates", list[str], [], "covariates of the change-score models"),
        Key("method", str, "auto",
            "auto: change scores for complete two-session features, else mixed models",
            choices=("auto", "change", "mixed")),
        Key("n_permutations", int, 5000, "permutations of max-T FWE and NBS; 0: none"),
        Key("chunk_edges", int, 0,
            "features per pass of the max-T permutations (identical results, the memory of one "
            "chunk); 0: all at once"),
        Key("alpha", float, 0.05, "significance level"),
        Key("link_covariates", list[str], [], "covariates of the brain-symptom links"),
        Key("link_instruments", list[str], [],
            "instruments whose change is linked to feature change; empty: the primary instrument"),
        Key("link_method", str, "pearson", "correlation of the brain-symptom links",
            choices=("pearson", "spearman")),
        Key("hypotheses", list[str], [],
            "confirmatory family: feature keys measure|task|feature (e.g. "
            '"pearsoncorrelation|rest|amygdala_L__dacc"), corrected within the family'),
        Key("nbs_threshold", float, 3.0, "t threshold of the network-based statistic; 0: no NBS"),
        Key("nbs_measure", str, "pearsoncorrelation", "feature measure of the NBS",
            choices=FEATURE_MEASURES),
    )),
    Table("psychosocial", "psychosocial analyses on the scored scales", (
        Key("enabled", bool, True, "run the psychosocial analyses"),
        Key("session", str, "", "session of the cross-sectional analyses; empty: the study baseline"),
        Key("groups", list[str], [], "keep only these groups; empty: every group"),
        Key("n_boot", int, 5000, "bootstrap resamples of the mediation intervals"),
        Key("ci_method", str, "percentile", "bootstrap confidence interval", choices=_CI_METHODS),
        Key("variables", dict[str, str], {},
            "label -> source: <instrument>.<score column>, a participants.tsv column, or "
            "<phenotype file stem>.<column>"),
        Table("mediation", "mediation and moderated mediation (Hayes' PROCESS)", (
            Key("x", str, "", f"predictor: {_EMPTY_X}"),
            Key("m", list[str], [], "mediator labels"),
            Key("y", str, "", f"outcome: {_EMPTY_X}"),
            Key("w", str, "", "moderator label of models 7, 14 and 58; empty: none"),
            Key("models", list[int], [4], "PROCESS model numbers", items=_PROCESS_MODELS),
            Key("covariates", list[str], [], "covariate labels"),
        )),
        Table("moderation", "moderation with Johnson-Neyman intervals", (
            Key("x", str, "", f"predictor: {_EMPTY_X}"),
            Key("w", str, "", f"moderator: {_EMPTY_X}"),
            Key("y", str, "", f"outcome: {_EMPTY_X}"),
        )),
        Table("breakpoint", "segmented regression with Davies' test", (
            Key("x", str, "", f"predictor: {_EMPTY_X}"),
            Key("y", str, "", f"outcome: {_EMPTY_X}"),
        )),
        Table("network", "regularized partial-correlation network (EBICglasso)", (
            Key("nodes", list[str], [], "node labels; empty: not declared, the network is skipped"),
            Key("gamma", float, 0.5, "EBIC hyperparameter"),
            Key("n_boot", int, 0, "case-drop bootstrap resamples of centrality stability; 0: none"),
        )),
        Table("ema", "multilevel models of ecological momentary assessment", (
            Key("file", str, "ema", "stem of the phenotype file with the EMA prompts (phenotype/<file>.tsv)"),
            Key("x", str, "", "EMA column of the predictor; empty: not declared, EMA is skipped"),
            Key("y", str, "", "EMA column of the outcome; empty: not declared, EMA is skipped"),
            Key("moderator", str, "", "label of a participant-level moderator; empty: none"),
            Key("lag", bool, False, "predict each prompt's outcome from the previous prompt's predictor"),
        )),
    )),
    Table("dynamics", "dynamic-FC states of the rest runs and temporal precedence", (
        Key("enabled", bool, True, "fit dynamic-FC states when the study has rest time series"),
        Key("tasks", list[str], ["rest"], "tasks whose ROI time series are clustered"),
        Key("method", str, "kmeans",
            "windowed FC + k-means (Allen et al. 2014) or LEiDA (Cabral et al. 2017)",
            choices=("kmeans", "leida")),
        Key("n_states", int, 0,
            "number of states k; 0: not declared (only the k_selection table is made)"),
        Key("k_range", list[int], [2, 3, 4, 5, 6, 7, 8],
            "numbers of states compared in the k_selection table; empty: none"),
        Key("window_s", float, 60.0, "sliding-window length (s) of the k-means states"),
        Key("step_volumes", int, 1, "sliding-window step (volumes)"),
        Key("distance", str, "euclidean",
            "k-means distance: euclidean, or L1 (cityblock) as Allen et al. (2014) used for FC "
            "vectors (several times slower)", choices=("euclidean", "cityblock")),
        Key("rois", list[str], [], "ROIs whose connectivity defines the states; empty: every ROI"),
        Key("n_surrogates", int, 19,
            "stationary surrogates per run for the null of dFC variability; 0: none"),
        Key("surrogate_method", str, "phase",
            "phase randomisation (same spectrum and covariance) or a multivariate autoregressive "
            "model (Liegeois et al. 2017)", choices=("phase", "mvar")),
        Table("precedence", "cross-lagged panel models: does brain change come before symptom change?", (
            Key("brain", str, "",
                "feature key measure|task|feature of the brain variable; empty: not declared, "
                "skipped"),
            Key("symptom", str, "", "instrument whose total is the symptom variable (e.g. hamd17)"),
            Key("sessions", list[str], [], "sessions in time order; empty: the study's sessions"),
        )),
    )),
    Table("predict", "response prediction: who responds, and to which therapy (off unless enabled)", (
        Key("enabled", bool, False,
            "run the response-prediction analysis (nested cross-validation, permutation test, PAI)"),
        Key("instrument", str, "", "outcome instrument; empty: the study's primary instrument"),
        Key("outcome", str, "response",
            "what is predicted: response and remission (binary), percent_change or change "
            "(continuous, endpoint - baseline)",
            choices=("response", "remission", "percent_change", "change")),
        Key("reduction", float, 0.5, "fractional reduction from baseline that counts as response"),
        Key("remission_threshold", float | None, None,
            "endpoint total at or below which is remission; unset: the instrument's cut-off"),
        Key("baseline", str, "", "session of the predictors and of the outcome's start; empty: the "
            "study baseline"),
        Key("early", str, "",
            "early (mid-treatment) session of the early-change features; empty: the session after "
            "baseline, if it is not the endpoint"),
        Key("endpoint", str, "", "session of the outcome; empty: the study endpoint"),
        Key("groups", list[str], [], "arms whose participants are modelled; empty: every patient arm"),
        Key("imaging", list[str], [],
            'baseline imaging predictors: feature keys, key prefixes or globs (e.g. '
            '"pearsoncorrelation|rest"); empty: none'),
        Key("clinical", list[str], ["baseline_total"],
            "clinical predictors: baseline_total (the outcome instrument's), an instrument's "
            "baseline total (<instrument>_total) or participants.tsv columns (age, sex...)"),
        Key("models", list[str], ["elasticnet"],
            "models: elastic net, linear SVM, CPM (continuous outcomes, imaging only)",
            items=("elasticnet", "svm", "cpm")),
        Key("cv", str, "stratified",
            "outer cross-validation: repeated stratified k-fold, repeated k-fold, or leave one site out",
            choices=("stratified", "kfold", "site")),
        Key("n_splits", int, 5, "outer folds"),
        Key("n_repeats", int, 10, "repeats of the outer k-fold"),
        Key("inner_splits", int, 5, "folds of the inner (hyperparameter) loop"),
        Key("tune", bool, True,
            "tune hyperparameters in the inner loop; false: the models' fixed defaults (faster)"),
        Key("n_permutations", int, 200,
            "permutations of the whole nested procedure for the primary model (>= 1000 for a "
            "publication); 0: none"),
        Key("n_boot", int, 2000, "bootstrap resamples (over participants) of the metric CIs"),
        Key("harmonize", bool, True, "ComBat inside the folds when there are two sites or more"),
        Key("harmonize_covariates", list[str], ["age", "sex"],
            "participants.tsv columns whose effects ComBat preserves (those present are used)"),
        Key("unseen_site", str, "error",
            "a test site absent from the training rows: refuse, or use the pooled fit",
            choices=("error", "pooled")),
        Key("early_change", bool, True, "compare baseline-only with baseline + early-change features"),
        Key("pai", bool, True, "Personalized Advantage Index between the therapy arms"),
        Key("pai_arms", list[str], [], "arms compared by the PAI; empty: the therapy arms"),
        Key("pai_outcome", str, "change", "continuous outcome of the PAI",
            choices=("change", "percent_change")),
        Key("pai_features", list[str], [],
            "predictor columns of the per-arm models; empty: the clinical predictors"),
        Key("pai_threshold", float, 3.0,
            "a clinically meaningful advantage, in outcome units (e.g. 3 HAMD-17 points)"),
        Key("lower_is_better", bool, True, "a lower outcome is a better one (a symptom change)"),
        Key("pai_n_boot", int, 1000, "bootstrap resamples of the indicated-arm difference"),
        Key("min_arm_size", int, 20, "arms smaller than this are flagged in a prominent warning"),
    )),
    Table("report", "the HTML report", (
        Key("max_rows", int, 50, "rows of a table shown before it folds"),
    )),
    Table("realtime", "real-time neurofeedback: per-volume realignment, ROI signals, feedback", (
        Key("reference", str, "first",
            'volume every other is realigned to: "first" (the run\'s first volume) or a NIfTI path'),
        Key("realign", bool, True, "realign each volume to the reference (six rigid parameters)"),
        Key("downsample", bool, True, "start the realignment on a 2x downsampled volume"),
        Key("max_iterations", int, 12, "Gauss-Newton iterations of the realignment, per resolution"),
        Key("fd_radius_mm", float, 50.0, "head radius (mm) of framewise displacement (Power et al. 2012)"),
        Key("drift_model", str, "cosine", "drift regressors of the cumulative GLM",
            choices=("cosine", "polynomial", "none")),
        Key("high_pass", float, 0.008, "high-pass cutoff (Hz) of the cosine drift model"),
        Key("drift_order", int, 2, "highest polynomial order of the polynomial drift model"),
        Key("motion_regressors", bool, True, "the six realignment parameters as GLM nuisance regressors"),
        Key("hrf_model", str, "glover", "haemodynamic response of the task regressors",
            choices=("glover", "spm")),
        Key("kalman", bool, True, "Kalman filter spike removal of the cleaned ROI signals (OpenNFT)"),
        Key("kalman_threshold", float, 0.9,
            "spike threshold of the Kalman filter, in SDs of the signal (Koush et al. 2012: 0.9)"),
        Key("baseline", str, "last_block",
            "baseline of the percent signal change: the most recent baseline block, or every "
            "baseline volume so far", choices=("last_block", "all")),
        Key("baseline_skip_s", float, 4.0,
            "seconds at the start of each baseline block left out of the baseline (the previous "
            "regulate block's haemodynamic response is still decaying)"),
        Key("feedback", str, "roi", "feedback signal: one ROI's PSC, the difference of two ROIs' "
            "PSC, or the correlation of two ROIs", choices=("roi", "difference", "connectivity")),
        Key("feedback_rois", list[str], [],
            "ROI names the feedback uses (one, or two for difference and connectivity); empty: "
            "the first ROI(s) given"),
        Key("feedback_min", float, 0.0, "signal value (PSC %, or r) shown as feedback 0"),
        Key("feedback_max", float, 2.0, "signal value (PSC %, or r) shown as feedback 1; clipped beyond"),
        Key("smoothing", float, 0.5,
            "weight of the newest value in the exponential smoothing of the feedback (1: none)"),
        Key("connectivity", str, "sliding", "correlation of connectivity feedback: sliding window or "
            "exponentially weighted", choices=("sliding", "exponential")),
        Key("window_s", float, 20.0,
            "window (s) of connectivity feedback (exponential: the span of the weights)"),
        Key("protocol", str, "continuous",
            "feedback at every volume, or once at the end of each regulate block",
            choices=("continuous", "intermittent")),
        Key("trial_types", list[str], [],
            "trial types allowed in the protocol besides baseline and regulate"),
        Key("missing_after_s", float | None, None,
            "a volume not complete this long (s) after the next is due is logged missing; unset: "
            "the ingestion default"),
        Key("roiset", str, "", "MNI ROI set of the library (literature, ...); empty: masks only"),
        Key("regions", list[str], [], "regions of roiset used; empty: every region"),
        Key("mni_to_native", str, "",
            "text file with the 4x4 affine mapping MNI mm to the run's native mm (roiset ROIs)"),
        Key("display", bool, False, "serve the feedback display in a browser"),
        Key("port", int, 0, "port of the display (0: any free port)"),
        Key("udp_out", str, "", "HOST:PORT to send each volume's record to over UDP; empty: none"),
        Key("tcp_out", str, "", "HOST:PORT to send each volume's record to over TCP; empty: none"),
    )),
)}


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------


def _arms(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        return typing.get_args(kind)
    return (kind,)


def _conforms(value: Any, kind: Any) -> bool:
    if kind is None or kind is type(None):
        return value is None
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, arm) for arm in typing.get_args(kind))
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list | tuple) and all(_conforms(v, item) for v in value)
    if origin is dict:
        _, item = typing.get_args(kind)
        return isinstance(value, Mapping) and all(
            isinstance(k, str) and _conforms(v, item) for k, v in value.items())
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    raise TypeError(f"unsupported type in the config schema: {kind!r}")


_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


def _type_text(kind: Any, plural: bool = False) -> str:
    """``float | None`` → "a number or unset"; ``list[str]`` → "a list of strings"."""
    if kind is None or kind is type(None):
        return "unset"
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_text(arm, plural) for arm in typing.get_args(kind))
    if origin is list:
        return ("lists" if plural else "a list") + f" of {_type_text(typing.get_args(kind)[0], True)}"
    if origin is dict:
        return ("tables" if plural else "a table") + f" of {_type_text(typing.get_args(kind)[1], True)}"
    return _NAMES[kind][1 if plural else 0]


def _value_text(value: Any) -> str:
    """What a value is, in the words of :func:`_type_text`."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return _NAMES.get(type(value), (type(value).__name__,))[0]


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` (which conforms to ``kind``) with integers made floats where only floats fit."""
    arms = _arms(kind)
    if isinstance(value, int) and not isinstance(value, bool) and float in arms and int not in arms:
        return float(value)
    for arm in arms:
        origin = typing.get_origin(arm)
        if origin is list and isinstance(value, list | tuple) and _conforms(value, arm):
            return [_coerce(v, typing.get_args(arm)[0]) for v in value]
        if origin is dict and isinstance(value, Mapping) and _conforms(value, arm):
            return {k: _coerce(v, typing.get_args(arm)[1]) for k, v in value.items()}
    return copy.deepcopy(value)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _show(value: Any) -> str:
    return _toml_value(value) if _writable(value) else repr(value)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@functools.cache
def _key_paths() -> dict[str, list[str]]:
    """Key name → dotted paths of the tables that have it."""
    found: dict[str, list[str]] = {}

    def walk(table: Table, path: str) -> None:
        for member in table.members:
            found.setdefault(member.name, []).append(path)
            if isinstance(member, Table):
                walk(member, f"{path}.{member.name}")

    for name, table in SCHEMA.items():
        walk(table, name)
    return found


def _unknown_key(path: str, name: str, table: Table) -> str:
    names = [m.name for m in table.members]
    text = f"[{path}] {name}: unknown key"
    hints = []
    if (path, name) in _RENAMED:
        hints.append(f"it was replaced by {_RENAMED[(path, name)]}")
    elsewhere = [p for p in _key_paths().get(name, []) if p != path]
    if elsewhere:
        hints.append(f"`{name}` is a key of " + " and ".join(f"[{p}]" for p in elsewhere))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        hints.append(f"did you mean `{close[0]}`?")
    if hints:
        text += "; " + "; ".join(hints)
    return f"{text} (keys of [{path}]: {', '.join(names)})"


def _check_choices(key: Key, value: Any, where: str) -> list[str]:
    problems = []
    if key.choices is not None and not isinstance(value, list | tuple | Mapping) and value is not None:
        kinds = {_kind_of(c) for c in key.choices}
        if _kind_of(value) in kinds and value not in key.choices:
            shown = ", ".join(_show(c) for c in key.choices)
            text = f"{where} = {_show(value)}: not an allowed value; expected one of {shown}"
            if isinstance(value, str):
                close = difflib.get_close_matches(value, [c for c in key.choices if isinstance(c, str)],
                                                  n=1, cutoff=0.6)
                if close:
                    text += f"; did you mean {_show(close[0])}?"
            problems.append(text)
    if key.items is not None and isinstance(value, list | tuple):
        bad = [v for v in value if v not in key.items]
        if bad:
            problems.append(f"{where}: {', '.join(_show(v) for v in bad)} not allowed; items must be "
                            f"among {', '.join(_show(c) for c in key.items)}")
    if key.pattern is not None and isinstance(value, str) and not re.fullmatch(key.pattern, value):
        problems.append(f"{where} = {_show(value)}: not an allowed value; expected a match of "
                        f"{key.pattern}")
    return problems


def _check_key(key: Key, value: Any, path: str) -> list[str]:
    where = f"[{path}] {key.name}"
    if not _conforms(value, key.type):
        if value is None:
            return [f"{where}: must be set; expected {_type_text(key.type)}"]
        return [f"{where} = {_show(value)}: expected {_type_text(key.type)}, got {_value_text(value)}"]
    return _check_choices(key, value, where)


def _check_table(table: Table, values: Any, path: str) -> list[str]:
    if not isinstance(values, Mapping):
        return [f"[{path}]: must be a table of keys, got {_show(values)}"]
    problems: list[str] = []
    for name, value in values.items():
        member = table.member(name)
        if member is None:
            problems.append(_unknown_key(path, name, table))
        elif isinstance(member, Table):
            problems.extend(_check_table(member, value, f"{path}.{name}"))
        else:
            problems.extend(_check_key(member, value, path))
    return problems


def _check_config(config: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    paths = _key_paths()
    for name, value in config.items():
        if name.startswith("_"):
            continue
        if name in RESERVED_TABLES:
            text = (f"[{name}]: this section is not implemented in this version of theramark; "
                    "remove it")
            keys = value if isinstance(value, Mapping) else {}
            moved = [f"`{key}` is a key of [{paths[key][0]}]" for key in keys if key in paths]
            problems.append("; ".join([text, *moved]))
        elif name in SCHEMA:
            problems.extend(_check_table(SCHEMA[name], value, name))
        elif not isinstance(value, Mapping):
            text = f"{name}: a key outside any table; settings belong in a table"
            if name in paths:
                text += f"; `{name}` is a key of [{paths[name][0]}]"
            problems.append(text)
        else:
            close = difflib.get_close_matches(name, list(SCHEMA), n=1, cutoff=0.6)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            problems.append(f"[{name}]: unknown table{hint} (tables: {', '.join(SCHEMA)})")
    return problems


def _raise(source: str, problems: Sequence[str]) -> None:
    if len(problems) == 1:
        raise BadInputError(f"{source}: {problems[0]}")
    raise BadInputError(f"{source}: {len(problems)} problems in the configuration", problems)


def _source(config: Mapping[str, Any] | None) -> str:
    return str((config or {}).get("_path", {}).get("path", "study.toml"))


def validate(config: Mapping[str, Any] | None, source: str | None = None) -> None:
    """Check a configuration (as :func:`load_config` returns it) against :data:`SCHEMA`.

    Parameters
    ----------
    config : mapping or None
        Table name → table. Keys starting with ``_`` (``_path``) are not settings and are skipped.
    source : str, optional
        The file named in messages; default the config's ``_path`` or ``study.toml``.

    Raises
    ------
    BadInputError
        Listing every unknown table or key (with the nearest valid name), reserved table, value of
        the wrong type and value outside the allowed ones.
    """
    problems = _check_config(config or {})
    if problems:
        _raise(source or _source(config), problems)


def load_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and check a ``study.toml``; ``None`` gives the empty config (all defaults).

    Parameters
    ----------
    path : path or None
        The file.

    Returns
    -------
    dict
        The tables as written in the file, plus ``"_path": {"path": str(path)}`` (relative paths
        in the config are resolved against its folder). Defaults are filled in by
        :func:`section` and :func:`resolve`.

    Raises
    ------
    BadInputError
        If the file is missing or is not valid TOML, or on any problem :func:`validate` finds.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from None
    validate(data, str(path))
    data["_path"] = {"path": str(path)}
    return data


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _resolve_table(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for member in table.members:
        given = values.get(member.name)
        if isinstance(member, Table):
            if given is None:
                resolved[member.name] = None if member.optional else _resolve_table(member, {})
            else:
                resolved[member.name] = _resolve_table(member, given)
        elif member.name not in values:
            resolved[member.name] = copy.deepcopy(member.default)
        else:
            value = _coerce(given, member.type)
            if isinstance(value, dict) and isinstance(member.default, dict):
                value = {**copy.deepcopy(member.default), **value}
            resolved[member.name] = value
    return resolved


def _schema_table(name: str) -> Table:
    if name not in SCHEMA:
        raise KeyError(f"no table [{name}] in the study.toml schema; tables: {', '.join(SCHEMA)}")
    return SCHEMA[name]


def defaults(name: str) -> dict[str, Any]:
    """The default values of the table ``[name]`` (nested tables included; optional ones ``None``).

    Raises
    ------
    KeyError
        If the schema has no such table.
    """
    return _resolve_table(_schema_table(name), {})


def section(config: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """The table ``[name]`` of ``config``, checked and fully resolved.

    Parameters
    ----------
    config : mapping or None
        As :func:`load_config` returns it, or a dict of tables built in Python.
    name : str
        A table of :data:`SCHEMA`.

    Returns
    -------
    dict
        Every key of the table: the user's value where set, the default otherwise. Nested tables
        are resolved key by key; a mapping-valued key (``scoring``, ``variables``) adds the user's
        entries to its default's.

    Raises
    ------
    BadInputError
        If the user's table has an unknown key or a bad value (naming the file).
    KeyError
        If the schema has no table ``name``.
    """
    table = _schema_table(name)
    given = (config or {}).get(name)
    if given is None:
        return _resolve_table(table, {})
    problems = _check_table(table, given, name)
    if problems:
        _raise(_source(config), problems)
    return _resolve_table(table, given)


def resolve(config: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every table of :data:`SCHEMA`, resolved as :func:`section` does, after checking the config."""
    validate(config)
    return {name: _resolve_table(table, (config or {}).get(name) or {})
            for name, table in SCHEMA.items()}


# --------------------------------------------------------------------------------------------
# Writing TOML
# --------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WIDTH = 100


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes; TOML also forbids a raw DEL
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _writable(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, list | tuple):
        return all(_writable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _writable(v) for k, v in value.items())
    return isinstance(value, bool | int | float | str)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _assignment(name: str, value: Any) -> list[str]:
    line = f"{_toml_key(name)} = {_toml_value(value)}"
    if len(line) <= _WIDTH or not isinstance(value, list | tuple) or not value:
        return [line]
    return [f"{_toml_key(name)} = [", *(f"  {_toml_value(v)}," for v in value), "]"]


def _comment(text: str, prefix: str = "# ") -> list[str]:
    return textwrap.wrap(text, width=_WIDTH + 8, initial_indent=prefix, subsequent_indent=prefix,
                         break_on_hyphens=False, break_long_words=False) or [prefix.rstrip()]


def _key_comment(key: Key) -> str:
    text = key.description
    if key.choices is not None:
        text += f" (one of: {', '.join(_toml_value(c) for c in key.choices)})"
    if key.items is not None:
        text += f" (items among: {', '.join(_toml_value(c) for c in key.items)})"
    return text


def _write_table(table: Table, values: Mapping[str, Any] | None, path: str, comments: bool,
                 notes: Mapping[str, str]) -> Iterator[str]:
    """Lines of ``[path]``; ``values`` None writes the (optional) table commented out."""
    absent = values is None
    if absent and not comments:
        return
    out = "# " if absent else ""
    yield ""
    if comments:
        yield from _comment(f"{table.description}" + (" (not set)" if absent else ""))
        if path in notes:
            yield from _comment(notes[path])
    yield f"{out}[{path}]"
    values = values or {}
    deferred: list[tuple[Key, Mapping[str, Any]]] = []
    for member in table.members:
        if isinstance(member, Table) or (not absent and member.name not in values):
            continue
        value = member.default if absent else values[member.name]
        dotted = f"{path}.{member.name}"
        if isinstance(value, Mapping) and len(_toml_value(value)) > _WIDTH - len(member.name) - 3:
            deferred.append((member, value))
            continue
        if comments:
            yield from _comment(_key_comment(member))
            if dotted in notes:
                yield from _comment(notes[dotted])
        if value is None:
            if comments:
                yield f"# {member.name} = <{_type_text(member.type).replace(' or unset', '')}>"
            continue
        yield from (out + line for line in _assignment(member.name, value))
    for key, value in deferred:
        yield ""
        if comments:
            yield from _comment(_key_comment(key))
            if f"{path}.{key.name}" in notes:
                yield from _comment(notes[f"{path}.{key.name}"])
        yield f"{out}[{path}.{_toml_key(key.name)}]"
        for name, item in value.items():
            yield from (out + line for line in _assignment(name, item))
    for member in table.members:
        if isinstance(member, Table):
            nested = None if absent else values.get(member.name)
            if nested is None and not member.optional and not absent:
                nested = _resolve_table(member, {})
            yield from _write_table(member, nested, f"{path}.{member.name}", comments, notes)


def format_toml(
    resolved: Mapping[str, Any],
    comments: bool = True,
    notes: Mapping[str, str] | None = None,
    header: str | None = None,
) -> str:
    """A configuration as TOML that :func:`load_config` reads back to the same values.

    Parameters
    ----------
    resolved : mapping
        Table name → table, typically :func:`resolve`'s output. Tables are written in schema
        order; tables and keys absent from ``resolved`` are left out, keys whose value is ``None``
        are written as comments (TOML has no null).
    comments : bool
        Write each table's and each key's description (and allowed values) as comments.
    notes : mapping, optional
        Dotted table or key path (``"study"``, ``"study.groups"``) → an extra comment written
        below its description, e.g. where an inferred value came from.
    header : str, optional
        Comment lines written first.

    Returns
    -------
    str
    """
    notes = notes or {}
    lines: list[str] = []
    if header:
        for paragraph in header.splitlines():
            lines.extend(_comment(paragraph))
    for name, table in SCHEMA.items():
        if name in resolved and resolved[name] is not None:
            lines.extend(_write_table(table, resolved[name], name, comments, notes))
    return "\n".join(lines).lstrip("\n") + "\n"
