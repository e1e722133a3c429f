"""Inference engines on real data (../shared), against scipy, statsmodels and bctpy."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from scipy.io import loadmat
from statsmodels.stats.multitest import multipletests

from tests.conftest import shared_path
from theramark._io import read_tsv
from theramark.group.inference import fdr_bh, max_t_permutation, nbs

SCALES = ["Zung_SDS", "BDI", "MC-SDS", "TAS-26"]


def _prepost():
    table = read_tsv(shared_path("data/ds003007_prepost_treatment/participants.tsv"))
    columns = [f"{scale}_ses-{session}" for scale in SCALES for session in ("pre", "post")]
    complete = table.dropna(subset=columns).reset_index(drop=True)
    pre = complete[[f"{s}_ses-pre" for s in SCALES]].to_numpy(float)
    post = complete[[f"{s}_ses-post" for s in SCALES]].to_numpy(float)
    return complete, pre, post


def test_paired_change_sign_flip_matches_scipy_ttest_rel():
    complete, pre, post = _prepost()
    assert len(complete) == 22  # participants with every pre and post score
    change = post - pre
    result = max_t_permutation(change, np.ones((len(change), 1)), [1], scheme="sign_flip",
                               n_permutations=2000, random_state=0)
    reference = stats.ttest_rel(post, pre, axis=0)
    # MC-SDS has a mean change of exactly 0 in these data: t = 0 up to rounding.
    np.testing.assert_allclose(result.statistic, reference.statistic, rtol=1e-10, atol=1e-12)
    # Symptom scales drop after treatment: BDI's permutation p agrees with the t-test's order.
    bdi = SCALES.index("BDI")
    assert result.statistic[bdi] < 0
    assert result.p_uncorrected[bdi] == pytest.approx(reference.pvalue[bdi], abs=0.01)
    assert result.p_fwe[bdi] <= 0.05  # survives correction over the four scales
    frame = result.to_frame(SCALES)
    assert frame.feature.tolist() == SCALES


def test_treatment_by_time_freedman_lane_matches_statsmodels_and_fdr():
    complete, pre, post = _prepost()
    treated = complete.group.isin(["depr_cbt", "depr_nfb"]).to_numpy(float)
    age = complete.age.to_numpy(float)
    change = post - pre
    design = np.column_stack([np.ones(len(change)), treated])
    result = max_t_permutation(change, design, [0, 1], nuisance=age[:, None],
                               n_permutations=999, random_state=1)
    model = sm.add_constant(np.column_stack([treated, age]))
    p_param = []
    for j in range(len(SCALES)):
        fit = sm.OLS(change[:, j], model).fit()
        assert result.statistic[j] == pytest.approx(fit.tvalues[1], rel=1e-10)
        p_param.append(fit.pvalues[1])
    np.testing.assert_allclose(fdr_bh(p_param), multipletests(p_param, method="fdr_bh")[1])
    assert np.all(result.p_fwe >= result.p_uncorrected)


def test_nbs_on_real_hcp_connectomes_equals_bctpy():
    bct = pytest.importorskip("bct")
    root = shared_path("data/hcp_aal2_roi_timeseries/hcp/subjects")
    connectomes = []
    for subject in sorted(p for p in root.iterdir() if p.is_dir()):
        series = loadmat(subject / "functional" / "TC_rsfMRI_REST1_LR.mat")["tc"]
        for segment in np.array_split(series, 4, axis=1):  # 4 x 300 volumes per subject
            r = np.corrcoef(segment)
            np.fill_diagonal(r, 0.0)
            connectomes.append(np.arctanh(np.clip(r, -0.999999, 0.999999)))
    connectomes = np.array(connectomes)
    x, y = connectomes[:8], connectomes[8:]  # subjects 1-2 against subjects 3-5
    k = 3
    with contextlib.redirect_stdout(io.StringIO()):
        p_bct, adj, null_bct = bct.nbs_bct(x.transpose(1, 2, 0), y.transpose(1, 2, 0), 5.0,
                                           k=k, seed=3)
    ours = nbs(x, y, 5.0, n_permutations=k, random_state=np.random.RandomState(3),
               split_signs=False)
    np.testing.assert_array_equal(ours.null_max, null_bct)
    bct_sizes = sorted(int((np.triu(adj) == lab).sum()) for lab in range(1, int(adj.max()) + 1))
    assert sorted(ours.sizes.tolist()) == bct_sizes
    assert sorted(ours.p_values * (k + 1) - 1) == pytest.approx(sorted(p_bct * k))
