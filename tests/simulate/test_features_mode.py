"""The feature-level simulator: planted effects are recorded, found by the group statistics, and
absent from the null study."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from theramark.cli import main
from theramark.group.harmonize import LongitudinalComBat
from theramark.group.inference import max_t_permutation, nbs
from theramark.simulate.features import edge_names, load_feature_matrix, simulate_features

N_NODES = 16  # 120 edges; the planted clique of 6 nodes holds 15


def _change(root):
    """Site-harmonized change scores (post - pre), with the arm and site of each participant."""
    sessions, values, names = load_feature_matrix(root)
    # longitudinal ComBat across sites (a random intercept per participant), arm and session kept
    covariates = pd.get_dummies(sessions[["group", "session"]], drop_first=True, dtype=float)
    harmonized = LongitudinalComBat().fit_transform(values.astype(np.float64), sessions["site"],
                                                    covariates=covariates,
                                                    participants=sessions["participant_id"])
    frame = pd.DataFrame(np.asarray(harmonized), columns=names)
    frame[["participant_id", "session"]] = sessions[["participant_id", "session"]]
    wide = frame.set_index(["participant_id", "session"])
    change = (wide.xs("post", level="session") - wide.xs("pre", level="session"))
    people = sessions.drop_duplicates("participant_id").set_index("participant_id")
    return change, people.loc[change.index], names


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("features") / "study"
    simulate_features(root, n_per_group=40, n_nodes=N_NODES, effect_size=1.2, n_sites=3,
                      seed=3, edges_per_file=50)
    return root


def test_files_and_ground_truth(planted):
    truth = json.loads((planted / "ground_truth.json").read_text())
    assert truth["mode"] == "features" and truth["n_edges"] == N_NODES * (N_NODES - 1) // 2
    effect = truth["effects"][0]
    assert effect["kind"] == "group_x_time" and len(effect["edges"]) == 15
    assert len(sorted((planted / "features").glob("edges-*.parquet"))) == 3  # 50 + 50 + 20
    sessions, values, names = load_feature_matrix(planted)
    assert values.dtype == np.float32 and values.shape == (160, 120) and names == edge_names(N_NODES)
    part = load_feature_matrix(planted, slice(45, 60))
    np.testing.assert_array_equal(part[1], values[:, 45:60])
    assert part[2] == names[45:60]
    # the values depend on the seed, not on how the edges are split into files
    again = simulate_features(planted.parent / "again", n_per_group=40, n_nodes=N_NODES,
                              effect_size=1.2, n_sites=3, seed=3, edges_per_file=1000)
    np.testing.assert_array_equal(load_feature_matrix(again.root)[1], values)


def test_group_statistics_find_the_planted_effect(planted):
    change, people, names = _change(planted)
    truth = json.loads((planted / "ground_truth.json").read_text())
    is_planted = np.isin(names, truth["effects"][0]["edges"])
    arm = (people["group"] == "therapy").to_numpy(float)
    design = np.column_stack([arm, np.ones(arm.size)])
    result = max_t_permutation(change.to_numpy(), design, [1, 0], n_permutations=500,
                               random_state=0)
    assert (result.p_fwe[is_planted] < 0.05).mean() >= 0.8
    assert (result.p_fwe[~is_planted] < 0.05).sum() <= 1
    assert (result.statistic[is_planted] > 0).all()  # the change is an increase in therapy
    # NBS recovers the planted clique as one component
    rows, cols = np.triu_indices(N_NODES, 1)
    matrices = np.zeros((arm.size, N_NODES, N_NODES))
    matrices[:, rows, cols] = change.to_numpy()
    matrices += matrices.transpose(0, 2, 1)
    network = nbs(matrices[arm == 1], matrices[arm == 0], 3.0, n_permutations=500, random_state=0)
    assert network.p_values[0] < 0.05
    found = network.components[0][rows, cols]
    assert found[is_planted].mean() >= 0.8 and found[~is_planted].sum() <= 2
    # the symptom link is planted in the therapy arm
    phenotype = pd.read_csv(planted / "phenotype.tsv", sep="\t").set_index("participant_id")
    therapy = people.index[people["group"] == "therapy"]
    summed = change.loc[therapy, np.asarray(names)[is_planted]].sum(axis=1)
    r = np.corrcoef(summed, phenotype.loc[therapy, "symptom_change"])[0, 1]
    assert r < -0.25


def test_null_study_has_no_effect(tmp_path):
    root = tmp_path / "null"
    assert main(["simulate", str(root), "--features", "--preset", "null", "--n-per-group", "40",
                 "--n-nodes", str(N_NODES), "--seed", "5"]) == 0
    truth = json.loads((root / "ground_truth.json").read_text())
    assert truth["null"] and truth["effects"] == []
    change, people, _ = _change(root)
    arm = (people["group"] == "therapy").to_numpy(float)
    design = np.column_stack([arm, np.ones(arm.size)])
    result = max_t_permutation(change.to_numpy(), design, [1, 0], n_permutations=500,
                               random_state=0)
    assert (result.p_fwe < 0.05).sum() == 0
    # uncorrected p-values of the null edges are uniform: about 5 % below 0.05
    assert (result.p_uncorrected < 0.05).mean() < 0.12
