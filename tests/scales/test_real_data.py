"""Outcomes on real clinical tables (OpenNeuro ds003007, ds003799, ds003478), checked against
independent pandas arithmetic and the means stated in each folder's SOURCE.md."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path
from theramark._io import read_tsv
from theramark.scales import load_instrument, outcomes, rates_by_group
from theramark.study import session_columns_to_long


def _totals(table: pd.DataFrame, by_session: dict[str, str]) -> pd.DataFrame:
    """A scores table (``participant_id, session, group, total``) from one total column per session."""
    return session_columns_to_long(table, columns={"total": by_session}, keep=["group"])


@pytest.fixture(scope="module")
def ds003007() -> pd.DataFrame:
    return read_tsv(shared_path("data/ds003007_prepost_treatment/participants.tsv"),
                    dtype={"participant_id": str})


@pytest.mark.parametrize(("column", "instrument", "cutoff"), [("BDI", "bdi2", 13), ("MADRS", "madrs", 10)])
def test_ds003007_response_and_remission_per_arm(ds003007, column, instrument, cutoff):
    scores = _totals(ds003007, {"pre": f"{column}_ses-pre", "post": f"{column}_ses-post"})
    out = outcomes(scores, instrument)
    rates = rates_by_group(out).set_index("group")
    # independent computation straight from the wide table
    pairs = ds003007.dropna(subset=[f"{column}_ses-pre", f"{column}_ses-post"])
    pre, post = pairs[f"{column}_ses-pre"], pairs[f"{column}_ses-post"]
    pairs = pairs.assign(resp=(post <= 0.5 * pre) & (pre > 0), remit=post <= cutoff)
    expected = pairs.groupby("group").agg(n=("resp", "size"), resp=("resp", "sum"), remit=("remit", "sum"))
    for arm, row in expected.iterrows():
        assert rates.loc[arm, "n"] == row["n"]
        assert rates.loc[arm, "n_response"] == row["resp"]
        assert rates.loc[arm, "n_remission"] == row["remit"]
    assert set(rates.index) == set(expected.index)


def test_ds003007_means_stated_in_source(ds003007):
    scores = _totals(ds003007, {"pre": "BDI_ses-pre", "post": "BDI_ses-post"})
    out = outcomes(scores, "bdi2").dropna(subset=["baseline_total", "endpoint_total"])
    means = out.groupby("group").agg(n=("baseline_total", "size"), pre=("baseline_total", "mean"),
                                     post=("endpoint_total", "mean"))
    stated = {"depr_cbt": (5, 23.0, 13.0), "depr_nfb": (6, 28.3, 18.2),
              "depr_no_treatment": (14, 18.4, 14.2)}
    for arm, (n, pre, post) in stated.items():
        assert means.loc[arm, "n"] == n
        assert means.loc[arm, "pre"] == pytest.approx(pre, abs=0.05)
        assert means.loc[arm, "post"] == pytest.approx(post, abs=0.05)
    madrs = outcomes(_totals(ds003007, {"pre": "MADRS_ses-pre", "post": "MADRS_ses-post"}),
                     "madrs").dropna(subset=["baseline_total", "endpoint_total"])
    cbt = madrs[madrs["group"] == "depr_cbt"]
    assert len(cbt) == 6
    assert cbt["baseline_total"].mean() == pytest.approx(28.3, abs=0.05)
    assert cbt["endpoint_total"].mean() == pytest.approx(13.5, abs=0.05)
    assert (madrs["group"] == "depr_nfb").sum() == 3 and (madrs["group"] == "depr_no_treatment").sum() == 0


def test_ds003799_cesd_three_time_points():
    cesd = read_tsv(shared_path("data/ds003799_running_cesd/phenotype/CES-D.tsv"),
                    dtype={"participant_id": str})
    groups = read_tsv(shared_path("data/ds003799_running_cesd/participants.tsv"),
                      dtype={"participant_id": str})
    table = cesd.merge(groups[["participant_id", "group"]], on="participant_id")
    scores = _totals(table, {"t1": "CES-D_1", "t2": "CES-D_2", "t3": "CES-D_3"})
    out = outcomes(scores, "cesd", baseline="t1", endpoint="t3", sessions=["t1", "t2", "t3"])
    assert len(out) == 48
    merged = out.merge(table, on="participant_id")
    np.testing.assert_allclose(merged["change"], merged["CES-D_3"] - merged["CES-D_1"])
    np.testing.assert_array_equal(merged["remission"].astype(bool), merged["CES-D_3"] < 16)
    # first follow-up with >= 50% reduction, computed independently
    t1, t2, t3 = (merged[f"CES-D_{k}"] for k in (1, 2, 3))
    first = np.where(t2 <= 0.5 * t1, "t2", np.where(t3 <= 0.5 * t1, "t3", None))
    got = [None if pd.isna(v) else v for v in merged["response_session"]]
    assert got == list(first)
    # the intervention arm (group 1, trained between t1 and t2) improves more by t2 than wait-list
    t2_out = outcomes(scores, "cesd", baseline="t1", endpoint="t2")
    by_group = t2_out.groupby("group")["change"].mean()
    assert by_group.loc[1] < by_group.loc[2]


def test_ds003478_bdi_bands_and_hamd_remission():
    table = read_tsv(shared_path("data/ds003478_depression_scales/participants.tsv"),
                     dtype={"participant_id": str})
    bdi = load_instrument("bdi2")
    labels = bdi.severity_of(table["BDI"].to_numpy())
    expected = pd.cut(table["BDI"], [-0.5, 13.5, 19.5, 28.5, 63.5],
                      labels=["minimal", "mild", "moderate", "severe"]).astype(object)
    expected = expected.where(table["BDI"].notna(), None)
    assert list(labels) == list(expected)
    assert (labels == "minimal").sum() == (table["BDI"] <= 13).sum()
    hamd = load_instrument("hamd17")
    remitted = hamd.remission_of(table["HamD"].to_numpy())
    assert np.nansum(remitted) == (table["HamD"] <= 7).sum()
    assert np.isnan(remitted).sum() == table["HamD"].isna().sum()


def test_ds003007_rrs_subscales_partition_the_total_and_fit_their_ranges(ds003007):
    """Real RRS scores: our item map (5 brooding + 5 reflection + 12 depression items = 22)
    implies total = brooding + reflection + depression and the ranges below."""
    rrs = load_instrument("rrs")
    sizes = {s.name: len(s.items) for s in rrs.subscales}
    assert sum(sizes.values()) == rrs.n_items
    for session in ("pre", "post"):
        cols = {k: f"RRS-{k}_ses-{session}" for k in ("sum", "brooding", "reflection", "depr")}
        table = ds003007.set_index("participant_id")[list(cols.values())].dropna()
        assert len(table) > 10
        parts = table[cols["brooding"]] + table[cols["reflection"]] + table[cols["depr"]]
        mismatch = sorted(table.index[parts != table[cols["sum"]]])
        # one entry error in the published table: sub-16 post sum 57, parts add to 54
        assert mismatch == (["sub-16"] if session == "post" else [])
        for name, column in (("brooding", "brooding"), ("reflection", "reflection"), ("depression", "depr")):
            values = table[cols[column]]
            assert values.between(sizes[name] * 1, sizes[name] * 4).all(), name


def test_ds003007_zung_raw_totals_and_outcomes(ds003007):
    zung = load_instrument("zung_sds")
    scores = _totals(ds003007, {"pre": "Zung_SDS_ses-pre", "post": "Zung_SDS_ses-post"})
    totals = scores["total"].dropna()
    assert totals.between(*zung.range).all()  # raw scores (20-80), not the 25-100 index
    out = outcomes(scores, "zung_sds").dropna(subset=["baseline_total", "endpoint_total"])
    expected = 100 * (out["endpoint_total"] - out["baseline_total"]) / (out["baseline_total"] - 20)
    np.testing.assert_allclose(out["percent_change"], expected)
    np.testing.assert_array_equal(out["remission"].astype(bool), out["endpoint_total"] < 40)
