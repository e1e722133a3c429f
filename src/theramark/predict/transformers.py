"""Fold-safe transformers: site harmonization and confound regression learned on training rows only.

Both take a DataFrame that carries its own nuisance columns (site, covariates, confounds) next to
the features, so that inside a scikit-learn ``Pipeline`` and any cross-validation the nuisance
model is fitted on the training rows and merely applied to the test rows. The target ``y`` is
never used (``fit(X, y=None)`` ignores it): a harmonization that preserves the outcome fitted on
all rows is exactly the leak these transformers exist to prevent.

Conventions
-----------
- Input: a DataFrame. The nuisance columns are named in the constructor; every other *numeric*
  column is a feature (non-numeric columns that are not nuisance columns are ignored and listed in
  ``ignored_columns_``).
- Output: a DataFrame of the feature columns only, same index, harmonized/residualized, float.
- Missing values in a used column raise :class:`~theramark.errors.BadInputError` naming the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from theramark.errors import BadInputError
from theramark.group.harmonize import ComBat
from theramark.stats.least_squares import ols

__all__ = ["ComBatTransformer", "ConfoundRegressor"]

UnseenPolicy = Literal["error", "pooled"]


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_frame(X, caller: str, required: list[str]) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise BadInputError(f"{caller}: X must be a DataFrame holding the columns {required} and the "
                            f"features, got {type(X).__name__}")
    absent = [c for c in required if c not in X.columns]
    if absent:
        raise BadInputError(f"{caller}: column(s) {absent} missing from X (columns: "
                            f"{list(map(str, X.columns[:10]))}{'...' if X.shape[1] > 10 else ''})")
    for column in required:
        missing = X[column].isna()
        if missing.any():
            raise BadInputError(f"{caller}: column '{column}' has missing values at row(s) "
                                f"{list(X.index[missing][:5])}")
    return X


def _feature_columns(X: pd.DataFrame, nuisance: list[str], caller: str) -> tuple[list, list]:
    others = [c for c in X.columns if c not in nuisance]
    features = [c for c in others if pd.api.types.is_numeric_dtype(X[c])
                and not pd.api.types.is_bool_dtype(X[c])]
    ignored = [c for c in others if c not in features]
    if not features:
        raise BadInputError(f"{caller}: X has no numeric feature column besides {nuisance}")
    return features, ignored


def _feature_values(X: pd.DataFrame, features: list, caller: str) -> np.ndarray:
    absent = [c for c in features if c not in X.columns]
    if absent:
        raise BadInputError(f"{caller}: feature column(s) {absent[:5]} seen in fit are missing from X")
    values = X[features].to_numpy(np.float64)
    bad = ~np.isfinite(values).all(axis=0)
    if bad.any():
        raise BadInputError(f"{caller}: feature column(s) {[features[i] for i in np.flatnonzero(bad)[:5]]} "
                            "have missing or infinite values; impute or drop them first")
    return values


class ComBatTransformer(TransformerMixin, BaseEstimator):
    """ComBat site harmonization as a fold-safe scikit-learn transformer.

    Wraps :class:`theramark.group.harmonize.ComBat`: fitted on all rows it returns exactly the
    numbers of ``ComBat().fit_transform(features, sites, covariates)``.

    Parameters
    ----------
    site : str
        Column of ``X`` holding the site (scanner) label.
    covariates : sequence of str
        Columns of ``X`` holding the biological covariates whose effects are preserved (numeric
        ones continuous; text/boolean ones dummy coded, as ComBat does). They come from the rows
        being fitted or transformed, never from ``y``. May be empty.
    unseen : {"error", "pooled"}
        What ``transform`` does with a site absent from the fitted rows. ``"error"`` raises
        :class:`~theramark.errors.BadInputError` naming the site(s). ``"pooled"`` applies the
        pooled fit only: with ComBat's model the harmonized value is
        ``(s - gamma) / sqrt(delta) * sqrt(var_pooled) + grand_mean + X beta`` with
        ``s = (y - grand_mean - X beta) / sqrt(var_pooled)`` the value standardized by the pooled
        fit; an unseen site gets the pooled site effect, ``gamma = 0`` (the sample-size weighted
        mean of the fitted site locations, zero by construction) and ``delta = 1``. The algebra
        then returns the rows **unchanged**: the unseen site's own offset and scale are not
        removed (they cannot be estimated without its data), and its rows are not distorted by
        another site's correction. Rows of fitted sites in the same call are harmonized as usual.
    parametric, empirical_bayes, mean_only, ref_site, categorical
        Passed to :class:`~theramark.group.harmonize.ComBat`.

    Attributes
    ----------
    combat_ : ComBat
        The fitted model.
    feature_names_ : list
        Feature columns (numeric columns other than ``site`` and ``covariates``).
    ignored_columns_ : list
        Non-numeric columns that are neither site nor covariate (dropped from the output).
    sites_ : ndarray of str
        Sites seen in fitting.
    n_features_in_ : int
        Number of columns of the ``X`` given to ``fit``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    >>> X["site"] = np.repeat(["s1", "s2"], 20)
    >>> X["age"] = rng.normal(40, 10, 40)
    >>> X["sex"] = rng.choice(["F", "M"], 40)
    >>> ComBatTransformer().fit(X.iloc[:30]).transform(X.iloc[30:]).shape
    (10, 3)
    """

    def __init__(self, site: str = "site", covariates: Sequence[str] = ("age", "sex"),
                 unseen: UnseenPolicy = "error", parametric: bool = True,
                 empirical_bayes: bool = True, mean_only: bool = False,
                 ref_site: str | None = None, categorical: Sequence[str] | None = None):
        self.site = site
        self.covariates = covariates
        self.unseen = unseen
        self.parametric = parametric
        self.empirical_bayes = empirical_bayes
        self.mean_only = mean_only
        self.ref_site = ref_site
        self.categorical = categorical

    def _nuisance(self) -> list[str]:
        return [self.site, *_names(self.covariates)]

    def fit(self, X: pd.DataFrame, y=None) -> ComBatTransformer:
        """Estimate site effects on these rows (``y`` is ignored).

        Parameters
        ----------
        X : DataFrame (n_samples, n_columns)
            Site column, covariate columns and features.
        y : ignored

        Returns
        -------
        self
        """
        if self.unseen not in ("error", "pooled"):
            raise BadInputError(f"ComBatTransformer: unseen must be 'error' or 'pooled', got "
                                f"{self.unseen!r}")
        nuisance = self._nuisance()
        _check_frame(X, "ComBatTransformer.fit", nuisance)
        self.feature_names_, self.ignored_columns_ = _feature_columns(
            X, nuisance, "ComBatTransformer.fit")
        values = _feature_values(X, self.feature_names_, "ComBatTransformer.fit")
        covs = _names(self.covariates)
        self.combat_ = ComBat(parametric=self.parametric, empirical_bayes=self.empirical_bayes,
                              mean_only=self.mean_only, ref_site=self.ref_site,
                              categorical=self.categorical)
        self.combat_.fit(values, X[self.site].to_numpy(), X[covs] if covs else None)
        self.sites_ = self.combat_.sites_
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonize the feature columns of ``X`` with the fitted site effects.

        Returns
        -------
        DataFrame (n_samples, n_features)
            Same index; the feature columns only.

        Raises
        ------
        BadInputError
            A site not seen in fitting (``unseen="error"``), a covariate level not seen in
            fitting, or a missing column.
        """
        if not hasattr(self, "combat_"):
            raise BadInputError("ComBatTransformer: call fit before transform")
        caller = "ComBatTransformer.transform"
        _check_frame(X, caller, self._nuisance())
        values = _feature_values(X, self.feature_names_, caller)
        sites = X[self.site].to_numpy().astype(str)
        unknown = ~np.isin(sites, self.sites_)
        if unknown.any() and self.unseen == "error":
            raise BadInputError(
                f"{caller}: site(s) {sorted(map(str, set(sites[unknown])))} in column '{self.site}' were not "
                f"seen in fit (fitted sites: {[str(s) for s in self.sites_]}); refit with them or use "
                "unseen='pooled'")
        covs = _names(self.covariates)
        out = values.copy()
        seen = ~unknown
        if seen.any():
            # the pooled branch leaves unseen rows as they are (see the class docstring)
            out[seen] = self.combat_.transform(values[seen], sites[seen],
                                               X.loc[seen, covs] if covs else None)
        if unknown.any() and covs:
            # unseen rows still go through the covariate checks (unknown levels, types)
            self.combat_._covariate_columns(X.loc[unknown, covs], int(unknown.sum()), fitting=False)
        return pd.DataFrame(out, index=X.index, columns=self.feature_names_)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output columns (the feature columns)."""
        return np.asarray(self.feature_names_, dtype=object)


class ConfoundRegressor(TransformerMixin, BaseEstimator):
    """Regress confounds out of every feature, with coefficients learned on the training rows.

    Each feature is fitted by ordinary least squares on an intercept and the confound columns
    (numeric ones as they are; text/boolean ones dummy coded against their first sorted level,
    levels fixed at fit) on the rows given to ``fit``. ``transform`` returns, for any rows,
    ``feature - confounds @ beta`` (the residual plus the fitted intercept): the residual of the
    training model with the feature's training mean added back when the confounds are centred at
    their training means (``keep_mean=True``, the default: features stay in their own units and
    levels, which matters for a later threshold or for Fisher z values). With ``keep_mean=False``
    the plain residual ``feature - intercept - confounds @ beta`` is returned.

    Parameters
    ----------
    confounds : sequence of str
        Columns of ``X`` to regress out (e.g. ``("age", "sex", "mean_fd")``).
    keep_mean : bool
        Add the training mean of each feature back to its residual.

    Attributes
    ----------
    coef_ : ndarray (n_confound_columns, n_features)
        Slopes (dummy columns included), for confounds centred at ``confound_means_``.
    intercept_ : ndarray (n_features,)
        Training mean of each feature (the intercept for centred confounds).
    confound_means_ : ndarray (n_confound_columns,)
    levels_ : dict
        Levels of each categorical confound.
    feature_names_, ignored_columns_ : list
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"f": rng.normal(size=50), "age": rng.normal(40, 10, 50)})
    >>> X["f"] += 0.1 * X["age"]
    >>> out = ConfoundRegressor(confounds=("age",)).fit_transform(X)
    >>> abs(float(np.corrcoef(out["f"], X["age"])[0, 1])) < 1e-10
    True
    """

    def __init__(self, confounds: Sequence[str] = ("age", "sex"), keep_mean: bool = True):
        self.confounds = confounds
        self.keep_mean = keep_mean

    def _design(self, X: pd.DataFrame, fitting: bool, caller: str) -> np.ndarray:
        blocks = []
        if fitting:
            self.levels_ = {}
        for column in _names(self.confounds):
            values = X[column]
            if fitting and (not pd.api.types.is_numeric_dtype(values)
                            or pd.api.types.is_bool_dtype(values)):
                self.levels_[column] = sorted(values.astype(str).unique())
            if column in self.levels_:
                levels = self.levels_[column]
                text = values.astype(str).to_numpy()
                unknown = sorted(set(text) - set(levels))
                if unknown:
                    raise BadInputError(f"{caller}: confound '{column}' has level(s) {unknown} not "
                                        f"seen in fit ({levels})")
                blocks.append(np.column_stack([(text == lev).astype(float) for lev in levels[1:]])
                              if len(levels) > 1 else np.zeros((len(X), 0)))
            else:
                try:
                    blocks.append(values.to_numpy(np.float64)[:, None])
                except (TypeError, ValueError):
                    raise BadInputError(f"{caller}: confound '{column}' is not numeric") from None
        return np.hstack(blocks) if blocks else np.zeros((len(X), 0))

    def fit(self, X: pd.DataFrame, y=None) -> ConfoundRegressor:
        """Fit each feature on the confounds over these rows (``y`` is ignored)."""
        caller = "ConfoundRegressor.fit"
        nuisance = _names(self.confounds)
        _check_frame(X, caller, nuisance)
        self.feature_names_, self.ignored_columns_ = _feature_columns(X, nuisance, caller)
        values = _feature_values(X, self.feature_names_, caller)
        design = self._design(X, fitting=True, caller=caller)
        self.confound_means_ = design.mean(axis=0)
        centred = design - self.confound_means_
        fit = ols(np.column_stack([np.ones(len(X)), centred]), values,
                  rank_deficient="minimum_norm", what=caller)
        self.intercept_ = fit.coef[0]
        self.coef_ = fit.coef[1:]
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Features minus the fitted confound effects, DataFrame (n_samples, n_features)."""
        if not hasattr(self, "coef_"):
            raise BadInputError("ConfoundRegressor: call fit before transform")
        caller = "ConfoundRegressor.transform"
        _check_frame(X, caller, _names(self.confounds))
        values = _feature_values(X, self.feature_names_, caller)
        centred = self._design(X, fitting=False, caller=caller) - self.confound_means_
        out = values - centred @ self.coef_
        if not self.keep_mean:
            out -= self.intercept_
        return pd.DataFrame(out, index=X.index, columns=self.feature_names_)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output columns (the feature columns)."""
        return np.asarray(self.feature_names_, dtype=object)
