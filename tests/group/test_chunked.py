"""Edge-chunked max-T equals the whole-array result; the seeded streams are what the docs say;
memory stays near the data."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from theramark.errors import BadInputError
from theramark.group import _permutation_backend
from theramark.group._permutation_schemes import ExchangeabilityScheme
from theramark.group.inference import PERMUTATION_STREAM, max_t_permutation


def _study(seed: int, n: int = 40, p: int = 61):
    rng = np.random.default_rng(seed)
    arm = np.repeat([1.0, 0.0], n // 2)
    age = rng.normal(40, 10, n)
    data = rng.normal(size=(n, p)) + 0.03 * age[:, None]
    data[arm == 1, :5] += 2.5
    return data, np.column_stack([arm, np.ones(n)]), age[:, None]


def _assert_identical(a, b):
    """Same statistics (to rounding: the products run on blocks of other widths) and the same
    p-values."""
    single = a.parameters["precision"] == "single"
    np.testing.assert_allclose(a.statistic, b.statistic, rtol=1e-12, atol=0)
    np.testing.assert_allclose(a.null_max, b.null_max, rtol=1e-5 if single else 1e-12, atol=0)
    np.testing.assert_array_equal(a.p_uncorrected, b.p_uncorrected)
    np.testing.assert_array_equal(a.p_fwe, b.p_fwe)


@pytest.mark.parametrize("precision", ["double", "single"])
def test_edge_chunks_give_the_whole_array_result(precision):
    data, design, age = _study(0)
    kwargs = dict(n_permutations=260, nuisance=age, random_state=4, precision=precision)
    whole = max_t_permutation(data, design, [1, 0], **kwargs)
    chunked = max_t_permutation(data, design, [1, 0], edge_chunk=7, chunk_size=11, **kwargs)
    _assert_identical(whole, chunked)
    assert chunked.parameters["edge_chunk"] == 7
    assert (whole.p_fwe[:5] < 0.05).all() and (whole.p_fwe[5:] > 0.05).mean() > 0.9


def test_edge_chunks_with_a_legacy_random_state_and_blocks():
    data, design, age = _study(1)
    site = np.tile([0, 1], 20)
    kwargs = dict(n_permutations=150, nuisance=age, blocks=site)
    whole = max_t_permutation(data, design, [1, 0], random_state=np.random.RandomState(3), **kwargs)
    chunked = max_t_permutation(data, design, [1, 0], random_state=np.random.RandomState(3),
                                edge_chunk=10, **kwargs)
    _assert_identical(whole, chunked)


def test_out_of_core_inputs_memmap_and_dask(tmp_path):
    data, design, age = _study(2)
    stored = np.lib.format.open_memmap(tmp_path / "edges.npy", mode="w+", dtype=np.float32,
                                       shape=data.shape)
    stored[:] = data
    stored.flush()
    kwargs = dict(n_permutations=120, nuisance=age, random_state=0, precision="single")
    reference = max_t_permutation(np.asarray(stored), design, [1, 0], **kwargs)
    memmap = max_t_permutation(np.load(tmp_path / "edges.npy", mmap_mode="r"), design, [1, 0],
                               edge_chunk=16, **kwargs)
    _assert_identical(reference, memmap)
    dask_array = pytest.importorskip("dask.array")
    lazy = dask_array.from_array(stored, chunks=(40, 9))
    from_dask = max_t_permutation(lazy, design, [1, 0], edge_chunk=9, **kwargs)
    _assert_identical(reference, from_dask)


def test_nan_in_a_later_block_is_named(monkeypatch):
    data, design, _ = _study(3)
    data[7, 50] = np.nan
    monkeypatch.setattr(_permutation_backend, "_BLOCK_VALUES", 40 * 8)
    with pytest.raises(BadInputError, match=r"NaN or infinite values \(first at row, column \[7, 50\]"):
        max_t_permutation(data, design, [1, 0], n_permutations=5)
    with pytest.raises(BadInputError, match="edge_chunk"):
        max_t_permutation(data, design, [1, 0], n_permutations=5, edge_chunk=0)


def test_null_is_drawn_from_the_documented_seed_streams():
    """An independent implementation: batch k of PERMUTATION_STREAM permutations comes from the
    k-th ``SeedSequence(seed).spawn`` child; each permuted t is refitted by least squares
    (Manly: the data themselves are permuted)."""
    rng = np.random.default_rng(7)
    n, p = 14, 4
    arm = np.repeat([1.0, 0.0], n // 2)
    design = np.column_stack([arm, np.ones(n)])
    data = rng.normal(size=(n, p))
    n_perm = PERMUTATION_STREAM + 30
    result = max_t_permutation(data, design, [1, 0], n_permutations=n_perm, random_state=21,
                               method="manly")
    scheme = ExchangeabilityScheme(n, "permute")
    children = np.random.SeedSequence(21).spawn(2)
    perms = np.vstack([scheme.draw(np.random.default_rng(children[0]), PERMUTATION_STREAM),
                       scheme.draw(np.random.default_rng(children[1]), 30)])

    def t_values(y):
        beta, rss, *_ = np.linalg.lstsq(design, y, rcond=None)
        sigma2 = rss / (n - 2)
        return beta[0] / np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[0, 0])

    expected = np.array([np.abs(t_values(data[perm])).max() for perm in perms])
    np.testing.assert_allclose(result.null_max, expected, rtol=1e-9)
    np.testing.assert_allclose(result.statistic, t_values(data), rtol=1e-10)


def test_memory_is_near_the_data(monkeypatch):
    """Single precision on float32 data: the engine's working copy is one float32 array of the
    data's size (no float64 copy of the whole table), plus small blocks."""
    rng = np.random.default_rng(5)
    n, p = 60, 30_000
    data = rng.normal(size=(n, p)).astype(np.float32)  # 7.2 MB
    design = np.column_stack([np.repeat([1.0, 0.0], n // 2), np.ones(n)])
    monkeypatch.setattr(_permutation_backend, "_BLOCK_VALUES", n * 2_000)
    tracemalloc.start()
    try:
        max_t_permutation(data, design, [1, 0], n_permutations=20, random_state=0,
                          precision="single", chunk_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # residuals (1x) + blocks and one batch of 4 permutations (~1x); the float64 path held 4-5x
    assert peak < 2.5 * data.nbytes, peak / data.nbytes
