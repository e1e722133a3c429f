"""Statistical validity of the permutation engines on simulated studies.

Family-wise error: over N simulated null studies, the fraction with any p_fwe <= 0.05 must lie
within 3 binomial standard errors of 0.05. Power: planted effects must be found.
"""

from __future__ import annotations

import numpy as np
import pytest

from theramark.group.inference import max_t_permutation, nbs, nbs_glm

ALPHA = 0.05
N_STUDIES = 1000
N_PERMUTATIONS = 199  # (1 + 199) * 0.05 = 10: p <= 0.05 has probability exactly 0.05 under H0


def _assert_fwer(false_positive_studies: int, n_studies: int = N_STUDIES) -> None:
    rate = false_positive_studies / n_studies
    se = np.sqrt(ALPHA * (1 - ALPHA) / n_studies)
    assert abs(rate - ALPHA) <= 3 * se, f"FWER {rate:.3f} outside {ALPHA} ± 3 x {se:.4f}"


def _correlated_noise(rng, n, p, rho=0.5):
    shared = rng.normal(size=(n, 1))
    return np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(size=(n, p))


@pytest.mark.slow
def test_fwer_two_sample_permutation():
    rng = np.random.default_rng(100)
    n, p = 20, 25
    design = np.column_stack([np.ones(n), np.r_[np.ones(10), np.zeros(10)]])
    hits = 0
    for study in range(N_STUDIES):
        data = _correlated_noise(rng, n, p) * rng.uniform(0.5, 2.0, size=p)
        result = max_t_permutation(data, design, [0, 1], n_permutations=N_PERMUTATIONS,
                                   random_state=study)
        hits += result.p_fwe.min() <= ALPHA
    _assert_fwer(hits)


@pytest.mark.slow
def test_fwer_sign_flip_change_scores_with_covariate():
    rng = np.random.default_rng(101)
    n, p = 18, 25
    hits = 0
    for study in range(N_STUDIES):
        age = rng.normal(size=(n, 1))
        # symmetric, heavy-tailed errors; the covariate has a real effect on the change
        change = rng.standard_t(4, size=(n, p)) + 0.8 * age
        result = max_t_permutation(change, np.ones((n, 1)), [1], nuisance=age,
                                   scheme="sign_flip", n_permutations=N_PERMUTATIONS,
                                   random_state=study)
        hits += result.p_fwe.min() <= ALPHA
    _assert_fwer(hits)


@pytest.mark.slow
def test_fwer_freedman_lane_with_confounded_covariate():
    rng = np.random.default_rng(102)
    n, p = 24, 25
    group = np.r_[np.ones(12), np.zeros(12)]
    design = np.column_stack([np.ones(n), group])
    hits = 0
    for study in range(N_STUDIES):
        # the covariate differs between groups and drives the data; the group itself does not
        age = rng.normal(size=n) + 1.0 * group
        data = _correlated_noise(rng, n, p) + 1.5 * age[:, None]
        result = max_t_permutation(data, design, [0, 1], nuisance=age[:, None],
                                   n_permutations=N_PERMUTATIONS, random_state=study)
        hits += result.p_fwe.min() <= ALPHA
    _assert_fwer(hits)


@pytest.mark.slow
def test_fwer_within_site_blocks():
    rng = np.random.default_rng(103)
    sites = np.repeat([0, 1, 2], 8)
    # group proportions differ by site, sites shift the mean and the variance
    group = np.r_[[1] * 6 + [0] * 2, [1] * 4 + [0] * 4, [1] * 2 + [0] * 6].astype(float)
    site_dummies = (sites[:, None] == np.arange(3)).astype(float)
    design = np.column_stack([site_dummies, group])
    hits = 0
    for study in range(N_STUDIES):
        noise = _correlated_noise(rng, 24, 20) * np.array([0.5, 1.0, 2.0])[sites][:, None]
        data = noise + np.array([0.0, 2.0, -1.0])[sites][:, None]
        result = max_t_permutation(data, design, [0, 0, 0, 1], blocks=sites,
                                   n_permutations=N_PERMUTATIONS, random_state=study)
        hits += result.p_fwe.min() <= ALPHA
    _assert_fwer(hits)


def _symmetric(rng, n, n_nodes):
    a = rng.normal(size=(n, n_nodes, n_nodes))
    return (a + a.transpose(0, 2, 1)) / np.sqrt(2)


@pytest.mark.slow
@pytest.mark.parametrize(("paired", "measure"), [(False, "intensity"), (True, "intensity"),
                                                 (False, "extent")])
def test_fwer_nbs(paired, measure):
    rng = np.random.default_rng(104 + paired)
    hits = 0
    for study in range(N_STUDIES):
        x = _symmetric(rng, 12, 20)
        y = _symmetric(rng, 12, 20)
        if paired:  # sessions share each participant's connectome
            y = 0.6 * x + 0.8 * y
        result = nbs(x, y, 2.0, n_permutations=N_PERMUTATIONS, paired=paired, measure=measure,
                     random_state=study)
        hits += bool(result.p_values.size) and result.p_values.min() <= ALPHA
    if measure == "extent":
        # Edge counts are integers: ties make the test conservative, never liberal.
        rate, se = hits / N_STUDIES, np.sqrt(ALPHA * (1 - ALPHA) / N_STUDIES)
        assert 0.01 <= rate <= ALPHA + 3 * se, f"FWER {rate:.3f}"  # measured: 0.022
    else:
        _assert_fwer(hits)


@pytest.mark.slow
def test_fwer_nbs_f_three_arms_with_covariate():
    rng = np.random.default_rng(106)
    arms = np.repeat([0, 1, 2], 8)
    design = np.column_stack([np.ones(24), arms == 1, arms == 2]).astype(float)
    contrast = np.array([[0.0, 1, 0], [0, 0, 1]])
    hits = 0
    for study in range(N_STUDIES):
        age = rng.normal(size=(24, 1)) + 0.5 * (arms == 2)[:, None]
        data = _symmetric(rng, 24, 12) + age[:, :, None]
        result = nbs_glm(data, design, contrast, 3.5, n_permutations=N_PERMUTATIONS,
                         nuisance=age, measure="intensity", random_state=study)
        hits += bool(result.p_values.size) and result.p_values.min() <= ALPHA
    _assert_fwer(hits)


def measured_power(n_studies: int = 60, seed: int = 105) -> dict[str, float]:
    """Power on planted effects (also used to report the numbers)."""
    rng = np.random.default_rng(seed)
    # max-T: d = 1.5 on 3 of 25 features, 15 + 15 participants, covariate as nuisance.
    design = np.column_stack([np.ones(30), np.r_[np.ones(15), np.zeros(15)]])
    found, false = 0, 0
    for study in range(n_studies):
        age = rng.normal(size=(30, 1))
        data = _correlated_noise(rng, 30, 25) + 0.5 * age
        data[:, :3] += 1.5 * design[:, [1]]
        result = max_t_permutation(data, design, [0, 1], nuisance=age,
                                   n_permutations=N_PERMUTATIONS, random_state=study)
        found += int((result.p_fwe[:3] <= ALPHA).sum())
        false += int((result.p_fwe[3:] <= ALPHA).any())
    # NBS: a 5-node clique (10 edges) shifted by 1.2 SD, 12 + 12 participants, 12 nodes.
    detected = 0
    clique = np.arange(5)
    for study in range(n_studies):
        x = _symmetric(rng, 12, 12)
        y = _symmetric(rng, 12, 12)
        x[:, clique[:, None], clique[None, :]] += 1.2
        result = nbs(x, y, 2.5, n_permutations=N_PERMUTATIONS, random_state=study)
        detected += any(result.p_values[k] <= ALPHA and c[np.ix_(clique, clique)].any()
                        for k, c in enumerate(result.components))
    return {"max_t_power_per_feature": found / (3 * n_studies),
            "max_t_fwer_null_features": false / n_studies,
            "nbs_power": detected / n_studies}


@pytest.mark.slow
def test_power_max_t_and_nbs_planted_effects():
    power = measured_power()
    assert power["max_t_power_per_feature"] >= 0.6, power
    assert power["max_t_fwer_null_features"] <= 0.15, power
    assert power["nbs_power"] >= 0.7, power
