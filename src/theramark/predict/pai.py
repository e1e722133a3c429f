"""The Personalized Advantage Index: which therapy is predicted to work best for whom.

For each outer fold, one model per arm is fitted on the training participants of that arm, and
every test participant is predicted under every arm (counterfactual, out-of-fold predictions).
The indicated arm is the one with the best prediction; the PAI is the size of its predicted
advantage over the next best arm, in outcome units (DeRubeis et al. 2014).

Sign convention
---------------
The PAI is never negative. With ``lower_is_better=True`` (the default: a symptom change score such
as HAMD-17 endpoint − baseline, where more negative is better), ``pai = second-lowest prediction −
lowest prediction``. With ``lower_is_better=False``, ``pai = highest − second-highest``. With two
arms it is ``|pred_A − pred_B|``.

Model
-----
The default model is ordinary least squares (linear regression with an intercept), fitted per arm:
DeRubeis et al. used linear regression with treatment × moderator interactions, and one model per
arm is the same as a fully interacted model (every coefficient, intercept included, differs by
arm). Any scikit-learn regressor can be given instead (``model=``).

Uncertainty
-----------
Whether participants who received their indicated arm did better is judged with a bootstrap of the
*whole procedure* over participants (:func:`pai_summary`): each replicate resamples participants,
refits every per-arm model of every fold on the resampled training rows (a participant keeps its
fold, so copies never sit on both sides), re-derives every indicated arm and recomputes the
difference. A bootstrap that holds the indicated arms fixed is too narrow: under no treatment ×
moderator interaction, chance differences between the arms' samples decide the indicated arm and
the same noise reappears in the outcomes compared (with 200 participants its 95% interval covered
zero in about 75% of null data sets, against 95% for the whole-procedure bootstrap). For the
default OLS model the replicates are computed at once as weighted least squares (bootstrap counts
as weights), which equals refitting on the resampled rows.

References
----------
DeRubeis RJ, Cohen ZD, Forand NR, Fournier JC, Gelfand LA, Lorenzo-Luaces L (2014). The Personalized
Advantage Index: translating research on prediction into individualized treatment recommendations.
PLoS ONE 9:e83875.

Cohen ZD, DeRubeis RJ (2018). Treatment selection in depression. Annu Rev Clin Psychol 14:209-236.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from theramark.errors import BadInputError
from theramark.predict.metrics import bootstrap_counts
from theramark.tables import check_columns

#: Fewest participants an arm may have (and at least ``n_splits``): a per-arm regression on fewer
#: participants than this in a training fold is not a usable model.
MIN_PER_ARM = 10


def _prepare(table: pd.DataFrame, outcome: str, arm: str, features: Sequence[str], participant: str,
             n_splits: int, min_per_arm: int, ols: bool):
    features = list(features)
    if not features:
        raise BadInputError("personalized_advantage needs at least one feature column (features=[...])")
    check_columns(table, [participant, arm, outcome, *features], "PAI table")
    if table[participant].duplicated().any():
        dup = table.loc[table[participant].duplicated(), participant].astype(str).unique()[:10]
        raise BadInputError(f"PAI table: one row per participant expected; repeated: {', '.join(dup)}")
    if n_splits < 2:
        raise BadInputError(f"n_splits must be at least 2, got {n_splits}")
    reasons = pd.Series("", index=table.index, dtype=object)
    for col in [arm, outcome, *features]:
        miss = table[col].isna()
        reasons[miss] = reasons[miss] + np.where(reasons[miss] == "", "", "; ") + f"missing {col}"
    dropped = pd.DataFrame({"participant_id": table.loc[reasons != "", participant].to_numpy(),
                            "reason": reasons[reasons != ""].to_numpy()})
    data = table.loc[reasons == ""].reset_index(drop=True)
    arms, arm_codes, counts = np.unique(data[arm].to_numpy(), return_inverse=True, return_counts=True)
    if arms.size < 2:
        raise BadInputError(f"PAI needs at least two arms in column {arm!r}, got {arms.tolist()}")
    need = max(n_splits, min_per_arm)
    why = f"max of n_splits={n_splits} and min_per_arm={min_per_arm}"
    if ols:  # every training fold of an arm must hold more participants than OLS coefficients
        ols_need = int(np.ceil((len(features) + 2) * n_splits / (n_splits - 1)))
        if ols_need > need:
            need, why = ols_need, f"{len(features)} features + intercept in every training fold"
    small = [f"{a}: {c} participants" for a, c in zip(arms, counts, strict=True) if c < need]
    if small:
        raise BadInputError(f"PAI: each arm needs at least {need} participants with complete data ({why})",
                            small)
    X = data[features].to_numpy(float)
    return data, dropped, X, data[outcome].to_numpy(float), arms, arm_codes


def _folds(arm_codes: np.ndarray, n_splits: int, random_state) -> np.ndarray:
    fold_of = np.empty(arm_codes.size, dtype=np.intp)
    splitter = StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(arm_codes.size), arm_codes)):
        fold_of[test] = fold
    return fold_of


def _ols_predictions(X: np.ndarray, y: np.ndarray, arm_codes: np.ndarray, n_arms: int,
                     fold_of: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Out-of-fold per-arm OLS predictions for every row of case weights W (B, n) → (B, n, n_arms)."""
    design = np.column_stack([np.ones(len(y)), X - X.mean(axis=0)])  # centring only helps conditioning
    out = np.empty((W.shape[0], len(y), n_arms))
    for fold in np.unique(fold_of):
        test = fold_of == fold
        for a in range(n_arms):
            rows = ~test & (arm_codes == a)
            D, w = design[rows], W[:, rows]
            gram = np.einsum("bi,ij,ik->bjk", w, D, D)
            rhs = (w * y[rows]) @ D
            beta = np.einsum("bjk,bk->bj", np.linalg.pinv(gram, hermitian=True), rhs)
            out[:, test, a] = beta @ design[test].T
    return out


def _model_predictions(model, X: np.ndarray, y: np.ndarray, arm_codes: np.ndarray, n_arms: int,
                       fold_of: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold per-arm predictions of a scikit-learn regressor (fitted on resampled rows)."""
    idx = np.arange(len(y)) if counts is None else np.repeat(np.arange(len(y)), counts.astype(int))
    out = np.empty((len(y), n_arms))
    for fold in np.unique(fold_of):
        test = fold_of == fold
        for a in range(n_arms):
            rows = idx[(fold_of[idx] != fold) & (arm_codes[idx] == a)]
            if rows.size == 0:
                out[test, a] = np.nan
                continue
            out[test, a] = clone(model).fit(X[rows], y[rows]).predict(X[test])
    return out


def _rank(preds: np.ndarray, lower_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index of the indicated arm and the PAI (best vs next best, ≥ 0) along the last axis."""
    signed = preds if lower_is_better else -preds
    order = np.argsort(signed, axis=-1, kind="stable")
    ranked = np.take_along_axis(signed, order, axis=-1)
    return order[..., 0], ranked[..., 1] - ranked[..., 0]


def personalized_advantage(
    table: pd.DataFrame,
    outcome: str = "hamd17_change",
    arm: str = "group",
    features: Sequence[str] = (),
    *,
    participant: str = "participant_id",
    n_splits: int = 5,
    random_state: int | None = 0,
    model=None,
    lower_is_better: bool = True,
    threshold: float | None = None,
    min_per_arm: int = MIN_PER_ARM,
) -> pd.DataFrame:
    """Out-of-fold counterfactual predictions under every arm, indicated arm and PAI per participant.

    Parameters
    ----------
    table : DataFrame
        One row per participant: ``participant``, ``arm``, ``outcome`` and the ``features``.
    outcome : str
        Outcome column (e.g. HAMD-17 change, endpoint − baseline, points).
    arm : str
        Column of the treatment arm received.
    features : sequence of str
        Baseline predictor columns (moderators and prognostic variables).
    participant : str
        Participant identifier column.
    n_splits : int
        Outer folds (stratified by arm, shuffled with ``random_state``).
    model : estimator, optional
        Regressor cloned per arm and fold; default: OLS linear regression (see the module notes).
    lower_is_better : bool
        Whether a lower outcome is a better one (default True, a symptom change score).
    threshold : float, optional
        A clinically meaningful advantage in outcome units (e.g. 3 HAMD-17 points): adds the column
        ``meaningful`` (``pai >= threshold``).
    min_per_arm : int
        Fewest participants per arm (default :data:`MIN_PER_ARM`; also at least ``n_splits`` and,
        for the OLS default, enough for the coefficients in every training fold).

    Returns
    -------
    DataFrame
        One row per participant kept: ``participant_id``, ``arm`` (received), ``outcome``
        (observed), ``fold``, ``pred_<arm>`` for every arm (sorted labels), ``indicated_arm``,
        ``pai`` (≥ 0, outcome units; see the module's sign convention), ``received_indicated``
        (bool) and ``meaningful`` (with ``threshold``). ``attrs["dropped"]`` lists the participants
        left out (``participant_id, reason``: a missing outcome, arm or feature value);
        ``attrs["arms"]``, ``attrs["outcome"]``, ``attrs["lower_is_better"]`` and
        ``attrs["threshold"]`` record the settings.

    Raises
    ------
    BadInputError
        Missing columns, fewer than two arms, or an arm with too few participants (the message
        names the arm and its count).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 120
    >>> t = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)],
    ...                   "group": np.repeat(["cbt", "drug"], n // 2), "m": rng.normal(size=n)})
    >>> t["hamd17_change"] = -8 + 3 * t["m"] * np.where(t["group"] == "cbt", 1, -1) + rng.normal(size=n)
    >>> out = personalized_advantage(t, features=["m"])
    >>> out.columns.tolist()[4:]
    ['pred_cbt', 'pred_drug', 'indicated_arm', 'pai', 'received_indicated']
    >>> bool((out["pai"] >= 0).all())
    True
    """
    data, dropped, X, y, arms, codes = _prepare(table, outcome, arm, features, participant, n_splits,
                                                min_per_arm, model is None)
    fold_of = _folds(codes, n_splits, random_state)
    if model is None:
        preds = _ols_predictions(X, y, codes, arms.size, fold_of, np.ones((1, len(y))))[0]
    else:
        preds = _model_predictions(model, X, y, codes, arms.size, fold_of)
    best, pai = _rank(preds, lower_is_better)
    out = pd.DataFrame({"participant_id": data[participant].to_numpy(), "arm": arms[codes],
                        "outcome": y, "fold": fold_of})
    for k, a in enumerate(arms):
        out[f"pred_{a}"] = preds[:, k]
    out["indicated_arm"] = arms[best]
    out["pai"] = pai
    out["received_indicated"] = best == codes
    if threshold is not None:
        out["meaningful"] = out["pai"] >= threshold
    out.attrs.update({"dropped": dropped, "arms": arms.tolist(), "outcome": outcome,
                      "lower_is_better": lower_is_better, "threshold": threshold})
    return out


def _indicated_difference(y: np.ndarray, received: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted mean outcome of received-indicated minus not, per row of W (received: (B, n))."""
    got = received.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_got = np.sum(W * got * y, axis=1) / np.sum(W * got, axis=1)
        mean_not = np.sum(W * (1 - got) * y, axis=1) / np.sum(W * (1 - got), axis=1)
    return mean_got - mean_not


def pai_summary(
    table: pd.DataFrame,
    outcome: str = "hamd17_change",
    arm: str = "group",
    features: Sequence[str] = (),
    *,
    participant: str = "participant_id",
    n_splits: int = 5,
    random_state: int | None = 0,
    model=None,
    lower_is_better: bool = True,
    threshold: float | None = None,
    min_per_arm: int = MIN_PER_ARM,
    n_boot: int = 1000,
    ci: float = 0.95,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Did participants who received their indicated arm do better? With a whole-procedure bootstrap.

    Takes the same arguments as :func:`personalized_advantage` (it reruns it), plus the bootstrap's.

    Parameters
    ----------
    n_boot : int
        Bootstrap replicates over participants (default 1000); each refits every per-arm model
        (see the module notes).
    ci : float
        Coverage of the percentile interval.
    n_jobs : int, optional
        Replicates in parallel (joblib) for a user-given ``model``; the OLS default is vectorized.

    Returns
    -------
    DataFrame
        One row: ``n``, ``n_indicated``, ``n_not_indicated``, ``mean_indicated``,
        ``mean_not_indicated``, ``difference`` (indicated − not indicated, outcome units; negative
        favours the indicated arm when lower is better), ``ci_low``, ``ci_high``, ``advantage``
        (the difference signed so that positive favours the indicated arm), ``mean_pai``,
        ``threshold``, ``share_meaningful`` (share with ``pai >= threshold``; n/a without a
        threshold), ``n_boot``, ``n_boot_valid``.
    """
    if not 0 < ci < 1:
        raise BadInputError(f"ci must be in (0, 1), got {ci}")
    data, _, X, y, arms, codes = _prepare(table, outcome, arm, features, participant, n_splits,
                                          min_per_arm, model is None)
    fold_of = _folds(codes, n_splits, random_state)
    counts = bootstrap_counts(np.random.default_rng(random_state), len(y), n_boot)
    W = np.vstack([np.ones((1, len(y))), counts])
    if model is None:
        diffs = []
        for start in range(0, W.shape[0], 200):  # bounded memory: (chunk, n, arms) predictions
            w = W[start:start + 200]
            best, _ = _rank(_ols_predictions(X, y, codes, arms.size, fold_of, w), lower_is_better)
            diffs.append(_indicated_difference(y, best == codes, w))
        diff = np.concatenate(diffs)
        point_preds = _ols_predictions(X, y, codes, arms.size, fold_of, W[:1])[0]
    else:
        preds = Parallel(n_jobs=n_jobs)(
            delayed(_model_predictions)(model, X, y, codes, arms.size, fold_of, None if b == 0 else W[b])
            for b in range(W.shape[0]))
        best, _ = _rank(np.stack(preds), lower_is_better)
        diff = _indicated_difference(y, best == codes, W)
        point_preds = preds[0]
    best, pai = _rank(point_preds, lower_is_better)
    got = best == codes
    if got.all() or not got.any():
        raise BadInputError("pai_summary needs participants who received their indicated arm and "
                            f"participants who did not; got {int(got.sum())} and {int((~got).sum())}")
    boot = diff[1:]
    ok = np.isfinite(boot)
    alpha = (1 - ci) / 2
    low, high = np.quantile(boot[ok], [alpha, 1 - alpha]) if ok.any() else (np.nan, np.nan)
    sign = -1.0 if lower_is_better else 1.0
    return pd.DataFrame([{
        "n": int(got.size), "n_indicated": int(got.sum()), "n_not_indicated": int((~got).sum()),
        "mean_indicated": float(y[got].mean()), "mean_not_indicated": float(y[~got].mean()),
        "difference": float(diff[0]), "ci_low": float(low), "ci_high": float(high),
        "advantage": sign * float(diff[0]), "mean_pai": float(pai.mean()), "threshold": threshold,
        "share_meaningful": float(np.mean(pai >= threshold)) if threshold is not None else np.nan,
        "n_boot": n_boot, "n_boot_valid": int(ok.sum())}])
