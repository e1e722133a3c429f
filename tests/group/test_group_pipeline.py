"""The ``longitudinal`` analysis end to end on a synthetic study with planted, known effects.

Each test runs the registered analysis, which writes its results, and draws the report section
from the written files, as ``theramark run ... group`` does.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from theramark.context import GroupContext
from theramark.errors import BadInputError
from theramark.group.features import feature_key
from theramark.imaging.rois import load_roiset
from theramark.report import Report, Section
from theramark.report.build import analysis_sections
from theramark.results import AnalysisFiles
from theramark.study.design import infer_design
from theramark.workflow import run_analysis


def group_step(ctx) -> list[Section]:
    """Run the analysis, keep its tables in ``ctx.results["group_stats"]``, draw its section."""
    result = run_analysis(ctx, "longitudinal")
    files = AnalysisFiles(ctx.group_dir, "longitudinal")
    ctx.results["group_stats"] = {
        **{name: files.table(name) for name in files.names()},
        "harmonization": files.summary.get("harmonization", {}),
    }
    assert set(ctx.results["group_stats"]) >= set(result.tables)
    return analysis_sections(ctx.group_dir, "longitudinal")


@pytest.fixture(autouse=True)
def _close_figures():
    """Sections hold open matplotlib figures until rendered; close those a test leaves."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


ROIS = ["amygdala_L", "dacc", "dlpfc_L", "vmpfc", "pgacc", "dlpfc_R", "vlpfc_L", "vlpfc_R"]
PLANTED = ["amygdala_L__dacc", "dacc__dlpfc_L", "dlpfc_L__vmpfc"]


def synthetic_study(seed=0, n_per_arm=16, n_controls=14, cbt_effect=0.6, link=True):
    """Long participant outputs, participants, outcomes and scores of a two-site trial.

    Planted: patients have FC ``cbt_effect`` lower than controls on ``PLANTED`` edges at baseline;
    CBT raises them by ``cbt_effect`` at post (back to the control level); MBCT and waitlist do
    not change; site b adds +0.25 to every edge and scales noise by 1.4 (removed by ComBat); the
    FC change of the first planted edge tracks HAMD improvement in patients.
    """
    rng = np.random.default_rng(seed)
    edges = ["__".join(sorted(pair)) for pair in itertools.combinations(ROIS, 2)]
    arms = ["CBT"] * n_per_arm + ["MBCT"] * n_per_arm + ["waitlist"] * n_per_arm + \
        ["HC"] * n_controls
    n = len(arms)
    participants = pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)],
        "age": rng.integers(20, 60, n), "sex": rng.choice(["F", "M"], n),
        "site": rng.choice(["a", "b"], n), "group": arms,
    })
    rows, outcomes, scores = [], [], []
    for _, person in participants.iterrows():
        trait = rng.normal(0, 0.2, len(edges))
        hamd_change = rng.normal(-8 if person["group"] != "waitlist" else -3, 4)
        for session in ("pre", "post"):
            values = 0.3 + trait + rng.normal(0, 0.2, len(edges)) * (
                1.4 if person["site"] == "b" else 1.0)
            values += 0.25 * (person["site"] == "b")
            for j, edge in enumerate(edges):
                if edge in PLANTED and person["group"] != "HC":
                    values[j] -= cbt_effect
                    if person["group"] == "CBT" and session == "post":
                        values[j] += cbt_effect
            if link and session == "post" and person["group"] != "HC":
                values[edges.index(PLANTED[0])] += -0.04 * hamd_change
            for j, edge in enumerate(edges):
                rows.append((person["participant_id"], session, "rest", 1, "pearsoncorrelation",
                             edge, values[j]))
            rows.append((person["participant_id"], session, "rest", 1, "qc", "mean_fd",
                         abs(rng.normal(0.15, 0.05))))
            rows.append((person["participant_id"], session, "rest", 1, "qc", "excluded", 0.0))
            rows.append((person["participant_id"], session, "mid", 1, "activation",
                         "nacc_L:gain-neutral", rng.normal(0.5, 0.3)))
            hamd = 20 + (hamd_change if session == "post" else 0) if person["group"] != "HC" \
                else 3
            scores.append((person["participant_id"], session, hamd))
        if person["group"] != "HC":
            outcomes.append((person["participant_id"], 20, 20 + hamd_change, hamd_change))
    long = pd.DataFrame(rows, columns=["participant_id", "session", "task", "run", "measure",
                                       "feature", "value"])
    outcomes = pd.DataFrame(outcomes, columns=["participant_id", "baseline", "endpoint", "change"])
    score_table = pd.DataFrame(scores, columns=["participant_id", "session", "total"])
    return long, participants, outcomes, {"hamd17": score_table}


def _context(tmp_path, seed=0, config=None, **kwargs):
    long, participants, outcomes, scores = synthetic_study(seed=seed, **kwargs)
    return GroupContext(
        bids_dir=tmp_path / "bids", out_dir=tmp_path / "out",
        config=config or {"longitudinal": {"n_permutations": 500, "nbs_threshold": 0}},
        participants=participants, design=infer_design(participants, ["pre", "post"]),
        results={"participant_outputs": long, "outcomes": outcomes, "scores": scores,
                 "primary_instrument": "hamd17"},
        random_state=3,
    )


def test_group_step_finds_planted_effects(tmp_path):
    ctx = _context(tmp_path)
    sections = group_step(ctx)
    stats_dir = ctx.group_dir / "longitudinal"
    for name in ("group_time", "normalization", "normalization_contrast", "links"):
        assert (stats_dir / f"{name}.tsv").is_file()
    assert (stats_dir / "longitudinal.json").is_file()
    assert (ctx.group_dir / "features" / "features.parquet").is_file()
    assert (ctx.group_dir / "features" / "features.tsv").is_file()
    results = ctx.results["group_stats"]
    assert results["harmonization"]["applied"]
    assert results["harmonization"]["model"] == "LongitudinalComBat"
    table = results["group_time"]
    planted = [feature_key("pearsoncorrelation", "rest", e) for e in PLANTED]
    cbt = table[table["arm"] == "CBT"].set_index("feature")
    assert (cbt.loc[planted, "q_fdr"] < 0.05).all()
    assert (cbt.loc[planted, "estimate"] > 0).all()
    assert (cbt.loc[planted, "p_fwe"] < 0.05).sum() >= 2
    others = table[~table["feature"].isin(planted)]
    assert (others["p_fwe"] < 0.05).sum() <= 1
    assert (table[table["arm"] == "MBCT"]["q_fdr"] < 0.05).sum() <= 1
    emm = results["emmeans"].set_index(["feature", "group", "session"])["emmean"]
    assert (stats_dir / "emmeans.tsv").is_file()
    assert emm[(planted[1], "CBT", "post")] - emm[(planted[1], "CBT", "pre")] > 0.3
    # CBT moves toward controls on the planted edges
    norm = results["normalization"].set_index(["feature", "arm"])
    assert (norm.loc[[(f, "CBT") for f in planted], "percent_normalized"] > 50).all()
    # the planted brain–symptom link is found with the primary outcome
    links = results["links"]
    primary = links[links["symptom"] == "hamd17"].set_index("feature")
    assert primary.loc[planted[0], "p_fwe"] < 0.05
    assert primary.loc[planted[0], "r"] < 0
    # the primary instrument is tested once (it used to be tested twice, as "hamd17 (primary)")
    assert set(links["symptom"]) == {"hamd17"} and not links["feature"].duplicated().any()
    # the report renders
    assert all(isinstance(s, Section) and s.order == 40 for s in sections)
    html = Report().add(*sections).to_html()
    assert "Imaging: therapy × time" in html and "data:image/png;base64" in html


def test_group_step_config_and_single_site(tmp_path):
    config = {"longitudinal": {"n_permutations": 0, "nbs_threshold": 0},
              "harmonize": {"enabled": False}}
    ctx = _context(tmp_path, seed=1, config=config, link=False)
    group_step(ctx)
    results = ctx.results["group_stats"]
    assert not results["harmonization"]["applied"]
    assert results["group_time"]["p_fwe"].isna().all()
    config = {"longitudinal": {"n_permutations": 0, "nbs_threshold": 0},
              "harmonize": {"fit_on": "controls", "ref_site": "a"}}
    ctx = _context(tmp_path / "controls", seed=1, config=config)
    group_step(ctx)
    info = ctx.results["group_stats"]["harmonization"]
    assert info["applied"] and info["n_fit_rows"] == 2 * 14  # controls × sessions
    assert "group_session" not in info["preserved"]  # group is constant among controls
    bad = _context(tmp_path / "bad", config={"longitudinal": {"n_perms": 10}})
    with pytest.raises(BadInputError, match="n_perms.*n_permutations"):
        group_step(bad)


@pytest.mark.slow
def test_group_step_nbs_component(tmp_path):
    config = {"longitudinal": {"n_permutations": 300, "nbs_threshold": 2.5}}
    ctx = _context(tmp_path, seed=2, config=config, cbt_effect=0.6)
    # the NBS figure takes the ROI centres the imaging analysis recorded (any ROI set with them)
    from theramark.results import AnalysisResult, write_analysis

    coords = load_roiset("literature").table[["name", "x", "y", "z"]]
    write_analysis(ctx.group_dir, AnalysisResult("imaging", tables={"roi_coordinates": coords}))
    sections = group_step(ctx)
    components = ctx.results["group_stats"]["nbs_components"]
    cbt = components[components["contrast"] == "CBT - waitlist"]
    assert (cbt["p_fwe"] < 0.05).any()
    edges = ctx.results["group_stats"]["nbs_edges"]
    strongest = edges[(edges["contrast"] == "CBT - waitlist") & (edges["component"] == 1)]
    found = {"__".join(sorted(p)) for p in zip(strongest["node_a"], strongest["node_b"],
                                                strict=True)}
    assert set(PLANTED) <= found
    html = Report().add(*sections).to_html()
    assert "NBS CBT - waitlist, component 1" in html


def test_group_step_reads_participant_derivatives(tmp_path):
    """The features table is built from BEP017 files through imaging.outputs (the real reader)."""
    from theramark._io import write_tsv

    rng = np.random.default_rng(5)
    rois = ["amygdala_L", "dacc", "vmpfc", "pgacc"]
    arms = ["CBT"] * 5 + ["waitlist"] * 5 + ["HC"] * 4
    participants = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(len(arms))],
                                 "age": 30, "sex": "F", "site": "a", "group": arms})
    out = tmp_path / "out"
    written = {}
    for pid in participants["participant_id"]:
        for session in ("pre", "post"):
            func = out / pid / f"ses-{session}" / "func"
            prefix = f"{pid}_ses-{session}_task-rest"
            z = rng.normal(0.3, 0.2, (4, 4))
            z = (z + z.T) / 2
            np.fill_diagonal(z, 0.0)
            write_tsv(func / f"{prefix}_seg-literature_meas-pearsoncorrelation_relmat.dense.tsv",
                      pd.DataFrame(z, columns=rois))
            write_tsv(func / f"{prefix}_desc-qc_metrics.tsv", pd.DataFrame([{
                "mean_fd": 0.1, "max_fd": 0.3, "percent_fd_over_threshold": 1.0,
                "percent_censored": 0.0, "mean_dvars": 1.0, "tsnr": 50.0, "n_volumes": 200,
                "n_volumes_kept": 200, "excluded": False, "exclusion_reason": "n/a"}]))
            written[(pid, session)] = z[0, 1]
    (out / "participant_runs.tsv").write_text("participant_id\tsession\ttask\trun\tstatus\n")
    ctx = GroupContext(bids_dir=tmp_path, out_dir=out, participants=participants,
                       design=infer_design(participants, ["pre", "post"]),
                       config={"longitudinal": {"n_permutations": 0, "nbs_threshold": 0}})
    group_step(ctx)
    features = ctx.results["features"]
    edge = features[(features["measure"] == "pearsoncorrelation")
                    & (features["feature"] == "amygdala_L__dacc")]
    got = edge.set_index(["participant_id", "session"])["value"]
    for key, value in written.items():
        assert got[key] == pytest.approx(value)
    table = ctx.results["group_stats"]["group_time"]
    assert len(table) == 6 and set(table["arm"]) == {"CBT"}  # 6 edges, one arm vs waitlist
    assert (ctx.group_dir / "features" / "features.parquet").is_file()


def test_confirmatory_family_is_corrected_within_itself(tmp_path):
    """A small planted effect missed by the whole-connectome family is confirmed as a hypothesis."""
    planted = [feature_key("pearsoncorrelation", "rest", e) for e in PLANTED]
    hypotheses = [planted[0], planted[1], feature_key("pearsoncorrelation", "rest", "dlpfc_R__vlpfc_L")]
    config = {"longitudinal": {"n_permutations": 1000, "nbs_threshold": 0,
                               "hypotheses": hypotheses}}
    ctx = _context(tmp_path, seed=4, config=config, cbt_effect=0.3, link=False)
    sections = group_step(ctx)
    results = ctx.results["group_stats"]
    family = results["hypotheses"]
    assert list(dict.fromkeys(family["feature"])) == hypotheses
    assert (ctx.group_dir / "longitudinal" / "hypotheses.tsv").is_file()
    exploratory = results["group_time"].set_index(["feature", "arm", "session"])
    confirm = family.set_index(["feature", "arm", "session"])
    endpoint = [(f, "CBT", "post") for f in hypotheses]
    # same estimates; a smaller family can only lower the family-wise p
    np.testing.assert_allclose(confirm.loc[endpoint, "estimate"],
                               exploratory.loc[endpoint, "estimate"])
    assert (confirm.loc[endpoint, "p_fwe"] <= exploratory.loc[endpoint, "p_fwe"] + 1e-12).all()
    assert (confirm.loc[endpoint[:2], "p_fwe"] < 0.05).all()
    assert confirm.loc[endpoint[2], "p_fwe"] > 0.05  # the unplanted hypothesis is not confirmed
    html = Report().add(*sections).to_html()
    assert "Confirmatory family: 3 a priori hypotheses" in html


def test_unknown_hypothesis_is_named(tmp_path):
    config = {"longitudinal": {"n_permutations": 0, "nbs_threshold": 0,
                               "hypotheses": ["pearsoncorrelation|rest|amygdala_L__dac"]}}
    ctx = _context(tmp_path, config=config, link=False)
    with pytest.raises(BadInputError, match=r"'pearsoncorrelation\|rest\|amygdala_L__dac' \(did "
                                            r"you mean 'pearsoncorrelation\|rest\|amygdala_L__dacc'"):
        group_step(ctx)
