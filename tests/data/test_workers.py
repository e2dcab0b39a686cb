"""Worker processes change no batch, whatever their number, and positions stay exact."""

import jax
import numpy as np
import pytest

from molspectra_jax.data.batching import BatchIterator, candidate_edges, make_budget
from molspectra_jax.data.prefetch import Prefetcher
from molspectra_jax.data.workers import ParallelBatches


def _iterator(dataset, shuffle=True):
    edges = candidate_edges(dataset, 6.0)
    budget = make_budget(dataset, edges, 32, n_shards=2)
    return BatchIterator(dataset, edges, budget, seed=4, shuffle=shuffle)


def assert_same_batch(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("workers", [1, 3])
def test_same_batches_and_positions_for_any_worker_count(qm9_sample, workers):
    plain = _iterator(qm9_sample)
    parallel = ParallelBatches(_iterator(qm9_sample), workers)
    feed = Prefetcher(parallel, depth=2)  # as the training loop stacks them
    try:
        for _ in range(16):  # > two epochs of 200 molecules
            assert_same_batch(next(feed), next(plain))
            assert feed.state() == plain.state()
    finally:
        feed.close()
        parallel.close()


def test_one_pass_ends_and_bad_counts_are_refused(qm9_sample):
    parallel = ParallelBatches(_iterator(qm9_sample, shuffle=False), 2, ahead=3)
    try:
        seen = [b.molecule_index[b.molecule_index >= 0] for b in parallel]
    finally:
        parallel.close()
    assert np.concatenate(seen).tolist() == list(range(len(qm9_sample)))
    with pytest.raises(ValueError, match="workers=0 must be >= 1"):
        ParallelBatches(_iterator(qm9_sample), 0)
