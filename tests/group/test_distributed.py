"""Permutations on a loopback Dask cluster equal the single-process result (same seed)."""

from __future__ import annotations

import numpy as np
import pytest

from theramark.group.inference import PERMUTATION_STREAM, max_t_permutation, nbs, nbs_glm

distributed = pytest.importorskip("distributed")

# More permutations than one stream holds, and not a multiple of it: three batches, the last short.
N_PERMUTATIONS = 2 * PERMUTATION_STREAM + 37


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    dask_client = distributed.Client(cluster, timeout="120s")
    try:
        dask_client.wait_for_workers(2, timeout=120)
        yield dask_client
    finally:
        dask_client.close()
        cluster.close()


def _study(seed: int, n: int = 36, p: int = 45):
    rng = np.random.default_rng(seed)
    group = np.repeat([1.0, 0.0], n // 2)
    age = rng.normal(40, 10, n)
    data = rng.normal(size=(n, p)) + 0.02 * age[:, None]
    data[: n // 2, :4] += 2.0  # planted
    return data, np.column_stack([group, np.ones(n)]), age[:, None]


def _assert_same(a, b):
    np.testing.assert_array_equal(a.statistic, b.statistic)
    np.testing.assert_array_equal(a.null_max, b.null_max)
    np.testing.assert_array_equal(a.p_uncorrected, b.p_uncorrected)
    np.testing.assert_array_equal(a.p_fwe, b.p_fwe)


@pytest.mark.parametrize("seed", [0, np.random.RandomState(5)], ids=["seed", "legacy"])
def test_max_t_on_a_cluster_equals_one_process(client, seed):
    data, design, age = _study(1)
    kwargs = dict(n_permutations=N_PERMUTATIONS, nuisance=age)
    if isinstance(seed, np.random.RandomState):  # a RandomState is consumed: give each its own
        local = max_t_permutation(data, design, [1, 0], random_state=np.random.RandomState(5), **kwargs)
        spread = max_t_permutation(data, design, [1, 0], random_state=np.random.RandomState(5),
                                   client=client, **kwargs)
    else:
        local = max_t_permutation(data, design, [1, 0], random_state=seed, **kwargs)
        spread = max_t_permutation(data, design, [1, 0], random_state=seed, client=client,
                                   chunk_size=17, **kwargs)
    _assert_same(local, spread)
    assert spread.parameters["workers"] == 2
    assert (local.p_fwe[:4] < 0.05).all()


def test_sign_flips_with_blocks_on_a_cluster(client):
    rng = np.random.default_rng(3)
    change = rng.normal(size=(30, 20))
    change[:, :3] += 0.9
    site = np.repeat([0, 1, 2], 10)
    kwargs = dict(n_permutations=N_PERMUTATIONS, scheme="sign_flip", blocks=site, random_state=8,
                  precision="single")
    local = max_t_permutation(change, np.ones((30, 1)), [1.0], **kwargs)
    spread = max_t_permutation(change, np.ones((30, 1)), [1.0], client=client, **kwargs)
    _assert_same(local, spread)


def _matrices(rng, n, nodes=8, effect=0.0):
    values = rng.normal(size=(n, nodes, nodes))
    values = (values + values.transpose(0, 2, 1)) / 2
    values[:, :3, :3] += effect
    return values


@pytest.mark.parametrize("paired", [False, True])
def test_nbs_on_a_cluster_equals_one_process(client, paired):
    rng = np.random.default_rng(4)
    x, y = _matrices(rng, 14, effect=1.0), _matrices(rng, 14)
    local = nbs(x, y, 2.0, n_permutations=N_PERMUTATIONS, paired=paired, random_state=2)
    spread = nbs(x, y, 2.0, n_permutations=N_PERMUTATIONS, paired=paired, random_state=2,
                 client=client)
    np.testing.assert_array_equal(local.null_max, spread.null_max)
    np.testing.assert_array_equal(local.p_values, spread.p_values)
    np.testing.assert_array_equal(local.sizes, spread.sizes)


def test_nbs_glm_on_a_cluster_equals_one_process(client):
    rng = np.random.default_rng(6)
    data = _matrices(rng, 24, effect=0.0)
    arm = np.repeat([1.0, 0.0], 12)
    data[arm == 1, :3, :3] += 1.0
    design = np.column_stack([arm, np.ones(24)])
    local = nbs_glm(data, design, [1, 0], 2.0, n_permutations=N_PERMUTATIONS, random_state=9)
    spread = nbs_glm(data, design, [1, 0], 2.0, n_permutations=N_PERMUTATIONS, random_state=9,
                     client=client)
    np.testing.assert_array_equal(local.null_max, spread.null_max)
    np.testing.assert_array_equal(local.p_values, spread.p_values)


def test_group_level_scheduler_plumbing(client):
    """`theramark run ... group --scheduler ADDRESS` connects a client the analyses receive."""
    from theramark._dask import dask_client

    with dask_client(None) as none:
        assert none is None
    with dask_client(client.scheduler.address) as connected:
        assert len(connected.scheduler_info()["workers"]) == 2
        data, design, _ = _study(2, p=10)
        spread = max_t_permutation(data, design, [1, 0], n_permutations=50, random_state=1,
                                   client=connected)
    local = max_t_permutation(data, design, [1, 0], n_permutations=50, random_state=1)
    _assert_same(local, spread)
