"""ComBat harmonization of site (scanner) effects that keeps the biological covariates.

ComBat (Johnson, Li & Rabinovic 2007, Biostatistics 8:118; Fortin et al. 2017/2018 for imaging) models
every feature ``v`` of sample ``j`` at site ``i`` as

    y_ijv = alpha_v + X_ij beta_v + gamma_iv + delta_iv * e_ijv,    e_ijv ~ N(0, sigma_v**2),

estimates ``alpha``, ``beta`` and the site means by OLS on the full design (sites one-hot + the
covariates to preserve), standardizes the data, and shrinks the per-site location ``gamma_iv`` and
scale ``delta_iv**2`` toward priors shared by all features (empirical Bayes: parametric
normal/inverse-gamma priors solved iteratively, or a non-parametric prior that weights the other
features' estimates by their likelihood). The harmonized value removes the site location and scale
and adds back the covariate effects, so group, session, age and sex differences survive.

:class:`ComBat` follows neuroCombat's estimator step by step (same priors, same iteration and stopping
rule), so on the data it was fitted to ``fit(...).transform(...)`` reproduces ``neuroCombat`` to
rounding. As a scikit-learn style estimator it can be fitted on one subset (controls, baseline
sessions, a training fold) and applied to another; a site absent from the fit is an error, never a
silent pass-through. With ``ref_site`` the reference site's data are left unchanged and the others
are mapped onto it.

:class:`LongitudinalComBat` replaces the OLS step by a linear mixed model with a random intercept per
participant (longComBat, Beer et al. 2020, NeuroImage 220:117129): see its docstring for the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

__all__ = ["ComBat", "LongitudinalComBat"]


# float64 values per block of features: a 32 MB working copy, so the temporaries of one block stay
# a few hundred MB whatever the number of features
_BLOCK_VALUES = 2**22
# residual SD / RMS below which a feature counts as constant within sites (float32 data resolve 6e-8)
_CONSTANT_RTOL = 1e-10


def _as_2d(data, name: str = "data") -> tuple[np.ndarray, list[str] | None, pd.Index | None]:
    """The data as a 2-D float array without a copy where possible (float32 stays float32).

    Blocks are cast to float64 as they are processed, so the numbers are those of a float64 copy.
    """
    if isinstance(data, pd.DataFrame):
        non_numeric = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
        if non_numeric:
            raise BadInputError(f"ComBat {name}: non-numeric feature column(s) {non_numeric[:5]}")
        kinds = set(data.dtypes)
        if len(kinds) == 1 and kinds.pop() in (np.dtype(np.float32), np.dtype(np.float64)):
            return data.to_numpy(), list(map(str, data.columns)), data.index
        return data.to_numpy(float), list(map(str, data.columns)), data.index
    array = np.asarray(data)
    if array.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        array = np.asarray(data, dtype=float)
    if array.ndim != 2:
        raise BadInputError(f"ComBat {name}: expected (n_samples, n_features), got {array.shape}")
    return array, None, None


def _column_blocks(n_samples: int, n_features: int, block_size: int | None) -> list[slice]:
    """Slices of feature columns, ``block_size`` wide (default: about 32 MB of float64)."""
    if block_size is None:
        block_size = max(1, _BLOCK_VALUES // max(n_samples, 1))
    elif isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise BadInputError(f"ComBat: block_size must be a positive integer (feature columns per "
                            f"block) or None, got {block_size!r}")
    # A one-column block is contiguous along the samples, where numpy sums pairwise (other
    # rounding than the column-by-column sums of a wider block): blocks are at least 2 wide.
    width = max(int(block_size), 2)
    starts = list(range(0, n_features, width))
    if len(starts) > 1 and n_features - starts[-1] == 1:
        starts.pop()
    return [slice(start, stop) for start, stop in zip(starts, starts[1:] + [n_features], strict=True)]


class ComBat:
    """ComBat harmonization (parametric or non-parametric empirical Bayes).

    Parameters
    ----------
    parametric : bool
        Parametric priors (normal for the location, inverse gamma for the scale) or the
        non-parametric prior of Johnson et al.
    empirical_bayes : bool
        Shrink the site estimates (``False``: plain location/scale adjustment per feature).
    mean_only : bool
        Adjust the site means only (no scaling).
    ref_site : str, optional
        Reference site: its data stay as they are; the others are mapped onto it.
    categorical : sequence of str, optional
        Covariate columns to treat as categorical. By default non-numeric columns are categorical
        (dummy coded, first sorted level dropped, as neuroCombat) and numeric ones continuous.
    tol : float
        Relative change at which the parametric iteration stops (neuroCombat's ``conv``).
    max_iter : int
        Most iterations of the parametric empirical Bayes step.
    block_size : int, optional
        Feature columns processed at a time. Every step but the empirical Bayes priors is per
        feature, so the data are read in column blocks (cast to float64 one block at a time) and
        the result is the same for any block size; memory beyond the input and the output is a
        few blocks. Default: about 32 MB of float64 per block (``2**22 / n_samples`` columns);
        blocks are at least 2 columns wide.

    Attributes
    ----------
    sites_ : ndarray of str
        Sites seen in fitting (sorted).
    gamma_star_, delta_star_ : ndarray (n_sites, n_features)
        Shrunken site locations and scales (standardized units).
    var_pooled_ : ndarray (n_features,)
    grand_mean_ : ndarray (n_features,)
    beta_covariates_ : ndarray (n_covariate_columns, n_features)
    gamma_hat_, delta_hat_ : ndarray (n_sites, n_features)
        Site locations and scales before shrinkage.
    constant_features_ : ndarray of bool (n_features,)
        Features without residual variance (residual SD below ``1e-10`` of the feature's root mean
        square, i.e. zero up to rounding): left unchanged (site estimates 0 and 1).

    Notes
    -----
    Memory: ``fit`` holds the input plus a few column blocks and ``(n_sites, n_features)``
    summaries; ``transform`` adds the float64 output (or writes into ``out``). A float32 input is
    never copied whole to float64.

    Examples
    --------
    >>> model = ComBat().fit(train, sites_train, covars_train)      # doctest: +SKIP
    >>> harmonized_test = model.transform(test, sites_test, covars_test)  # doctest: +SKIP
    """

    def __init__(self, parametric: bool = True, empirical_bayes: bool = True,
                 mean_only: bool = False, ref_site: str | None = None,
                 categorical: Sequence[str] | None = None, tol: float = 1e-4,
                 max_iter: int = 1000, block_size: int | None = None):
        self.parametric = parametric
        self.empirical_bayes = empirical_bayes
        self.mean_only = mean_only
        self.ref_site = ref_site
        self.categorical = categorical
        self.tol = tol
        self.max_iter = max_iter
        self.block_size = block_size

    # --- design -----------------------------------------------------------------------------------
    def _covariate_columns(self, covariates: pd.DataFrame | None, n: int, fitting: bool
                           ) -> np.ndarray:
        if covariates is None:
            if fitting:
                self.covariate_spec_ = []
            elif self.covariate_spec_:
                raise BadInputError("ComBat.transform: the model was fitted with covariates "
                                    f"{[c for c, _ in self.covariate_spec_]}; pass them")
            return np.zeros((n, 0))
        if not isinstance(covariates, pd.DataFrame):
            raise BadInputError("ComBat: covariates must be a DataFrame (one column per covariate)")
        if len(covariates) != n:
            raise BadInputError(f"ComBat: covariates have {len(covariates)} rows, data {n}")
        if fitting:
            categorical = set(self.categorical) if self.categorical is not None else {
                c for c in covariates.columns
                if not pd.api.types.is_numeric_dtype(covariates[c])
                or pd.api.types.is_bool_dtype(covariates[c])}
            spec = []
            for column in covariates.columns:
                if column in categorical:
                    levels = sorted(covariates[column].dropna().astype(str).unique())
                    spec.append((column, levels))
                else:
                    spec.append((column, None))
            self.covariate_spec_ = spec
        blocks = []
        for column, levels in self.covariate_spec_:
            if column not in covariates:
                raise BadInputError(f"ComBat: covariate column '{column}' missing")
            values = covariates[column]
            if values.isna().any():
                raise BadInputError(f"ComBat: covariate '{column}' has missing values "
                                    f"(rows {list(np.flatnonzero(values.isna())[:5])})")
            if levels is None:
                try:
                    blocks.append(values.to_numpy(float)[:, None])
                except (TypeError, ValueError):
                    raise BadInputError(f"ComBat: covariate '{column}' is not numeric") from None
            else:
                text = values.astype(str).to_numpy()
                unknown = sorted(set(text) - set(levels))
                if unknown:
                    raise BadInputError(f"ComBat: covariate '{column}' has level(s) {unknown} "
                                        f"not seen in fitting ({levels})")
                blocks.append(np.column_stack([(text == lev).astype(float) for lev in levels[1:]])
                              if len(levels) > 1 else np.zeros((n, 0)))
        return np.hstack(blocks) if blocks else np.zeros((n, 0))

    def _site_index(self, sites, n: int, fitting: bool) -> np.ndarray:
        sites = np.asarray(sites).astype(str)
        if sites.shape != (n,):
            raise BadInputError(f"ComBat: sites must have one label per sample ({n}), "
                                f"got shape {sites.shape}")
        if fitting:
            self.sites_, index, counts = np.unique(sites, return_inverse=True, return_counts=True)
            small = self.sites_[counts < 2]
            if len(small):
                raise BadInputError(f"ComBat: site(s) {list(small)} have fewer than 2 samples; "
                                    "a site's scale cannot be estimated")
            if self.ref_site is not None and str(self.ref_site) not in self.sites_:
                raise BadInputError(f"ComBat: ref_site '{self.ref_site}' not among the sites "
                                    f"{list(self.sites_)}")
            return index
        unknown = sorted(map(str, set(sites) - set(self.sites_)))
        if unknown:
            raise BadInputError(
                f"ComBat.transform: site(s) {unknown} were not seen in fitting (fitted sites: "
                f"{[str(s) for s in self.sites_]}); refit including them or harmonize them separately"
            )
        return np.searchsorted(self.sites_, sites)

    # --- fitting ----------------------------------------------------------------------------------
    def _location_context(self, n: int, participants) -> object:
        """Whatever :meth:`_fit_location` needs besides the design (nothing for OLS)."""
        return None

    def _design(self, site_index: np.ndarray, covs: np.ndarray) -> np.ndarray:
        n_sites = len(self.sites_)
        design = np.hstack([np.eye(n_sites)[site_index], covs])
        if self._ref is not None:
            design[:, self._ref] = 1.0
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise BadInputError("ComBat: the covariates are confounded with site (the design "
                                "is rank deficient); drop the covariate or the site")
        return design

    def _fit_location(self, block, design, site_index, context):
        """B_hat (n_sites + n_cov, B) and the pooled variance (B,) of one column block.

        OLS here (a mixed model in the subclass). Every output column depends on its own data
        column only, which is what makes the blocked fit equal to the whole-table fit.
        """
        b_hat = np.linalg.solve(design.T @ design, design.T @ block)
        resid = block - design @ b_hat
        rows = site_index == self._ref if self._ref is not None else slice(None)
        var_pooled = np.mean(resid[rows] ** 2, axis=0)
        return b_hat, var_pooled

    @staticmethod
    def _check_finite(x: np.ndarray, blocks: list[slice]) -> None:
        bad = []
        for cols in blocks:
            finite = np.isfinite(x[:, cols]).all(axis=0)
            bad.extend((cols.start + np.flatnonzero(~finite)).tolist())
            if len(bad) >= 5:
                break
        if bad:
            raise BadInputError(f"ComBat: data have missing or infinite values in feature "
                                f"column(s) {bad[:5]}; impute or drop them first")

    def fit(self, data, sites, covariates: pd.DataFrame | None = None, participants=None):
        """Estimate the site effects.

        Parameters
        ----------
        data : array or DataFrame, shape (n_samples, n_features)
            Features to harmonize (no missing values). Float32 data are read in float64 blocks,
            never copied whole.
        sites : array-like of str, shape (n_samples,)
        covariates : DataFrame, shape (n_samples, n_covariates), optional
            Biological covariates to preserve (group, session, age, sex...).
        participants : array-like of str, shape (n_samples,), optional
            Participant labels (:class:`LongitudinalComBat` only).

        Returns
        -------
        self

        Notes
        -----
        One pass over the column blocks fits the location model, standardizes the block and keeps
        per-site summaries (means, variances, sums of squares; ``(n_sites, n_features)`` each);
        the empirical Bayes step then works on those summaries for all features at once, since
        its priors pool every feature. The parametric iteration uses
        ``sum_k (s_k - g)**2 = SS + n (mean - g)**2`` (SS the centred sum of squares of the site).
        """
        x, self.feature_names_, _ = _as_2d(data)
        n, n_features = x.shape
        blocks = _column_blocks(n, n_features, self.block_size)
        self._check_finite(x, blocks)
        site_index = self._site_index(sites, n, fitting=True)
        self._ref = (int(np.flatnonzero(self.sites_ == str(self.ref_site))[0])
                     if self.ref_site is not None else None)
        covs = self._covariate_columns(covariates, n, fitting=True)
        context = self._location_context(n, participants)
        design = self._design(site_index, covs)
        n_sites = len(self.sites_)
        counts = np.bincount(site_index, minlength=n_sites)
        members = [np.flatnonzero(site_index == i) for i in range(n_sites)]
        batch = design[:, :n_sites]  # site indicators (all ones in the reference column)
        batch_gram = batch.T @ batch
        parametric_eb = self.empirical_bayes and self.parametric and not self.mean_only
        nonparametric_eb = self.empirical_bayes and not self.parametric

        grand_mean = np.empty(n_features)
        var_pooled = np.empty(n_features)
        beta_covariates = np.empty((covs.shape[1], n_features))
        gamma_hat = np.empty((n_sites, n_features))
        delta_hat = np.ones((n_sites, n_features))
        summaries = {key: np.empty((n_sites, n_features)) for key in (
            (["mean", "ss"] if parametric_eb else []) + (["s1", "s2"] if nonparametric_eb else []))}
        for cols in blocks:
            block = np.array(x[:, cols], dtype=float)
            b_hat, var_block = self._fit_location(block, design, site_index, context)
            grand = b_hat[self._ref] if self._ref is not None else (counts / n) @ b_hat[:n_sites]
            # A feature constant within every site carries no site scale to estimate. Its residuals
            # are rounding noise (~1e-16 of its size, their exact value depending on the BLAS
            # path), so "constant" is a residual SD below 1e-10 of the feature's RMS, not == 0.
            constant = var_block <= _CONSTANT_RTOL**2 * np.einsum("ij,ij->j", block, block) / n
            var_block[constant] = 0.0
            grand_mean[cols], var_pooled[cols] = grand, var_block
            beta_covariates[:, cols] = b_hat[n_sites:]
            standardized = block - grand
            del block
            standardized -= covs @ b_hat[n_sites:]
            standardized /= np.sqrt(np.where(constant, 1.0, var_block))
            standardized[:, constant] = 0.0
            gamma_hat[:, cols] = np.linalg.solve(batch_gram, batch.T @ standardized)
            for i, rows in enumerate(members):
                site = standardized[rows]
                if not self.mean_only:
                    delta_hat[i, cols] = np.var(site, axis=0, ddof=1)
                if parametric_eb:
                    summaries["mean"][i, cols] = site.mean(axis=0)
                    summaries["ss"][i, cols] = delta_hat[i, cols] * (len(rows) - 1)
                if nonparametric_eb:
                    summaries["s1"][i, cols] = site.sum(axis=0)
                    summaries["s2"][i, cols] = (site**2).sum(axis=0)
        if not self.mean_only:
            delta_hat[delta_hat == 0] = 1.0
        constant = var_pooled == 0
        self.constant_features_ = constant
        self.grand_mean_ = grand_mean
        self.beta_covariates_ = beta_covariates
        self.var_pooled_ = np.where(constant, 1.0, var_pooled)
        self._estimate_site_effects(gamma_hat, delta_hat, counts, summaries)
        return self

    def _estimate_site_effects(self, gamma_hat: np.ndarray, delta_hat: np.ndarray,
                               counts: np.ndarray, summaries: dict[str, np.ndarray]) -> None:
        if not self.empirical_bayes:
            gamma_star, delta_star = gamma_hat, delta_hat
        elif self.parametric:
            gamma_star, delta_star = self._parametric(gamma_hat, delta_hat, counts, summaries)
        else:
            gamma_star, delta_star = self._nonparametric(gamma_hat, delta_hat, counts, summaries)
        gamma_star = np.array(gamma_star, float)
        delta_star = np.array(delta_star, float)
        if self._ref is not None:
            gamma_star[self._ref] = 0.0
            delta_star[self._ref] = 1.0
        self.gamma_hat_, self.delta_hat_ = gamma_hat, delta_hat
        self.gamma_star_, self.delta_star_ = gamma_star, delta_star

    def _parametric(self, gamma_hat, delta_hat, counts, summaries):
        gamma_bar = gamma_hat.mean(axis=1)
        t2 = gamma_hat.var(axis=1, ddof=1)
        gamma_star = np.empty_like(gamma_hat)
        delta_star = np.ones_like(delta_hat)
        for i in range(len(self.sites_)):
            n = counts[i]
            if i == self._ref:
                gamma_star[i], delta_star[i] = 0.0, 1.0  # the reference site is not adjusted
                continue
            if self.mean_only:
                gamma_star[i] = (t2[i] * gamma_hat[i] + gamma_bar[i]) / (t2[i] + 1.0)
                continue
            site_mean, site_ss = summaries["mean"][i], summaries["ss"][i]
            m, s2 = delta_hat[i].mean(), delta_hat[i].var(ddof=1)
            a_prior = (2 * s2 + m**2) / s2
            b_prior = (m * s2 + m**3) / s2
            g_old, d_old = gamma_hat[i].copy(), delta_hat[i].copy()
            for _ in range(self.max_iter):
                g_new = (t2[i] * n * gamma_hat[i] + d_old * gamma_bar[i]) / (t2[i] * n + d_old)
                sum2 = site_ss + n * (site_mean - g_new) ** 2
                d_new = (0.5 * sum2 + b_prior) / (n / 2.0 + a_prior - 1.0)
                # signed denominator as in sva's it.sol and neuroCombat, so results agree
                with np.errstate(divide="ignore", invalid="ignore"):
                    change = max(np.max(np.abs(g_new - g_old) / g_old),
                                 np.max(np.abs(d_new - d_old) / d_old))
                g_old, d_old = g_new, d_new
                if change <= self.tol:
                    break
            gamma_star[i], delta_star[i] = g_new, d_new
        return gamma_star, delta_star

    def _nonparametric(self, gamma_hat, delta_hat, counts, summaries):
        """Each feature's posterior mean over the other features' (gamma, delta), likelihood-weighted.

        Vectorized as in Johnson et al.'s ``int.eprior``: for a site with ``n`` samples the Gaussian
        likelihood of feature ``v``'s data under feature ``u``'s estimates uses
        ``sum_k (x_kv - g_u)**2 = S2_v - 2 g_u S1_v + n g_u**2``; weights are computed in log space
        so that large sites do not underflow. Rows of the (features × features) weight matrix are
        formed a chunk at a time (about 32 MB each).
        """
        n_features = gamma_hat.shape[1]
        chunk = max(1, min(2048, _BLOCK_VALUES // max(n_features, 1)))
        gamma_star = np.empty_like(gamma_hat)
        delta_star = np.empty_like(delta_hat)
        for i in range(len(self.sites_)):
            n = counts[i]
            g, d = gamma_hat[i], delta_hat[i]
            s1, s2 = summaries["s1"][i], summaries["s2"][i]
            for start in range(0, n_features, chunk):
                rows = slice(start, min(start + chunk, n_features))
                sum2 = s2[rows, None] - 2 * s1[rows, None] * g[None] + n * g[None] ** 2
                log_lh = -0.5 * n * np.log(2 * np.pi * d)[None] - sum2 / (2 * d[None])
                idx = np.arange(rows.start, rows.stop)
                log_lh[idx - start, idx] = -np.inf  # leave the feature itself out
                log_lh -= log_lh.max(axis=1, keepdims=True)
                weight = np.exp(log_lh)
                total = weight.sum(axis=1)
                gamma_star[i, rows] = weight @ g / total
                delta_star[i, rows] = weight @ d / total
        return gamma_star, delta_star

    # --- applying ---------------------------------------------------------------------------------
    def transform(self, data, sites, covariates: pd.DataFrame | None = None, participants=None,
                  *, out: np.ndarray | None = None):
        """Remove the fitted site effects from ``data`` (same features as in fitting).

        Parameters
        ----------
        data : array or DataFrame, shape (n_samples, n_features)
        sites : array-like of str, shape (n_samples,)
        covariates : DataFrame, optional
            The covariate columns used in fitting.
        participants : array-like, optional
            Accepted for a common signature with :class:`LongitudinalComBat` (not used: the
            harmonizing map does not depend on the participant).
        out : ndarray, shape (n_samples, n_features), optional
            Float array to write the result into (it may be ``data`` itself: each column block is
            read before it is written). A float32 ``out`` stores the float64 result rounded.

        Returns
        -------
        array or DataFrame (same type, shape and labels as ``data``); ``out`` when given (wrapped
        in a DataFrame for DataFrame input). Float64 unless ``out`` says otherwise.

        Raises
        ------
        BadInputError
            A site or covariate level not seen in fitting, a feature mismatch, or a bad ``out``.
        """
        if not hasattr(self, "gamma_star_"):
            raise BadInputError("ComBat.transform: call fit first")
        x, names, index = _as_2d(data)
        if x.shape[1] != len(self.var_pooled_):
            raise BadInputError(f"ComBat.transform: {x.shape[1]} features, fitted on "
                                f"{len(self.var_pooled_)}")
        if names is not None and self.feature_names_ is not None and names != self.feature_names_:
            raise BadInputError("ComBat.transform: feature columns differ from those fitted")
        n = x.shape[0]
        site_index = self._site_index(sites, n, fitting=False)
        covs = self._covariate_columns(covariates, n, fitting=False)
        if out is None:
            result = np.empty(x.shape)
        elif (not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype.kind != "f"
              or not out.flags.writeable):
            raise BadInputError(f"ComBat.transform: out must be a writeable float ndarray of shape "
                                f"{x.shape}, got {type(out).__name__} "
                                f"{getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}")
        else:
            result = out
        ref_rows = site_index == self._ref if self._ref is not None else None
        scale_all = np.sqrt(self.var_pooled_)
        for cols in _column_blocks(n, x.shape[1], self.block_size):
            block = np.array(x[:, cols], dtype=float)
            grand, scale = self.grand_mean_[cols], scale_all[cols]
            mod_mean = covs @ self.beta_covariates_[:, cols]
            # ((x - grand - mod) / scale - gamma) / sqrt(delta) * scale + grand + mod, in place
            # (the same operations in the same order as the expression, fewer temporaries)
            harmonized = block - grand
            harmonized -= mod_mean
            harmonized /= scale
            harmonized -= self.gamma_star_[:, cols][site_index]
            harmonized /= np.sqrt(self.delta_star_[:, cols][site_index])
            harmonized *= scale
            harmonized += grand
            harmonized += mod_mean
            del mod_mean
            if ref_rows is not None:
                harmonized[ref_rows] = block[ref_rows]
            constant = self.constant_features_[cols]
            harmonized[:, constant] = block[:, constant]
            result[:, cols] = harmonized
        if index is not None:
            return pd.DataFrame(result, index=index, columns=data.columns, copy=False)
        return result

    def fit_transform(self, data, sites, covariates: pd.DataFrame | None = None,
                      participants=None, *, out: np.ndarray | None = None):
        """``fit`` then ``transform`` on the same samples (``out`` as in :meth:`transform`)."""
        return self.fit(data, sites, covariates, participants).transform(
            data, sites, covariates, participants, out=out)


class LongitudinalComBat(ComBat):
    """ComBat for repeated measures: the location model has a random intercept per participant.

    Model (per feature ``v``; longComBat, Beer et al. 2020)::

        y_ijtv = alpha_v + X_ijt beta_v + gamma_iv + eta_jv + delta_iv * e_ijtv,
        eta_jv ~ N(0, tau_v**2),  e_ijtv ~ N(0, sigma_v**2)

    for participant ``j`` scanned at site ``i`` at time ``t``. ``alpha``, ``beta`` and the site
    means are the REML fixed effects of the random-intercept model (the same REML engine as
    :func:`theramark.group.longitudinal.mixed_model`); the data are standardized by the residual
    SD ``sigma_v`` (not the total SD, so the participant effects ``eta`` stay in the data and are
    preserved), and the site location and scale are then shrunk with the same empirical Bayes
    priors as :class:`ComBat`. Participants may change site between sessions.

    ``fit``/``transform`` take ``participants`` (one label per sample) in addition to ComBat's
    arguments. With ``ref_site`` the residual variance comes from the mixed model on all sites
    (not the reference site alone, as in :class:`ComBat`), since the participant effects must be
    separated from the residual across every site. No R longComBat reference is available here:
    the REML step is the engine checked against lme4 and statsmodels, and the empirical Bayes
    step is ComBat's (checked against neuroCombat). The REML fit is per feature, so it runs on
    the same column blocks as ComBat's OLS (``block_size``).
    """

    def _location_context(self, n: int, participants) -> np.ndarray:
        if participants is None:
            raise BadInputError("LongitudinalComBat.fit: pass participants (one label per sample)")
        participants = np.asarray(participants).astype(str)
        if participants.shape != (n,):
            raise BadInputError("LongitudinalComBat.fit: participants must have one label per "
                                "sample")
        return participants

    def _design(self, site_index: np.ndarray, covs: np.ndarray) -> np.ndarray:
        try:
            return super()._design(site_index, covs)
        except BadInputError:
            raise BadInputError("LongitudinalComBat: the covariates are confounded with site "
                                "(the design is rank deficient)") from None

    def _fit_location(self, block, design, site_index, context):
        from theramark.group import _reml

        fit = _reml.fit_reml(_reml.sufficient_stats(design, block, context))
        return fit.beta.T, fit.sigma2
