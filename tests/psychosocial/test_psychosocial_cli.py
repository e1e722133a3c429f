"""The ``theramark psychosocial`` commands and the group step on a small planted study."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from theramark._io import read_tsv, write_tsv
from theramark.cli import main
from theramark.context import GroupContext
from theramark.errors import BadInputError
from theramark.report.build import analysis_sections
from theramark.report.sections.psychosocial import load_results
from theramark.results import AnalysisFiles
from theramark.study.design import infer_design
from theramark.workflow import DEMO_CONFIG, group_context, run_analysis

#: The demo's declared psychosocial variables and analyses (the pipeline has no defaults of its own).
DECLARED = tomllib.loads(DEMO_CONFIG)["psychosocial"]


def group_step(ctx):
    """Run the psychosocial analysis, keep its results as written, draw its sections."""
    run_analysis(ctx, "psychosocial")
    ctx.results["psychosocial"] = load_results(AnalysisFiles(ctx.group_dir, "psychosocial"))
    return analysis_sections(ctx.group_dir, "psychosocial")


def _skipped(ctx) -> pd.DataFrame:
    record = json.loads((ctx.group_dir / "psychosocial" / "psychosocial.json").read_text())
    return pd.DataFrame(record["Skipped"]).set_index("step")


def _study(tmp_path: Path, n: int = 240, seed: int = 0, with_ema: bool = True) -> GroupContext:
    """Scored scales, participants and phenotype files with planted effects (see asserts)."""
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i:03d}" for i in range(n)]
    sex = rng.choice(["F", "M"], size=n)
    female = sex == "F"
    en = rng.normal(10, 4, n)
    pss = 15 + np.where(female, 0.9, 0.1) * (en - 10) + rng.normal(0, 3, n)
    strain = rng.uniform(0, 10, n)
    shaps = 25 + 0.6 * (pss - 15) + 1.5 * np.maximum(strain - 6, 0) + rng.normal(0, 2, n)
    support = rng.normal(50, 10, n)
    pre = {"participant_id": ids, "session": "pre"}
    scores = {
        "ctq_sf": pd.DataFrame({**pre, "total": en + 40, "emotional_neglect": en}),
        "pss10": pd.DataFrame({**pre, "total": pss}),
        "shaps": pd.DataFrame({**pre, "total": shaps}),
        "mspss": pd.DataFrame({**pre, "total": support}),
        "ucla3": pd.DataFrame({**pre, "total": 5 + 0.2 * pss + rng.normal(0, 1, n)}),
    }
    bids = tmp_path / "bids"
    participants = pd.DataFrame({"participant_id": ids, "sex": sex, "age": rng.integers(20, 60, n)})
    write_tsv(bids / "participants.tsv", participants)
    write_tsv(bids / "phenotype" / "financial_strain.tsv",
              pd.DataFrame({**pre, "financial_strain": strain}))
    if with_ema:
        rows = []
        for i, pid in enumerate(ids[:60]):
            for day in range(1, 4):
                for prompt in range(1, 5):
                    contact = float(rng.random() < 0.5)
                    rows.append((pid, day, prompt, 60 - 0.3 * shaps[i] + 8 * contact
                                 + rng.normal(0, 5), contact))
        ema = pd.DataFrame(rows, columns=["participant_id", "day", "prompt", "positive_affect",
                                          "social_contact"])
        write_tsv(bids / "phenotype" / "ema.tsv", ema)
    config = {"psychosocial": {**DECLARED, "n_boot": 400,
                               "network": {**DECLARED["network"], "n_boot": 0}}}
    ctx = GroupContext(bids_dir=bids, out_dir=tmp_path / "out", config=config,
                       participants=participants, design=infer_design(participants, ["pre"]))
    ctx.results["scores"] = scores
    return ctx


def test_group_step_runs_declared_analyses_and_finds_planted_effects(tmp_path):
    ctx = _study(tmp_path)
    sections = group_step(ctx)
    ids = [s.id for s in sections]
    assert ids == ["psychosocial-mediation", "psychosocial-moderation", "psychosocial-network",
                   "psychosocial-breakpoint", "psychosocial-ema"]
    out = ctx.group_dir / "psychosocial"
    for name in ("mediation_model4", "mediation_model7", "mediation_model58", "breakpoint",
                 "moderation", "moderation_johnson_neyman", "network", "centrality", "ema",
                 "ema_compliance"):
        assert (out / f"{name}.tsv").is_file(), name
    parameters = json.loads((out / "psychosocial.json").read_text())["Parameters"]
    assert parameters["psychosocial"]["n_boot"] == 400
    assert parameters["psychosocial"]["session"] == "pre"  # the study's baseline
    results = ctx.results["psychosocial"]
    m7 = results["mediation_model7"]
    # Planted: a-path 0.9 in women (sex = 0) and 0.1 in men; b = 0.6.
    women, men = m7.loc["indirect[sex=0]"], m7.loc["indirect[sex=1]"]
    assert women["ci_low"] < 0.54 < women["ci_high"] and women["ci_low"] > 0
    assert men["estimate"] < women["ci_low"]
    assert m7.loc["index_moderated_mediation", "ci_high"] < 0
    bp = results["breakpoint"].iloc[0]
    assert bp["ci_low"] < 6 < bp["ci_high"] and bp["davies_p"] < 1e-3
    ema = results["ema"].set_index("term")
    assert ema.loc["social_contact_within", "ci_low"] < 8 < ema.loc["social_contact_within",
                                                                      "ci_high"]
    # Nodes without data are left out and said so.
    assert "neuroticism" in results["network_note"]
    # The report renders.
    from theramark.report import Report

    html = Report().add(*sections).to_html()
    assert "Path diagram" in html and "Johnson" in html


def test_group_step_states_what_it_skips(tmp_path):
    ctx = _study(tmp_path, n=60, with_ema=False)
    del ctx.results["scores"]["pss10"]
    sections = group_step(ctx)
    skipped = _skipped(ctx)
    assert "pss10" in skipped.loc["mediation_model4", "reason"]
    assert "EMA" in skipped.loc["ema", "reason"]
    html = "".join(s.to_html() for s in sections)
    assert "skipped" in html


def test_group_step_group_filter(tmp_path):
    ctx = _study(tmp_path, n=80, with_ema=False)
    ctx.participants = ctx.participants.assign(group=["CBT", "HC"] * 40)
    ctx.config = {"psychosocial": {**DECLARED, "n_boot": 200, "groups": ["CBT"]}}
    group_step(ctx)
    assert ctx.results["psychosocial"]["mediation_model4"].attrs["n"] == 40
    ctx.config = {"psychosocial": {**DECLARED, "groups": ["MBCT"]}}
    with pytest.raises(BadInputError, match="match no participant"):
        group_step(ctx)


def test_nothing_declared_runs_nothing_and_says_why(tmp_path):
    """No variable of the simulator is assumed: an undeclared analysis is skipped, with the reason."""
    ctx = _study(tmp_path, n=30, with_ema=False)
    ctx.config = {}
    assert group_step(ctx) == []
    assert "no [psychosocial] variables declared" in _skipped(ctx).loc["psychosocial analyses",
                                                                      "reason"]
    ctx.config = {"psychosocial": {"variables": {"stress": "pss10.total", "sex": "sex"}}}
    group_step(ctx)
    skipped = _skipped(ctx)
    assert {"mediation_model4", "moderation", "breakpoint", "network", "ema"} <= set(skipped.index)
    assert "not declared" in skipped.loc["moderation", "reason"]


def test_group_step_rejects_unknown_config_keys(tmp_path):
    ctx = _study(tmp_path, n=30, with_ema=False)
    ctx.config = {"psychosocial": {"mediation": {"xx": "ctq_en"}}}
    with pytest.raises(BadInputError, match="unknown key"):
        group_step(ctx)


@pytest.fixture
def table_path(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    n = 120
    x = rng.normal(size=n)
    m = 0.6 * x + rng.normal(size=n)
    w = rng.uniform(0, 10, n)
    y = 0.5 * m + 0.1 * x * w + np.maximum(w - 5, 0) + rng.normal(size=n)
    frame = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)], "x": x, "m": m,
                          "w": w, "y": y, "sex": rng.choice(["F", "M"], n)})
    frame.loc[3, "m"] = np.nan
    path = tmp_path / "data.tsv"
    write_tsv(path, frame)
    return path


def test_cli_mediate_writes_table_and_sidecar(table_path, tmp_path, capsys):
    out = tmp_path / "res" / "med.tsv"
    code = main(["psychosocial", "mediate", str(table_path), "--x", "x", "--m", "m", "--y", "y",
                 "--w", "sex", "--model", "7", "--n-boot", "300", "--seed", "3", "-o", str(out)])
    assert code == 0
    table = read_tsv(out).set_index("effect")
    assert {"a", "b", "direct", "total", "indirect", "index_moderated_mediation"} <= set(
        table.index)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["Parameters"]["n_boot"] == 300 and "1 dropped" in sidecar["Note"]
    assert (out.parent / "med_coefficients.tsv").is_file()
    assert "listwise" in capsys.readouterr().out


def test_cli_other_analyses(table_path, tmp_path, capsys):
    assert main(["psychosocial", "moderate", str(table_path), "--x", "x", "--w", "w", "--y", "y",
                 "-o", str(tmp_path / "mod.tsv")]) == 0
    assert (tmp_path / "mod_johnson_neyman.tsv").is_file()
    assert main(["psychosocial", "breakpoint", str(table_path), "--x", "w", "--y", "y",
                 "-o", str(tmp_path / "bp.tsv")]) == 0
    assert read_tsv(tmp_path / "bp.tsv").loc[0, "davies_p"] < 0.05
    assert main(["psychosocial", "network", str(table_path), "--columns", "x", "m", "w", "y",
                 "-o", str(tmp_path / "net.tsv")]) == 0
    assert read_tsv(tmp_path / "net_centrality.tsv").shape[0] == 4
    capsys.readouterr()


def test_cli_ema(tmp_path):
    rng = np.random.default_rng(2)
    rows = [(f"sub-{i}", d, p, float(rng.random() < 0.5)) for i in range(20) for d in (1, 2)
            for p in range(1, 6)]
    ema = pd.DataFrame(rows, columns=["participant_id", "day", "prompt", "social_contact"])
    ema["positive_affect"] = 50 + 6 * ema["social_contact"] + rng.normal(0, 4, len(ema))
    write_tsv(tmp_path / "ema.tsv", ema)
    assert main(["psychosocial", "ema", str(tmp_path / "ema.tsv"), "--x", "social_contact",
                 "--y", "positive_affect", "--lag", "--no-random-slope",
                 "-o", str(tmp_path / "ema_out.tsv")]) == 0
    assert (tmp_path / "ema_out_compliance.tsv").is_file()


def test_cli_without_analysis_prints_usage(capsys):
    assert main(["psychosocial"]) == 2
    assert "mediate" in capsys.readouterr().out


def test_cli_bad_input_exit_code(table_path, capsys):
    code = main(["psychosocial", "mediate", str(table_path), "--x", "x", "--m", "sex", "--y", "y"])
    assert code == 2
    assert "non-numeric" in capsys.readouterr().err
    assert main(["psychosocial", "breakpoint", "/nonexistent.tsv", "--x", "a", "--y", "b"]) == 2


@pytest.mark.slow
def test_group_step_on_the_project_simulator_recovers_planted_effects(tmp_path):
    """Phenotype of ``theramark.simulate`` (no images: the 'large' preset's item tables), scored by
    the scales stage, then the psychosocial step: the planted effects of ground_truth.json."""
    from theramark.simulate import phenotype as pheno
    from theramark.simulate.design import make_participants, session_targets
    from theramark.simulate.presets import get_preset

    preset = get_preset("large", n_per_group=75)
    truth = make_participants(preset, np.random.default_rng([0, 0]))
    targets = session_targets(truth, np.random.default_rng([0, 1]))
    rng = np.random.default_rng([0, 3])
    root = tmp_path / "bids"
    for ident, table in pheno.instrument_tables(targets, rng).items():
        write_tsv(root / "phenotype" / f"{ident}.tsv", table)
    write_tsv(root / "phenotype" / "financial_strain.tsv", pheno.financial_strain_table(targets))
    write_tsv(root / "phenotype" / "ema.tsv", pheno.ema_table(truth, rng))
    participants = truth[["participant_id", "age", "sex", "site", "group"]]
    write_tsv(root / "participants.tsv", participants)
    # the demo's study.toml declares the simulator's variables; nothing is assumed without it
    config = {"psychosocial": {**DECLARED, "n_boot": 1000}}
    ctx = group_context(root, tmp_path / "out", config)
    run_analysis(ctx, "scales")
    group_step(ctx)
    results = ctx.results["psychosocial"]
    assert results["skipped"] == {}
    m7 = results["mediation_model7"]
    effects = preset.effects
    # a-path larger in women (sex F = 0) than in men: negative index of moderated mediation.
    assert effects.a_path_women > effects.a_path_men
    assert m7.loc["index_moderated_mediation", "ci_high"] < 0
    assert m7.loc["indirect[sex=1]", "ci_low"] > 0
    bp = results["breakpoint"].iloc[0]
    assert bp["ci_low"] < effects.strain_breakpoint < bp["ci_high"]
    assert bp["slope_right"] > bp["slope_left"]
    # Loneliness (UCLA-3) planted as the most central node.
    centrality = results["centrality"].set_index("node")
    assert centrality["strength"].idxmax() == "ucla3"
    # EMA: social contact raises positive affect by 8 points at that prompt.
    ema = results["ema"].set_index("term").loc["social_contact_within"]
    assert ema["ci_low"] < 8 < ema["ci_high"]
