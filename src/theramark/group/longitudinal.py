"""Group × time models: linear mixed models, change-score contrasts, marginal means, effect sizes.

Two entry points:

- :func:`mixed_model` / :func:`fit_mixed_model` fit one random-intercept linear mixed model
  ``value ~ fixed effects + (1 | participant)`` by REML, as lme4's ``lmer`` does, with Satterthwaite
  degrees of freedom for every test (as lmerTest reports them).
- :func:`group_time_effects` runs the group × session model for every feature of a wide table at
  once (mass-univariate): the contrast of each therapy arm against the reference arm (waitlist) in
  the change from the baseline session, with its 95% CI, p-value and Hedges' g of the change scores.

Exactness of the vectorized paths
---------------------------------
For two sessions and complete pairs, the within-participant terms of
``value ~ group * session + covariates + (1 | participant)`` (``session`` and ``group:session``)
are estimated from the change scores alone: with compound-symmetric errors the participant mean and
the participant difference are independent, and every column of the between-participant part of the
design is free to absorb the means. So the ``group:session`` estimates equal the OLS coefficients of
``change ~ group`` (plus, for covariates listed in ``change_covariates``, i.e. modelled as
``covariate * session``, those covariates), with the same standard errors, ``t`` and
``n_participants - rank`` degrees of freedom, whenever the REML estimate of the participant variance
is positive (the usual case). The closed form is the unconstrained compound-symmetry model; lme4
constrains the participant variance to be non-negative, so the two differ only when the sessions are
negatively correlated. Time-invariant covariates entered as main effects drop out of the interaction
exactly. Otherwise (missing sessions, more than two sessions, time-varying covariates) every feature
is fitted by REML, vectorized over the features that share one missing-data pattern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import AnalysisError, BadInputError
from theramark.group import _reml
from theramark.stats import ols
from theramark.tables import check_columns

_RANDOM_TERM = re.compile(r"\+?\s*\(\s*1\s*\|\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\)")


def _split_formula(formula: str, groups: str | None) -> tuple[str, str]:
    """Remove lme4-style ``(1 | g)`` terms; return the fixed-effects formula and the grouping column."""
    found = _RANDOM_TERM.findall(formula)
    fixed = _RANDOM_TERM.sub("", formula).strip()
    if len(set(found)) > 1:
        raise BadInputError(
            f"formula {formula!r}: only one random intercept is supported, got {sorted(set(found))}"
        )
    if found and groups is not None and found[0] != groups:
        raise BadInputError(
            f"formula {formula!r} names the random intercept '{found[0]}' but groups='{groups}'"
        )
    groups = groups or (found[0] if found else None)
    if groups is None:
        raise BadInputError(f"formula {formula!r}: name the participant column with groups=...")
    if "|" in fixed or "~" not in fixed:
        raise BadInputError(
            f"formula {formula!r}: expected 'response ~ terms [+ (1 | {groups})]'"
        )
    return fixed, groups


@dataclass
class MixedModelResult:
    """A fitted random-intercept linear mixed model (REML).

    Attributes
    ----------
    fixed_effects : DataFrame
        One row per fixed-effect term: ``term, estimate, se, df, statistic, p, ci_low, ci_high``
        (``statistic`` is the Wald t; ``df`` Satterthwaite; ``p`` two-sided from t(df)).
    participant_sd, residual_sd : float
        Standard deviations of the random intercept and of the residual.
    reml_criterion : float
        lme4's ``REMLcrit`` (-2 restricted log-likelihood) at the optimum.
    n_obs, n_groups : int
    """

    fixed_effects: pd.DataFrame
    participant_sd: float
    residual_sd: float
    reml_criterion: float
    n_obs: int
    n_groups: int
    _fit: _reml.RemlFit = field(repr=False)
    _design_info: object = field(repr=False)
    _data: pd.DataFrame = field(repr=False)
    _confidence: float = 0.95

    @property
    def terms(self) -> list[str]:
        return list(self.fixed_effects["term"])

    def contrast(self, weights: np.ndarray | pd.DataFrame, names: Sequence[str] | None = None
                 ) -> pd.DataFrame:
        """Linear combinations ``L beta`` with Satterthwaite t tests.

        Parameters
        ----------
        weights : array (k, n_terms) or DataFrame with the term names as columns
        names : sequence of str, optional
            Labels of the ``k`` contrasts.
        """
        if isinstance(weights, pd.DataFrame):
            unknown = set(weights.columns) - set(self.terms)
            if unknown:
                raise BadInputError(f"contrast names unknown terms {sorted(unknown)}; "
                                    f"terms are {self.terms}")
            names = list(weights.index) if names is None else names
            weights = weights.reindex(columns=self.terms, fill_value=0.0).to_numpy(float)
        weights = np.atleast_2d(np.asarray(weights, float))
        if weights.shape[1] != len(self.terms):
            raise BadInputError(f"contrast has {weights.shape[1]} columns, expected "
                                f"{len(self.terms)} (one per term: {self.terms})")
        names = list(names) if names is not None else [f"c{i}" for i in range(len(weights))]
        estimate = weights @ self._fit.beta[0]
        var = np.einsum("kp,pq,kq->k", weights, self._fit.cov_beta[0], weights)
        df = _reml.satterthwaite_df(self._fit, weights)[0]
        return _t_table(names, estimate, np.sqrt(var), df, self._confidence, label="contrast")

    def emmeans(self, specs: Sequence[str]) -> pd.DataFrame:
        """Estimated marginal means over the levels of the factors ``specs`` (emmeans' defaults).

        Numeric covariates are held at their mean; factors not in ``specs`` are averaged with equal
        weights over their levels.
        """
        import patsy

        data = self._data
        factor_levels = {}
        numeric_means = {}
        for factor in self._design_info.factor_infos:
            info = self._design_info.factor_infos[factor]
            name = factor.name()
            if info.type == "categorical":
                factor_levels[name] = list(info.categories)
            elif name in data:
                numeric_means[name] = float(data[name].mean())
            else:
                raise BadInputError(f"emmeans: covariate term '{name}' is not a plain column; "
                                    "add the transformed variable as a column")
        unknown = [s for s in specs if s not in factor_levels]
        if unknown:
            raise BadInputError(f"emmeans: {unknown} are not factors of the model "
                                f"(factors: {sorted(factor_levels)})")
        grid = pd.MultiIndex.from_product(list(factor_levels.values()),
                                          names=list(factor_levels)).to_frame(index=False)
        for name, value in numeric_means.items():
            grid[name] = value
        for name in factor_levels:
            original = data[name] if name in data else None
            if original is not None and isinstance(original.dtype, pd.CategoricalDtype):
                grid[name] = pd.Categorical(grid[name], categories=original.cat.categories)
        matrix = np.asarray(patsy.build_design_matrices([self._design_info], grid)[0])
        grid_keys = grid[list(specs)].astype(str).agg("|".join, axis=1)
        rows, labels = [], []
        for key, index in grid.groupby(grid_keys, sort=False).groups.items():
            rows.append(matrix[np.asarray(grid.index.get_indexer(index))].mean(axis=0))
            labels.append(key)
        weights = np.vstack(rows)
        table = self.contrast(weights, names=labels).drop(columns=["statistic", "p"])
        levels = pd.DataFrame([lab.split("|") for lab in labels], columns=list(specs))
        table = pd.concat([levels, table.drop(columns=["contrast"])], axis=1)
        return table.rename(columns={"estimate": "emmean"})


def _t_table(names, estimate, se, df, confidence, label="term") -> pd.DataFrame:
    statistic = estimate / se
    p = 2 * stats.t.sf(np.abs(statistic), df)
    crit = stats.t.ppf(0.5 + confidence / 2, df)
    return pd.DataFrame({
        label: list(names), "estimate": estimate, "se": se, "df": df, "statistic": statistic,
        "p": p, "ci_low": estimate - crit * se, "ci_high": estimate + crit * se,
    })


def fit_mixed_model(
    table: pd.DataFrame, formula: str, groups: str | None = None, confidence: float = 0.95
) -> MixedModelResult:
    """Fit ``formula`` with a random intercept per level of ``groups`` by REML (as lme4).

    Parameters
    ----------
    table : DataFrame
        Long table, one row per observation (participant × session). Rows with a missing value in
        any variable of the model are dropped (lme4's ``na.omit``).
    formula : str
        Fixed effects in patsy/R syntax (``"bdi ~ group * session + age"``); an lme4-style
        ``+ (1 | participant)`` term is accepted and must name ``groups``. Factor reference levels
        are the first category of a pandas ``Categorical`` column, else the sorted first level
        (``C(group, Treatment('waitlist'))`` also works).
    groups : str
        Column identifying the participant (the random-intercept grouping).
    confidence : float
        Level of the confidence intervals.

    Returns
    -------
    MixedModelResult
        ``.fixed_effects`` has ``term, estimate, se, df, statistic, p, ci_low, ci_high``. Estimates,
        standard errors and t statistics are lme4's (REML); ``df`` are Satterthwaite's (lmerTest's
        default) and ``p`` is two-sided from t(df). Where the participant variance is estimated at 0
        it is held fixed in the Satterthwaite computation.

    Raises
    ------
    BadInputError
        A column is missing, the formula is malformed, or fewer than two participants remain.
    AnalysisError
        The fixed-effects design is rank deficient (a term is not estimable).
    """
    import patsy

    fixed, groups = _split_formula(formula, groups)
    check_columns(table, [groups], "mixed_model")
    table = table.reset_index(drop=True)
    try:
        y, x = patsy.dmatrices(fixed, table, return_type="dataframe", NA_action="drop")
    except patsy.PatsyError as exc:
        raise BadInputError(f"mixed_model: cannot build the design of {fixed!r}: {exc}") from None
    design_info = x.design_info
    clusters = table.loc[y.index, groups]
    keep = clusters.notna().to_numpy()
    y, x, clusters = y[keep], x[keep], clusters[keep]
    n_groups = clusters.nunique()
    if n_groups < 2:
        raise BadInputError(f"mixed_model: need at least 2 levels of '{groups}', got {n_groups}")
    if np.linalg.matrix_rank(x.to_numpy()) < x.shape[1]:
        raise AnalysisError(
            f"mixed_model: the design of {fixed!r} is rank deficient on the {len(y)} complete rows "
            "(an empty group × session cell or collinear covariates)"
        )
    stats_ = _reml.sufficient_stats(x.to_numpy(float), y.to_numpy(float),
                                    clusters.astype(str).to_numpy())
    fit = _reml.fit_reml(stats_)
    p = x.shape[1]
    se = np.sqrt(np.diag(fit.cov_beta[0]))
    df = _reml.satterthwaite_df(fit, np.eye(p))[0]
    table_fe = _t_table(list(x.columns), fit.beta[0], se, df, confidence)
    data = table.loc[y.index]
    return MixedModelResult(
        fixed_effects=table_fe, participant_sd=float(np.sqrt(fit.tau2[0])),
        residual_sd=float(np.sqrt(fit.sigma2[0])), reml_criterion=float(fit.criterion[0]),
        n_obs=len(y), n_groups=int(n_groups), _fit=fit, _design_info=design_info, _data=data,
        _confidence=confidence,
    )


def mixed_model(table: pd.DataFrame, formula: str, groups: str | None = None) -> pd.DataFrame:
    """Fixed effects of a random-intercept LMM fitted by REML, as lme4 does.

    See :func:`fit_mixed_model`; this returns its ``fixed_effects`` table
    (``term, estimate, se, df, statistic, p, ci_low, ci_high``). ``statistic`` is lme4's t value;
    ``df`` are Satterthwaite degrees of freedom and ``p`` two-sided from t(df) (as lmerTest).
    The random-effect SDs are in ``.attrs`` (``participant_sd``, ``residual_sd``).
    """
    result = fit_mixed_model(table, formula, groups)
    out = result.fixed_effects.copy()
    out.attrs.update(participant_sd=result.participant_sd, residual_sd=result.residual_sd,
                     n_obs=result.n_obs, n_groups=result.n_groups)
    return out


# --------------------------------------------------------------------------------------------------
# Mass-univariate group × session effects


def hedges_g(change: np.ndarray, in_arm: np.ndarray, in_ref: np.ndarray, confidence: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hedges' g of the difference in mean change between two arms, per feature (NaN aware).

    ``g = J (mean_arm - mean_ref) / s_pooled`` with ``J = 1 - 3 / (4 (n1 + n0) - 9)``; the CI is
    ``g ± t_{n1+n0-2} * sqrt((n1 + n0) / (n1 n0) + g**2 / (2 (n1 + n0)))`` (Hedges & Olkin 1985;
    the interval pingouin's ``compute_esci`` gives).

    Parameters
    ----------
    change : ndarray (n_participants, n_features)
        Change scores; NaN where a participant lacks the pair for that feature.
    in_arm, in_ref : bool ndarray (n_participants,)

    Returns
    -------
    g, ci_low, ci_high, n_arm, n_ref : ndarrays (n_features,)
    """
    def moments(mask):
        sub = change[mask]
        n = np.sum(np.isfinite(sub), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(sub, axis=0) / n
            ss = np.nansum((sub - mean) ** 2, axis=0)
        return n, mean, ss

    n1, m1, ss1 = moments(in_arm)
    n0, m0, ss0 = moments(in_ref)
    dof = n1 + n0 - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((ss1 + ss0) / dof)
        correction = 1 - 3 / (4 * (n1 + n0) - 9)
        g = correction * (m1 - m0) / sd
        se = np.sqrt((n1 + n0) / (n1 * n0) + g**2 / (2 * (n1 + n0)))
        crit = stats.t.ppf(0.5 + confidence / 2, np.where(dof > 0, dof, np.nan))
    return g, g - crit * se, g + crit * se, n1, n0


def _factor(values: pd.Series, levels: Sequence[str], what: str) -> pd.Categorical:
    found = set(values.dropna().astype(str))
    unknown = found - set(levels)
    if unknown:
        raise BadInputError(f"group_time_effects: {what} has levels {sorted(unknown)} not in "
                            f"{list(levels)}")
    return pd.Categorical(values.astype(str), categories=list(levels))


def group_time_effects(
    table: pd.DataFrame,
    features: Sequence[str],
    *,
    participant: str = "participant_id",
    group: str = "group",
    session: str = "session",
    reference_group: str,
    arms: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    covariates: Sequence[str] = (),
    change_covariates: Sequence[str] = (),
    method: str = "auto",
    confidence: float = 0.95,
    skip_inestimable: bool = False,
) -> pd.DataFrame:
    """Group × session effects of every feature: each arm against the reference arm, over time.

    The model of each feature is
    ``value ~ group * session + covariates + change_covariates * session + (1 | participant)``
    (treatment coding, reference arm ``reference_group``, baseline ``sessions[0]``); the reported
    contrast is the ``group:session`` interaction: the difference between an arm and the reference
    arm in the mean change from baseline to each later session.

    Parameters
    ----------
    table : DataFrame
        Wide table, one row per participant × session, one column per feature (NaN = missing).
    features : sequence of str
        Feature columns to model.
    participant, group, session : str
        Column names.
    reference_group : str
        The comparison arm (waitlist, treatment as usual, no treatment): the study's, no default.
    arms : sequence of str, optional
        Arms to compare with the reference (default: every other level found). Participants of
        groups not listed (healthy controls, say) are left out of the model.
    sessions : sequence of str, optional
        Sessions in time order (default: the order of a Categorical column, else ``pre``, ``mid``,
        ``post`` first, then sorted).
    covariates : sequence of str
        Covariates entering as main effects (time-invariant ones drop out of the interaction).
    change_covariates : sequence of str
        Time-invariant covariates modelled as ``covariate * session`` (they adjust the change).
    method : {"auto", "change", "mixed"}
        ``"auto"`` uses the exact change-score OLS for features with two sessions, complete pairs
        and no time-varying covariate, and the REML mixed model for the others; ``"mixed"`` fits
        every feature by REML; ``"change"`` requires the closed form to apply.
    confidence : float
        Level of the confidence intervals.
    skip_inestimable : bool
        A feature whose design is rank deficient (an arm with no observation at a session) raises
        ``AnalysisError`` by default; with ``True`` it gets NaN statistics and
        ``method="not_estimable"`` instead (what the pipeline does, so one feature cannot stop
        a study's analysis).

    Returns
    -------
    DataFrame
        One row per feature × arm × later session: ``feature, contrast, arm, session, estimate, se,
        df, statistic, p, ci_low, ci_high, hedges_g, hedges_g_ci_low, hedges_g_ci_high, n_arm,
        n_reference, method``. ``estimate`` is in the feature's units (difference in mean change).
    """
    if method not in ("auto", "change", "mixed"):
        raise BadInputError(f"group_time_effects: method must be auto, change or mixed, got {method!r}")
    features = list(features)
    check_columns(table, [participant, group, session, *features, *covariates, *change_covariates],
                  "group_time_effects")
    if not features:
        raise BadInputError("group_time_effects: no feature columns given")
    sess_levels = _session_order(table[session], sessions)
    groups_found = sorted(set(table[group].dropna().astype(str)))
    if reference_group not in groups_found:
        raise BadInputError(f"group_time_effects: reference group '{reference_group}' not found in "
                            f"column '{group}' (levels: {groups_found})")
    if arms is None:
        arms = [g for g in groups_found if g != reference_group]
    if not arms:
        raise BadInputError(f"group_time_effects: no arm to compare with '{reference_group}'")
    levels = [reference_group, *arms]
    data = table[table[group].astype(str).isin(levels) & table[session].astype(str).isin(
        sess_levels)].reset_index(drop=True)
    data[group] = _factor(data[group], levels, group)
    data[session] = _factor(data[session], sess_levels, session)
    dup = data.duplicated([participant, session])
    if dup.any():
        first = data.loc[dup, [participant, session]].iloc[0].tolist()
        raise BadInputError(f"group_time_effects: more than one row for participant × session "
                            f"{first}; aggregate runs first")
    for cov in (*covariates, *change_covariates):
        if not pd.api.types.is_numeric_dtype(data[cov]) and not isinstance(
                data[cov].dtype, pd.CategoricalDtype):
            data[cov] = data[cov].astype("category")

    varying = [c for c in covariates if _time_varying(data, participant, c)]
    bad_change = [c for c in change_covariates if _time_varying(data, participant, c)]
    if bad_change:
        raise BadInputError(f"group_time_effects: change_covariates {bad_change} vary between "
                            "sessions of a participant; list them in covariates instead")

    values = data[features].to_numpy(float)
    complete_cov = data[[*covariates, *change_covariates]].notna().all(axis=1).to_numpy()
    closed_possible = len(sess_levels) == 2 and not varying
    base, later = sess_levels[0], sess_levels[1:]

    # change scores (participants × features) for effect sizes and the closed form
    wide = data.pivot(index=participant, columns=session, values=features)
    pinfo = data.drop_duplicates(participant).set_index(participant)
    rows = []
    for later_session in later:
        change = (wide.xs(later_session, axis=1, level=1)[features]
                  - wide.xs(base, axis=1, level=1)[features])
        cov_ok = pinfo.loc[change.index, [*covariates, *change_covariates]].notna().all(axis=1)
        change_values = change.to_numpy(float, copy=True)
        change_values[~cov_ok.to_numpy()] = np.nan
        part_group = pinfo.loc[change.index, group].astype(str).to_numpy()
        for arm in arms:
            g, lo, hi, n1, n0 = hedges_g(change_values, part_group == arm,
                                         part_group == reference_group, confidence)
            rows.append(pd.DataFrame({
                "feature": features, "arm": arm, "session": later_session, "hedges_g": g,
                "hedges_g_ci_low": lo, "hedges_g_ci_high": hi, "n_arm": n1, "n_reference": n0,
            }))
    effect_sizes = pd.concat(rows, ignore_index=True)

    results = []
    done = np.zeros(len(features), bool)
    if method in ("auto", "change") and closed_possible:
        change = (wide.xs(later[0], axis=1, level=1)[features]
                  - wide.xs(base, axis=1, level=1)[features])
        cov_ok = pinfo.loc[change.index, [*covariates, *change_covariates]].notna().all(axis=1)
        rows_ok = cov_ok.to_numpy()
        complete = np.isfinite(change.to_numpy(float)[rows_ok]).all(axis=0)
        # a feature observed at only one session for some participant goes to the mixed model
        n_obs_feature = np.isfinite(values[complete_cov]).sum(axis=0)
        complete &= n_obs_feature == 2 * rows_ok.sum()
        if complete.any():
            sub = pinfo.loc[change.index[rows_ok]]
            x = _change_design(sub, group, levels, change_covariates)
            contrasts = np.zeros((len(arms), x.shape[1]))
            contrasts[np.arange(len(arms)), 1 + np.arange(len(arms))] = 1.0
            y = change.to_numpy(float)[rows_ok][:, complete]
            est, se, _, dof = ols(x, y, rank_deficient="minimum_norm").contrast(contrasts)
            names = np.asarray(features)[complete]
            for k, arm in enumerate(arms):
                results.append(_frame(names, arm, later[0], est[k], se[k],
                                      np.full(len(names), float(dof)), confidence, "change_ols"))
            done |= complete
    if method == "change" and not done.all():
        missing = np.asarray(features)[~done][:5].tolist()
        raise BadInputError(
            "group_time_effects(method='change'): the closed form needs two sessions, complete "
            f"pairs and time-invariant covariates; not so for {missing}"
        )
    if not done.all():
        results.extend(_mixed_features(data, np.asarray(features)[~done], participant, group,
                                       session, levels, arms, sess_levels, covariates,
                                       change_covariates, confidence, skip_inestimable))
    out = pd.concat(results, ignore_index=True)
    out = out.merge(effect_sizes, on=["feature", "arm", "session"], how="left")
    out.insert(1, "contrast", [f"{a} - {reference_group}: {base} -> {s}"
                               for a, s in zip(out["arm"], out["session"], strict=True)])
    order = {f: i for i, f in enumerate(features)}
    out = out.sort_values(["session", "arm"], kind="stable")
    out = out.sort_values("feature", key=lambda s: s.map(order), kind="stable")
    return out.reset_index(drop=True)


def _frame(names, arm, session, est, se, dof, confidence, method) -> pd.DataFrame:
    table = _t_table(names, est, se, dof, confidence, label="feature")
    table.insert(1, "arm", arm)
    table.insert(2, "session", session)
    table["method"] = method
    return table


def _session_order(column: pd.Series, sessions: Sequence[str] | None) -> list[str]:
    found = list(dict.fromkeys(column.dropna().astype(str)))
    if sessions is not None:
        missing = [s for s in sessions if s not in found]
        if missing:
            raise BadInputError(f"group_time_effects: sessions {missing} not in the table "
                                f"(found {found})")
        return list(sessions)
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(c) for c in column.cat.categories if str(c) in found]
    preferred = [s for s in ("pre", "baseline", "mid", "post", "followup") if s in found]
    rest = sorted(s for s in found if s not in preferred)
    order = preferred + rest
    if len(order) < 2:
        raise BadInputError(f"group_time_effects: need at least two sessions, found {found}")
    return order


def _time_varying(data: pd.DataFrame, participant: str, column: str) -> bool:
    return bool((data.groupby(participant, observed=True)[column].nunique(dropna=True) > 1).any())


def _change_design(pinfo: pd.DataFrame, group: str, levels: Sequence[str],
                   change_covariates: Sequence[str]) -> np.ndarray:
    arm_codes = pinfo[group].astype(str).to_numpy()
    columns = [np.ones(len(pinfo))] + [(arm_codes == a).astype(float) for a in levels[1:]]
    for cov in change_covariates:
        col = pinfo[cov]
        if isinstance(col.dtype, pd.CategoricalDtype):
            for lev in col.cat.categories[1:]:
                columns.append((col == lev).to_numpy(float))
        else:
            columns.append(col.to_numpy(float))
    return np.column_stack(columns)


def _mixed_features(data, features, participant, group, session, levels, arms, sess_levels,
                    covariates, change_covariates, confidence, skip_inestimable=False
                    ) -> list[pd.DataFrame]:
    """REML fits of every feature, vectorized over features sharing a missing-data pattern."""
    import patsy

    rhs = f"C({group}) * C({session})"
    for cov in covariates:
        rhs += f" + {cov}"
    for cov in change_covariates:
        rhs += f" + {cov} * C({session})"
    base_ok = data[[*covariates, *change_covariates]].notna().all(axis=1).to_numpy()
    x_all = patsy.dmatrix(rhs, data, return_type="dataframe", NA_action=patsy.NAAction(
        NA_types=[]))
    names = list(x_all.columns)
    contrast_rows, labels = [], []
    for later in sess_levels[1:]:
        for arm in arms:
            term = f"C({group})[T.{arm}]:C({session})[T.{later}]"
            row = np.zeros(len(names))
            row[names.index(term)] = 1.0
            contrast_rows.append(row)
            labels.append((arm, later))
    contrasts = np.vstack(contrast_rows)
    values = data[list(features)].to_numpy(float)
    observed = np.isfinite(values) & base_ok[:, None]
    patterns, inverse = np.unique(observed.T, axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    clusters = data[participant].astype(str).to_numpy()
    out = []
    for k, pattern in enumerate(patterns):
        cols = np.flatnonzero(inverse == k)
        x = x_all.to_numpy(float)[pattern]
        if np.linalg.matrix_rank(x) < x.shape[1]:
            if not skip_inestimable:
                raise AnalysisError(
                    f"group_time_effects: the design is rank deficient for features "
                    f"{list(np.asarray(features)[cols][:5])} (an empty group × session cell)"
                )
            nan = np.full(len(cols), np.nan)
            for arm, later in labels:
                out.append(_frame(np.asarray(features)[cols], arm, later, nan, nan, nan,
                                  confidence, "not_estimable"))
            continue
        stats_ = _reml.sufficient_stats(x, values[pattern][:, cols], clusters[pattern])
        fit = _reml.fit_reml(stats_)
        est = fit.beta @ contrasts.T  # (F, k)
        var = np.einsum("kp,fpq,kq->fk", contrasts, fit.cov_beta, contrasts)
        dof = _reml.satterthwaite_df(fit, contrasts)
        for j, (arm, later) in enumerate(labels):
            out.append(_frame(np.asarray(features)[cols], arm, later, est[:, j],
                              np.sqrt(var[:, j]), dof[:, j], confidence, "mixed_reml"))
    return out
