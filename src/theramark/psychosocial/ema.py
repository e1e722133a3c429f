"""Ecological momentary assessment (EMA): multilevel models of momentary reports.

EMA rows are prompts nested in days nested in participants (``participant_id, day, prompt``). A
momentary predictor mixes two effects: whether a person reports more pleasure *at moments* with more
social contact than usual for them (within-person) and whether people with more contact overall
report more pleasure (between-person). Person-mean centering separates them: ``x_within = x − mean_i
(x)`` and ``x_between = mean_i(x) − grand mean``. Lagged effects (t−1 → t) use the previous prompt of
the same day only: the first prompt of a day has no lag (no lag across nights).

Models are fitted with :class:`statsmodels.regression.mixed_linear_model.MixedLM` (REML), with a
random intercept and, by default, a random within-person slope per participant.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from theramark.errors import AnalysisError, BadInputError
from theramark.psychosocial._data import as_list
from theramark.tables import check_columns


def _check_numeric_columns(data: pd.DataFrame, columns: Sequence[str], what: str,
                           identifiers: Sequence[str] = ("participant_id",)) -> None:
    """The columns exist and, except ``identifiers``, hold numbers (or numeric text)."""
    check_columns(data, columns, what)
    for c in columns:
        if c in identifiers:
            continue
        if not pd.api.types.is_numeric_dtype(data[c]):
            values = pd.to_numeric(data[c], errors="coerce")
            bad = data[c].notna() & values.isna()
            if bad.any():
                examples = ", ".join(repr(v) for v in data.loc[bad, c].astype(str).unique()[:5])
                raise BadInputError(f"{what}: column '{c}' has non-numeric value(s) {examples}")


def lag_within_day(
    data: pd.DataFrame,
    columns: str | Sequence[str],
    participant: str = "participant_id",
    day: str = "day",
    order: str = "prompt",
) -> pd.DataFrame:
    """Add ``<column>_lag1``: the value at the previous prompt of the same participant and day.

    The first prompt of each day gets a missing lag, so no effect is carried across a night.
    Rows are sorted by participant, day and ``order``; the input's row order is restored.
    """
    cols = as_list(columns)
    _check_numeric_columns(data, [participant, day, order, *cols], "lag_within_day", [participant])
    sorted_data = data.sort_values([participant, day, order], kind="stable")
    grouped = sorted_data.groupby([participant, day], sort=False)
    out = data.copy()
    for c in cols:
        out[f"{c}_lag1"] = grouped[c].shift(1).reindex(data.index)
    return out


def person_mean_center(
    data: pd.DataFrame, columns: str | Sequence[str], participant: str = "participant_id"
) -> pd.DataFrame:
    """Add ``<column>_within`` (deviation from the person's mean) and ``<column>_between``.

    ``_between`` is the person's mean minus the grand mean of person means (each person weighs
    the same). Missing values are ignored when taking means and stay missing in ``_within``.
    """
    cols = as_list(columns)
    _check_numeric_columns(data, [participant, *cols], "person_mean_center", [participant])
    out = data.copy()
    for c in cols:
        person_mean = out.groupby(participant)[c].transform("mean")
        grand = out.groupby(participant)[c].mean().mean()
        out[f"{c}_within"] = out[c] - person_mean
        out[f"{c}_between"] = person_mean - grand
    return out


def ema_compliance(
    data: pd.DataFrame,
    columns: str | Sequence[str],
    participant: str = "participant_id",
    day: str = "day",
    prompts_per_day: int | None = None,
) -> pd.DataFrame:
    """Per-participant compliance: prompts answered over prompts scheduled.

    Parameters
    ----------
    data : DataFrame
        One row per scheduled prompt (unanswered prompts are rows with missing answers).
    columns : str or sequence of str
        A prompt counts as answered when all of these are present.
    prompts_per_day : int, optional
        Scheduled prompts per day; default: the rows present for each participant are the
        schedule.

    Returns
    -------
    DataFrame
        ``participant_id, n_days, n_scheduled, n_answered, compliance`` (a proportion), one row per
        participant; ``attrs["summary"]`` has the mean, median and range of compliance.
    """
    cols = as_list(columns)
    _check_numeric_columns(data, [participant, day, *cols], "ema_compliance", [participant, day])
    answered = data[cols].notna().all(axis=1)
    grouped = data.assign(_answered=answered).groupby(participant)
    table = pd.DataFrame({
        "n_days": grouped[day].nunique(),
        "n_scheduled": grouped.size(),
        "n_answered": grouped["_answered"].sum().astype(int),
    })
    if prompts_per_day is not None:
        table["n_scheduled"] = table["n_days"] * int(prompts_per_day)
    table["compliance"] = table["n_answered"] / table["n_scheduled"]
    table = table.reset_index().rename(columns={participant: "participant_id"})
    table.attrs["summary"] = {
        "mean": float(table["compliance"].mean()),
        "median": float(table["compliance"].median()),
        "min": float(table["compliance"].min()),
        "max": float(table["compliance"].max()),
        "n_participants": int(len(table)),
    }
    return table


def ema_multilevel(
    data: pd.DataFrame,
    y: str,
    x: str,
    moderator: str | None = None,
    covariates: str | Sequence[str] | None = None,
    *,
    participant: str = "participant_id",
    day: str = "day",
    order: str = "prompt",
    lag: bool = False,
    random_slope: bool = True,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Within- and between-person effects of a momentary predictor on a momentary outcome.

    ``y ~ x_within + x_between [+ W + x_within:W + x_between:W] + C``, random intercept and (if
    ``random_slope``) random ``x_within`` slope per participant, fitted by REML.

    Parameters
    ----------
    data : DataFrame
        Long EMA table: one row per prompt.
    y, x : str
        Momentary outcome (e.g. ``positive_affect``) and predictor (e.g. ``social_contact``).
    moderator : str, optional
        A between-person variable (constant within a participant, e.g. baseline SHAPS); it is
        grand-mean centred over participants and crossed with both x components.
    covariates : str or sequence of str, optional
        Level-1 or level-2 covariates entered as they are.
    lag : bool
        Use ``x`` at the previous prompt of the same day (t−1 → t) instead of ``x`` at t.
    random_slope : bool
        Random within-person slope (recommended; set False if the model does not converge).
    confidence : float
        Level of the Wald intervals.

    Returns
    -------
    DataFrame
        One row per fixed effect (``term``: ``intercept``, ``<x>_within``, ``<x>_between``...):
        ``estimate, se, z, p, ci_low, ci_high``. ``attrs``: ``n_observations``,
        ``n_participants``, ``n_dropped``, ``random_effects`` (covariance matrix as a DataFrame),
        ``converged``, ``note``.
    """
    cov = as_list(covariates)
    needed = [participant, y, x, *cov] + ([moderator] if moderator else [])
    if lag:
        needed += [day, order]
    _check_numeric_columns(data, needed, "ema_multilevel", [participant])
    frame = data[list(dict.fromkeys(needed))].copy()
    for c in needed:
        if c != participant:
            # nullable integers (Int64 with <NA>) become float with NaN
            frame[c] = pd.to_numeric(frame[c]).astype(float)
    predictor = x
    if lag:
        frame = lag_within_day(frame, x, participant, day, order)
        predictor = f"{x}_lag1"
    n_total = len(frame)
    frame = frame.dropna(subset=[y, predictor, *cov] + ([moderator] if moderator else []))
    if frame.empty:
        raise BadInputError(f"ema_multilevel: no complete rows for {y}, {predictor}")
    frame = person_mean_center(frame, predictor, participant)
    within, between = f"{predictor}_within", f"{predictor}_between"
    n_groups = frame[participant].nunique()
    if n_groups < 5:
        raise BadInputError(
            f"ema_multilevel: {n_groups} participant(s) with complete data; need at least 5"
        )
    if frame[within].abs().max() < 1e-12:
        raise BadInputError(
            f"ema_multilevel: '{predictor}' does not vary within participants; no within-person "
            "effect can be estimated"
        )
    if frame[between].abs().max() < 1e-12:
        raise BadInputError(
            f"ema_multilevel: person means of '{predictor}' are all equal; no between-person "
            "effect can be estimated"
        )
    exog = pd.DataFrame({"intercept": 1.0, within: frame[within], between: frame[between]},
                        index=frame.index)
    if moderator:
        per_person = frame.groupby(participant)[moderator]
        if (per_person.nunique() > 1).any():
            raise BadInputError(
                f"ema_multilevel: moderator '{moderator}' varies within a participant; a "
                "between-person moderator must be constant for each participant"
            )
        levels = per_person.first()
        if levels.nunique() < 2:
            raise BadInputError(
                f"ema_multilevel: moderator '{moderator}' has one level; it cannot moderate"
            )
        w_c = frame[moderator] - levels.mean()
        exog[f"{moderator}_c"] = w_c
        exog[f"{within}:{moderator}_c"] = frame[within] * w_c
        exog[f"{between}:{moderator}_c"] = frame[between] * w_c
    for c in cov:
        exog[c] = frame[c]
    rank = np.linalg.matrix_rank(exog.to_numpy())
    if rank < exog.shape[1]:
        raise BadInputError(
            f"ema_multilevel: collinear predictors among {', '.join(exog.columns)}"
        )
    import statsmodels.api as sm

    exog_re = exog[["intercept", within]] if random_slope else exog[["intercept"]]
    model = sm.MixedLM(frame[y].to_numpy(), exog, groups=frame[participant].to_numpy(),
                       exog_re=exog_re)
    fit, errors = None, []
    caught: list = []
    # L-BFGS can step to a random-intercept variance so large that X'V⁻¹X is singular; the
    # derivative-free optimizers then take over.
    for method in ("lbfgs", "powell", "nm"):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                fit = model.fit(reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError) as exc:
                errors.append(f"{method}: {exc}")
                continue
        caught = list(record)
        if fit.converged:
            break
    if fit is None:
        raise AnalysisError(
            f"ema_multilevel: the mixed model could not be fitted ({'; '.join(errors)})")
    problems = sorted({str(w.message).split("\n")[0] for w in caught
                       if "converge" in str(w.message).lower()
                       or "singular" in str(w.message).lower()
                       or "boundary" in str(w.message).lower()})
    for message in problems:
        warnings.warn(f"ema_multilevel: {message}", RuntimeWarning, stacklevel=2)
    names = list(exog.columns)
    est = np.asarray(fit.fe_params)
    with np.errstate(invalid="ignore"):
        se = np.asarray(fit.bse_fe)
    if not np.isfinite(se).all():
        bad = [n for n, v in zip(names, se, strict=True) if not np.isfinite(v)]
        problems.append(f"standard errors of {', '.join(bad)} could not be computed (singular "
                        "information matrix); simplify the model (e.g. random_slope=False)")
        warnings.warn(f"ema_multilevel: {problems[-1]}", RuntimeWarning, stacklevel=2)
    z = est / se
    crit = stats.norm.ppf(0.5 + confidence / 2)
    table = pd.DataFrame({
        "term": names, "estimate": est, "se": se, "z": z, "p": 2 * stats.norm.sf(np.abs(z)),
        "ci_low": est - crit * se, "ci_high": est + crit * se,
    })
    re_names = list(exog_re.columns)
    table.attrs.update({
        "n_observations": int(len(frame)), "n_participants": int(n_groups),
        "n_dropped": int(n_total - len(frame)),
        "random_effects": pd.DataFrame(np.asarray(fit.cov_re), index=re_names, columns=re_names),
        "residual_variance": float(fit.scale), "converged": bool(fit.converged) and not problems,
        "fit_warnings": problems,
        "note": (f"{len(frame)} prompts from {n_groups} participants ({n_total - len(frame)} "
                 "incomplete prompts dropped); person-mean centred predictor"
                 + ("; lag within day only" if lag else "")),
    })
    return table
