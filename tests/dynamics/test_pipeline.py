"""The ``dynamics`` and ``precedence`` group analyses on participant-level files with planted effects.

The ROI time series are written as the participant level writes them (``*_timeseries.tsv`` with a
sidecar holding ``RepetitionTime`` and ``SampleMask``), with a planted connectivity state whose
occupancy rises in one arm, so the analysis must find the state, hand its metrics to the features
table, and the therapy × time model must see the occupancy change.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from theramark._io import write_json
from theramark.context import GroupContext
from theramark.dynamics.pipeline import STATE_MEASURE
from theramark.report import build_report
from theramark.results import AnalysisFiles
from theramark.simulate.bold import state_sequence
from theramark.study.design import infer_design
from theramark.workflow import run_analysis

ROIS = [f"roi{i:02d}" for i in range(8)]
STATE = ROIS[:4]
T_R = 2.0
N_VOLUMES = 150


def _series(rng: np.random.Generator, occupancy: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((N_VOLUMES, len(ROIS)))
    states = state_sequence(N_VOLUMES, occupancy, 15.0, rng)
    shared = rng.standard_normal(N_VOLUMES)
    weight = 0.8 * states
    for r in range(len(STATE)):
        x[:, r] = np.sqrt(1 - weight) * x[:, r] + np.sqrt(weight) * shared
    return (x - x.mean(0)) / x.std(0, ddof=1), states


def _write_study(root, n_per_arm=12, seed=0, effect=0.35):
    rng = np.random.default_rng(seed)
    rows, runs = [], []
    for arm in ("therapy", "waitlist"):
        for i in range(n_per_arm):
            pid = f"sub-{arm[:2]}{i:02d}"
            rows.append({"participant_id": pid, "group": arm, "site": "A", "age": 40, "sex": "F"})
            for session in ("pre", "post"):
                occupancy = 0.25 + (effect if arm == "therapy" and session == "post" else 0.0)
                x, _ = _series(rng, occupancy)
                func = root / pid / f"ses-{session}" / "func"
                func.mkdir(parents=True)
                stem = f"{pid}_ses-{session}_task-rest_seg-test"
                pd.DataFrame(x, columns=ROIS).to_csv(func / f"{stem}_timeseries.tsv", sep="\t",
                                                     index=False)
                (func / f"{stem}_timeseries.json").write_text(json.dumps(
                    {"RepetitionTime": T_R, "SampleMask": list(range(N_VOLUMES))}))
                runs.append({"participant_id": pid, "session": session, "task": "rest",
                             "status": "ok"})
    pd.DataFrame(runs).to_csv(root / "participant_runs.tsv", sep="\t", index=False)
    return pd.DataFrame(rows)


def _report(ctx) -> str:
    write_json(ctx.group_dir / "run.json", {"title": "dynamics test", "dataset": "synthetic",
                                            "software": "theramark", "generated": "now"})
    return build_report(ctx.out_dir).read_text()


def _context(tmp_path, config, participants):
    return GroupContext(bids_dir=tmp_path / "bids", out_dir=tmp_path / "out", config=config,
                        participants=participants,
                        design=infer_design(participants, ["pre", "post"]), random_state=0)


def test_dynamics_finds_the_planted_state_and_its_occupancy_change(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    participants = _write_study(out)
    ctx = _context(tmp_path, {"study": {"reference_group": "waitlist"},
                              "dynamics": {"n_states": 2, "k_range": [2, 3], "n_surrogates": 3,
                                           "window_s": 40.0}}, participants)
    result = run_analysis(ctx, "dynamics")
    assert not [s for s in result.skipped if s[0] == "dynamic-FC states"], result.skipped
    files = AnalysisFiles(ctx.group_dir, "dynamics")
    for name in ("k_selection", "state_metrics", "centroids", "occupancy", "surrogates"):
        assert files.has(name), name
    centroids = files.table("centroids")
    within = centroids["roi_a"].isin(STATE) & centroids["roi_b"].isin(STATE)
    strength = centroids[within].groupby("state")["value"].mean()
    coupled = int(strength.idxmax())
    # the coupled state is the planted one: its within-state edges stand out from the rest
    assert strength[coupled] > 0.5 and strength.drop(coupled).max() < 0.3
    metrics = files.table("state_metrics").merge(participants, on="participant_id")
    occupancy = metrics.groupby(["group", "session"])[f"state{coupled}_occupancy"].mean()
    assert occupancy["therapy", "post"] - occupancy["therapy", "pre"] > 0.15
    assert abs(occupancy["waitlist", "post"] - occupancy["waitlist", "pre"]) < 0.1
    # handed to the features table with the registry's measure name
    states = ctx.results["state_features"]
    assert set(states["measure"]) == {STATE_MEASURE}
    assert f"state{coupled}_occupancy" in set(states["feature"])
    # ... where the therapy × time models see the change
    ctx.config["longitudinal"] = {"n_permutations": 0, "nbs_threshold": 0,
                                  "measures": [STATE_MEASURE]}
    run_analysis(ctx, "longitudinal")
    group_time = AnalysisFiles(ctx.group_dir, "longitudinal").table("group_time")
    row = group_time[group_time["feature"] == f"{STATE_MEASURE}|rest|state{coupled}_occupancy"]
    assert len(row) == 1 and row["p"].iloc[0] < 0.05 and row["estimate"].iloc[0] > 0
    html = _report(ctx)
    assert "Brain dynamics: dynamic-FC states" in html


def test_dynamics_without_declared_k_gives_the_selection_table_and_says_why(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    participants = _write_study(out, n_per_arm=3)
    ctx = _context(tmp_path, {"dynamics": {"k_range": [2, 3], "n_surrogates": 0}}, participants)
    result = run_analysis(ctx, "dynamics")
    assert "k_selection" in result.tables and "state_metrics" not in result.tables
    reason = dict(result.skipped)["dynamic-FC states"]
    assert "n_states" in reason and "k_selection" in reason


def test_dynamics_rejects_unknown_rois(tmp_path):
    from theramark.errors import BadInputError

    out = tmp_path / "out"
    out.mkdir()
    participants = _write_study(out, n_per_arm=2)
    ctx = _context(tmp_path, {"dynamics": {"n_states": 2, "rois": ["roi00", "amygdala"]}},
                   participants)
    with pytest.raises(BadInputError, match="amygdala"):
        run_analysis(ctx, "dynamics")


def _lagged_features(n=250, seed=1, lag=0.6):
    """Long features table: brain leads symptom by one session (no feedback), random intercepts."""
    rng = np.random.default_rng(seed)
    sessions = ["pre", "mid", "post"]
    brain_trait, symptom_trait = rng.normal(0, 1, n), rng.normal(0, 1, n)
    brain, symptom = rng.normal(0, 1, n), rng.normal(0, 1, n)
    rows = []
    for t, session in enumerate(sessions):
        if t:
            symptom = 0.3 * symptom - lag * brain + rng.normal(0, 0.8, n)
            brain = 0.4 * brain + rng.normal(0, 0.9, n)
        for i in range(n):
            rows.append({"participant_id": f"sub-{i:03d}", "session": session, "task": "rest",
                         "measure": "pearsoncorrelation", "feature": "a__b",
                         "value": brain_trait[i] + brain[i], "group": "patients",
                         "hamd17_total": 20 + 3 * (symptom_trait[i] + symptom[i])})
    return pd.DataFrame(rows)


def test_precedence_recovers_brain_leading_symptoms(tmp_path):
    features = _lagged_features()
    participants = features.drop_duplicates("participant_id")[["participant_id", "group"]]
    ctx = GroupContext(bids_dir=tmp_path / "bids", out_dir=tmp_path / "out", participants=participants,
                       config={"dynamics": {"precedence": {"brain": "pearsoncorrelation|rest|a__b",
                                                           "symptom": "hamd17"}}},
                       design=infer_design(participants, ["pre", "mid", "post"]),
                       results={"features": features})
    result = run_analysis(ctx, "precedence")
    paths = AnalysisFiles(ctx.group_dir, "precedence").table("paths")
    assert set(paths["model"]) == {"CLPM", "RI-CLPM"}
    ri = paths[(paths["model"] == "RI-CLPM") & (paths["kind"] == "cross-lagged")]
    brain_to_symptom = ri[ri["source"] == "pearsoncorrelation|rest|a__b"]
    symptom_to_brain = ri[ri["source"] == "hamd17"]
    assert (brain_to_symptom["p"] < 0.01).all() and (brain_to_symptom["estimate"] < 0).all()
    assert (symptom_to_brain["p"] > 0.001).all()
    assert "RI-CLPM" in result.summary["fit"]
    html = _report(ctx)
    assert "Temporal precedence" in html


def test_precedence_is_skipped_with_a_reason_when_not_declared(tmp_path):
    participants = pd.DataFrame({"participant_id": ["sub-1"], "group": ["a"]})
    ctx = GroupContext(bids_dir=tmp_path, out_dir=tmp_path / "out", participants=participants,
                       config={}, design=infer_design(participants, ["pre"]))
    result = run_analysis(ctx, "precedence")
    assert "declare [dynamics.precedence]" in dict(result.skipped)["temporal precedence"]
