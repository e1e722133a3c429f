"""Drawing permutations and sign-flips, with exchangeability blocks (PALM's conventions).

A permutation is an index array ``perm`` of length n: row i of the permuted data is row
``perm[i]`` of the original. Draws are made in batches; the sequence of draws does not depend on
the batch size, so results do not change with ``chunk_size``.

``numpy.random.Generator`` (the default) draws whole batches at once. A legacy
``numpy.random.RandomState`` draws one permutation at a time in the same order as bctpy's
``nbs_bct`` (``rng.permutation(n)``; ``np.sign(0.5 - rng.rand(1, n))`` for sign-flips), so that
results can be reproduced exactly against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theramark.errors import BadInputError

RandomLike = int | np.random.Generator | np.random.RandomState | None


def as_random_source(random_state: RandomLike) -> np.random.Generator | np.random.RandomState:
    """Generator for ``None`` / an int seed; Generators and RandomStates are used as given."""
    if isinstance(random_state, np.random.Generator | np.random.RandomState):
        return random_state
    if random_state is None or isinstance(random_state, int | np.integer):
        return np.random.default_rng(random_state)
    raise BadInputError(f"random_state must be None, an int, a numpy Generator or RandomState, "
                        f"got {type(random_state).__name__}")


@dataclass
class ExchangeabilityScheme:
    """How observations may be exchanged under the null hypothesis.

    Parameters
    ----------
    n_obs : int
    scheme : {"permute", "sign_flip"}
    block_codes : ndarray of int, shape (n_obs,), or None
        Exchangeability block of each observation.
    whole_blocks : bool
        Permute blocks as wholes (blocks must have equal sizes; rows keep their order inside a
        block) or, for sign-flips, flip a block's rows together. Otherwise permutations stay
        within blocks and sign-flips are per row.
    """

    n_obs: int
    scheme: str
    block_codes: np.ndarray | None = None
    whole_blocks: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in ("permute", "sign_flip"):
            raise BadInputError(f"scheme must be 'permute' or 'sign_flip', got {self.scheme!r}")
        if self.whole_blocks and self.block_codes is None:
            raise BadInputError("whole_blocks=True needs blocks (one label per observation)")
        if self.block_codes is not None and self.whole_blocks and self.scheme == "permute":
            counts = np.bincount(self.block_codes)
            if np.unique(counts).size != 1:
                raise BadInputError(
                    "whole-block permutation needs blocks of equal size; block sizes are "
                    f"{sorted(set(counts.tolist()))}")
            # positions[b, j]: index of the j-th row of block b (rows in their original order).
            order = np.argsort(self.block_codes, kind="stable")
            self._positions = order.reshape(counts.size, counts[0])

    def invariant_basis(self) -> np.ndarray | None:
        """Columns spanning vectors that every draw leaves unchanged (None for sign-flips).

        Within-block permutations keep any vector that is constant inside each block; other
        permutations keep the constant vector.
        """
        if self.scheme == "sign_flip":
            return None
        if self.block_codes is None or self.whole_blocks:
            return np.ones((self.n_obs, 1))
        return (self.block_codes[:, None] == np.arange(self.block_codes.max() + 1)).astype(float)

    def draw(self, rng: np.random.Generator | np.random.RandomState,
             n_draws: int) -> np.ndarray:
        """``n_draws`` permutations (int array) or sign-flips (float ±1 array), shape (B, n)."""
        if self.scheme == "sign_flip":
            return self._draw_signs(rng, n_draws)
        return self._draw_permutations(rng, n_draws)

    def _draw_signs(self, rng, n_draws: int) -> np.ndarray:
        n_units = self.n_obs
        if self.whole_blocks:
            n_units = int(self.block_codes.max()) + 1
        if isinstance(rng, np.random.RandomState):
            signs = np.vstack([np.sign(0.5 - rng.rand(1, n_units)) for _ in range(n_draws)])
            signs[signs == 0] = 1.0
        else:
            signs = np.where(rng.random((n_draws, n_units)) < 0.5, -1.0, 1.0)
        if self.whole_blocks:
            signs = signs[:, self.block_codes]
        return signs

    def _draw_permutations(self, rng, n_draws: int) -> np.ndarray:
        n = self.n_obs
        if self.block_codes is None:
            if isinstance(rng, np.random.RandomState):
                return np.vstack([rng.permutation(n) for _ in range(n_draws)])
            return rng.permuted(np.tile(np.arange(n), (n_draws, 1)), axis=1)
        if self.whole_blocks:
            n_blocks = self._positions.shape[0]
            if isinstance(rng, np.random.RandomState):
                block_perm = np.vstack([rng.permutation(n_blocks) for _ in range(n_draws)])
            else:
                block_perm = rng.permuted(np.tile(np.arange(n_blocks), (n_draws, 1)), axis=1)
            perms = np.empty((n_draws, n), dtype=np.intp)
            perms[:, self._positions.ravel()] = self._positions[block_perm].reshape(n_draws, n)
            return perms
        # Within-block shuffles: sort rows by (block, random key) for every draw at once, and map
        # the k-th row of the block-sorted identity to the k-th row of each shuffled order.
        keys = rng.random((n_draws, n)) if isinstance(rng, np.random.Generator) else \
            rng.random_sample((n_draws, n))
        blocks = np.broadcast_to(self.block_codes, (n_draws, n))
        shuffled = np.lexsort((keys, blocks), axis=-1)
        identity_order = np.argsort(self.block_codes, kind="stable")
        perms = np.empty((n_draws, n), dtype=np.intp)
        perms[:, identity_order] = shuffled
        return perms


def block_codes(blocks, n_obs: int) -> np.ndarray | None:
    """Integer codes 0..K-1 for block labels (any hashable labels), or None."""
    if blocks is None:
        return None
    labels = np.asarray(blocks)
    if labels.ndim != 1 or labels.shape[0] != n_obs:
        raise BadInputError(f"blocks must have one label per observation ({n_obs}), got shape "
                            f"{labels.shape}")
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise BadInputError("blocks contain missing labels (NaN); every observation needs a block")
    _, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.intp)
