"""ComBat against neuroCombat, out-of-sample use, errors, and the longitudinal variant."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from theramark.errors import BadInputError
from theramark.group.harmonize import ComBat, LongitudinalComBat


def _site_data(seed=0, n_per_site=20, n_features=25):
    rng = np.random.default_rng(seed)
    sites = np.repeat(["a", "b", "c"], n_per_site)
    n = len(sites)
    # ages are integers so that neuroCombat's float32 cast of continuous covariates is exact
    age = rng.integers(20, 60, n).astype(float)
    covars = pd.DataFrame({
        "sex": rng.choice(["F", "M"], n), "group": rng.choice(["HC", "MDD"], n), "age": age,
    })
    shift = {"a": 0.0, "b": 1.0, "c": -0.5}
    scale = {"a": 1.0, "b": 2.0, "c": 0.6}
    location = np.array([shift[s] for s in sites])[:, None] * rng.normal(1, 0.3, n_features)
    noise = rng.normal(size=(n, n_features)) * np.array([scale[s] for s in sites])[:, None]
    group_effect = 0.8 * (covars["group"] == "MDD").to_numpy(float)[:, None]
    data = 5 + location + noise + 0.03 * age[:, None] + group_effect
    return data, sites, covars


def _neurocombat(data, sites, covars, parametric, ref_site, with_covariates, monkeypatch):
    neuro = pytest.importorskip("neuroCombat")
    # neuroCombat 0.2.12 still calls np.int (removed in NumPy 1.24) on the ref-batch path
    monkeypatch.setattr(np, "int", int, raising=False)
    table = covars.assign(site=sites) if with_covariates else pd.DataFrame({"site": sites})
    with contextlib.redirect_stdout(io.StringIO()):
        out = neuro.neuroCombat(
            data.T.copy(), table, "site",
            categorical_cols=["sex", "group"] if with_covariates else None,
            continuous_cols=["age"] if with_covariates else None,
            parametric=parametric, ref_batch=ref_site,
        )
    return out["data"].T


@pytest.mark.parametrize("parametric", [True, False])
@pytest.mark.parametrize("ref_site", [None, "b"])
@pytest.mark.parametrize("with_covariates", [True, False])
def test_matches_neurocombat(parametric, ref_site, with_covariates, monkeypatch):
    data, sites, covars = _site_data()
    expected = _neurocombat(data, sites, covars, parametric, ref_site, with_covariates,
                            monkeypatch)
    model = ComBat(parametric=parametric, ref_site=ref_site)
    got = model.fit_transform(data, sites, covars if with_covariates else None)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    if ref_site is not None:
        np.testing.assert_array_equal(got[sites == ref_site], data[sites == ref_site])


def test_removes_site_effects_and_keeps_group_effect():
    data, sites, covars = _site_data(seed=1, n_per_site=60, n_features=40)
    out = ComBat().fit_transform(data, sites, covars)
    site_means = np.array([out[sites == s].mean(axis=0) for s in "abc"])
    raw_means = np.array([data[sites == s].mean(axis=0) for s in "abc"])
    assert np.ptp(site_means, axis=0).mean() < 0.35 * np.ptp(raw_means, axis=0).mean()
    site_sd = np.array([out[sites == s].std(axis=0) for s in "abc"])
    assert np.ptp(site_sd, axis=0).mean() < 0.3
    mdd = (covars["group"] == "MDD").to_numpy()
    preserved = (out[mdd].mean(axis=0) - out[~mdd].mean(axis=0)).mean()
    assert preserved == pytest.approx(0.8, abs=0.15)


def test_fit_on_subset_transform_other_is_out_of_sample():
    data, sites, covars = _site_data(seed=2, n_per_site=30)
    train = np.arange(len(sites)) % 3 != 0
    model = ComBat().fit(data[train], sites[train], covars[train].reset_index(drop=True))
    test_out = model.transform(data[~train], sites[~train], covars[~train].reset_index(drop=True))
    # the same learned parameters applied to the training rows give the fit_transform result
    full = ComBat().fit_transform(data[train], sites[train], covars[train].reset_index(drop=True))
    np.testing.assert_allclose(
        model.transform(data[train], sites[train], covars[train].reset_index(drop=True)), full)
    # the transform is the fitted affine map: one test sample alone gives the same answer
    one = model.transform(data[~train][:1], sites[~train][:1],
                          covars[~train].reset_index(drop=True).iloc[:1])
    np.testing.assert_allclose(one, test_out[:1])


def test_dataframe_roundtrip_and_unseen_site_error():
    data, sites, covars = _site_data()
    frame = pd.DataFrame(data, columns=[f"f{i}" for i in range(data.shape[1])])
    model = ComBat().fit(frame, sites, covars)
    out = model.transform(frame, sites, covars)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(frame.columns)
    with pytest.raises(BadInputError, match="not seen in fitting"):
        model.transform(frame.iloc[:2], np.array(["a", "zz"]), covars.iloc[:2])
    with pytest.raises(BadInputError, match="level"):
        bad = covars.iloc[:2].copy()
        bad["sex"] = ["X", "F"]
        model.transform(frame.iloc[:2], sites[:2], bad)


def test_bad_inputs():
    data, sites, covars = _site_data()
    with pytest.raises(BadInputError, match="ref_site"):
        ComBat(ref_site="nowhere").fit(data, sites, covars)
    with pytest.raises(BadInputError, match="fewer than 2"):
        ComBat().fit(data[:21], np.array(["a"] * 20 + ["b"]), None)
    holes = data.copy()
    holes[3, 4] = np.nan
    with pytest.raises(BadInputError, match="missing"):
        ComBat().fit(holes, sites, covars)
    confounded = covars.assign(scanner=sites)
    with pytest.raises(BadInputError, match="confounded"):
        ComBat().fit(data, sites, confounded)


def test_longitudinal_combat_keeps_participant_effects():
    rng = np.random.default_rng(3)
    n_sub, n_features = 45, 20
    subject_site = np.repeat(["a", "b", "c"], 15)
    participant_effect = rng.normal(0, 1.0, (n_sub, n_features))
    rows, values = [], []
    for session in ("pre", "post"):
        for j in range(n_sub):
            site = subject_site[j]
            shift = {"a": 0.0, "b": 1.5, "c": -1.0}[site]
            scale = {"a": 1.0, "b": 1.8, "c": 0.7}[site]
            values.append(participant_effect[j] + shift + scale * rng.normal(0, 0.5, n_features)
                          - 0.4 * (session == "post"))
            rows.append((f"sub-{j:02d}", session, site))
    meta = pd.DataFrame(rows, columns=["participant_id", "session", "site"])
    data = np.vstack(values)
    model = LongitudinalComBat()
    out = model.fit_transform(data, meta["site"], meta[["session"]], meta["participant_id"])
    means = np.array([out[meta["site"] == s].mean(axis=0) for s in "abc"])
    assert np.ptp(means, axis=0).mean() < 0.6  # raw spread is 2.5
    post = (meta["session"] == "post").to_numpy()
    assert (out[post].mean() - out[~post].mean()) == pytest.approx(-0.4, abs=0.1)
    # participant effects survive: pre/post of the same participant stay correlated
    r = np.corrcoef(out[~post, 0], out[post, 0])[0, 1]
    assert r > 0.5
    with pytest.raises(BadInputError, match="participants"):
        LongitudinalComBat().fit(data, meta["site"], meta[["session"]])


def test_longitudinal_combat_location_model_is_the_reml_mixed_model():
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM

    rng = np.random.default_rng(4)
    n_sub = 30
    site_of = np.repeat(["a", "b", "c"], 10)
    meta = pd.DataFrame({
        "participant_id": np.tile([f"s{j}" for j in range(n_sub)], 2),
        "site": np.tile(site_of, 2), "session": np.repeat(["pre", "post"], n_sub),
    })
    person = rng.normal(0, 1, n_sub)
    y = (np.tile(person, 2) + 0.8 * (meta["site"] == "b") - 0.3 * (meta["session"] == "post")
         + rng.normal(0, 0.5, 2 * n_sub)).to_numpy()
    data = np.column_stack([y, y * 2 + rng.normal(0, 0.1, 2 * n_sub)])
    model = LongitudinalComBat().fit(data, meta["site"], meta[["session"]], meta["participant_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MixedLM.from_formula("y ~ 0 + C(site) + C(session)", meta.assign(y=y),
                                   groups=meta["participant_id"]).fit(reml=True)
    site_coefs = ref.fe_params[[f"C(site)[{s}]" for s in "abc"]].to_numpy()
    assert model.grand_mean_[0] == pytest.approx(site_coefs.mean(), rel=1e-4)
    assert model.var_pooled_[0] == pytest.approx(ref.scale, rel=1e-4)
    assert model.beta_covariates_[0, 0] == pytest.approx(
        ref.fe_params["C(session)[T.pre]"], rel=1e-4)


@pytest.mark.parametrize("options", [{"eb": False}, {"mean_only": True},
                                     {"mean_only": True, "parametric": False}])
def test_matches_neurocombat_without_eb_and_mean_only(options):
    neuro = pytest.importorskip("neuroCombat")
    data, sites, covars = _site_data(seed=5)
    with contextlib.redirect_stdout(io.StringIO()):
        expected = neuro.neuroCombat(
            data.T.copy(), covars.assign(site=sites), "site", categorical_cols=["sex", "group"],
            continuous_cols=["age"], **options)["data"].T
    model = ComBat(empirical_bayes=options.get("eb", True),
                   mean_only=options.get("mean_only", False),
                   parametric=options.get("parametric", True))
    np.testing.assert_allclose(model.fit_transform(data, sites, covars), expected, atol=1e-6)
