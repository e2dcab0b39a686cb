"""Prefetching changes no batch, and its position is that of the batch consumed."""

import numpy as np
import pytest

from molspectra_jax.data.batching import BatchIterator, candidate_edges, make_budget
from molspectra_jax.data.prefetch import Prefetcher


def _iterator(dataset):
    edges = candidate_edges(dataset, 6.0)
    return BatchIterator(dataset, edges, make_budget(dataset, edges, 32), seed=4)


def test_same_batches_and_exact_positions_as_the_plain_iterator(qm9_sample):
    plain, ahead = _iterator(qm9_sample), _iterator(qm9_sample)
    feed = Prefetcher(ahead, depth=3)
    try:
        for _ in range(15):  # > two epochs of 200 molecules
            want = next(plain)
            got = next(feed)
            np.testing.assert_array_equal(got.molecule_index, want.molecule_index)
            np.testing.assert_array_equal(got.graph.positions, want.graph.positions)
            assert feed.state() == plain.state()  # what was consumed, not what was made
        assert ahead.state() != plain.state()  # the thread did run ahead
    finally:
        feed.close()
    resumed = _iterator(qm9_sample)
    resumed.restore(feed.state())
    np.testing.assert_array_equal(next(resumed).molecule_index, next(plain).molecule_index)


def test_errors_in_the_thread_reach_the_consumer(qm9_sample):
    def broken(batch):
        raise RuntimeError("transfer failed")

    feed = Prefetcher(_iterator(qm9_sample), depth=2, transform=broken)
    with pytest.raises(RuntimeError, match="transfer failed"):
        next(feed)
    feed.close()
    with pytest.raises(ValueError, match="depth 0 must be >= 1"):
        Prefetcher(_iterator(qm9_sample), depth=0)
