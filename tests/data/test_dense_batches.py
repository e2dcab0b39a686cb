"""Dense-layout batches: size buckets, one bucket per batch, blocks, exact resume."""

import itertools

import jax
import ml_collections
import numpy as np
import pytest

from molspectra_jax.data import pipeline
from molspectra_jax.data.batching import (
    BatchIterator,
    Budget,
    CandidateEdges,
    dense_buckets,
    dense_budget,
)


def _cost(n_atoms, buckets):
    return sum(buckets[np.searchsorted(buckets, n)] ** 2 for n in n_atoms)


def test_dense_buckets_minimise_padded_pairs_exactly():
    rng = np.random.default_rng(0)
    n_atoms = rng.integers(3, 20, size=300)
    sizes = np.unique(n_atoms)
    for count in (1, 2, 3):
        got = dense_buckets(n_atoms, count)
        assert got[-1] == n_atoms.max() and len(got) <= count
        brute = min(
            _cost(n_atoms, np.array((*c, sizes[-1])))
            for c in itertools.combinations(sizes[:-1], count - 1)
        )
        assert _cost(n_atoms, np.array(got)) == brute
    assert dense_buckets([5, 5, 7], 4) == (5, 7)  # never more buckets than sizes


def _iterator(dataset, shuffle=True, n_shards=2, **kw):
    budget = Budget(n_shards, 8, 8 * 29, 2, 29)
    edges = CandidateEdges(np.zeros(len(dataset), np.int32), 0.0)
    buckets = dense_buckets(dataset.n_atoms, 3)
    return BatchIterator(dataset, edges, budget, seed=2, shuffle=shuffle, buckets=buckets, **kw)


def _budget_of(iterator, batch):
    """The bucket budget a dense batch was built in (from its shapes)."""
    slots = batch.graph.positions.shape[1] // batch.graph.graph_mask.shape[1]
    return dense_budget(iterator.budget, slots)


def check_dense_batch(batch, dataset, budget):
    g = batch.graph
    s_, g_, slots = budget.n_shards, budget.graphs, budget.slots
    assert g.positions.shape == (s_, g_ * slots, 3) and g.graph_mask.shape == (s_, g_)
    assert g.senders.shape == (s_, 2) and not g.edge_mask.any()
    for s in range(s_):
        np.testing.assert_array_equal(g.graph_index[s], np.arange(g_ * slots) // slots)
        for k in np.flatnonzero(g.graph_mask[s]):
            z, pos = dataset.molecule(batch.molecule_index[s, k])
            block = slice(k * slots, k * slots + len(z))
            np.testing.assert_array_equal(g.atomic_numbers[s, block], z)
            np.testing.assert_array_equal(g.positions[s, block], pos)
            assert g.atom_mask[s, block].all() and g.atom_mask[
                s, k * slots : (k + 1) * slots
            ].sum() == len(z)
        assert not g.atom_mask[s, np.repeat(~g.graph_mask[s], slots)].any()


def test_dense_epoch_is_every_molecule_once_one_bucket_per_batch(qm9_sample):
    it = _iterator(qm9_sample, shuffle=False)
    seen, shapes = [], set()
    for batch in it.one_pass():
        rows = batch.molecule_index[batch.graph.graph_mask]
        budget = _budget_of(it, batch)
        slots = budget.slots
        check_dense_batch(batch, qm9_sample, budget)
        assert slots in it.buckets and np.all(qm9_sample.n_atoms[rows] <= slots)
        smaller = [b for b in it.buckets if b < slots]
        assert not smaller or np.all(qm9_sample.n_atoms[rows] > smaller[-1])  # its bucket
        seen += rows.tolist()
        shapes.add(batch.graph.positions.shape)
    assert sorted(seen) == list(range(len(qm9_sample)))
    assert len(shapes) == len(it.buckets)  # one static shape (one program) per bucket


def test_dense_training_order_is_shuffled_and_resumes_exactly(qm9_sample):
    it = _iterator(qm9_sample)
    first_epoch = []
    while it.state()["cursor"] < len(qm9_sample):  # epoch 0
        batch = next(it)
        first_epoch += batch.molecule_index[batch.graph.graph_mask].tolist()
    assert sorted(first_epoch) == list(range(len(qm9_sample)))
    assert first_epoch != sorted(first_epoch)
    state = it.state()
    expected = [next(it) for _ in range(10)]
    resumed = _iterator(qm9_sample)
    resumed.restore(state)
    for want in expected:
        got = next(resumed)
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_dense_processes_take_disjoint_shards(qm9_sample):
    whole = _iterator(qm9_sample, n_shards=4)
    parts = [_iterator(qm9_sample, n_shards=4, process_index=p, process_count=2) for p in (0, 1)]
    for _ in range(6):
        want = next(whole)
        for p, part in enumerate(parts):
            got = next(part)
            mine = slice(2 * p, 2 * p + 2)
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[mine]), got, want)  # noqa: B023


def test_a_molecule_larger_than_every_bucket_is_refused(qm9_sample):
    edges = CandidateEdges(np.zeros(len(qm9_sample), np.int32), 0.0)
    with pytest.raises(ValueError, match="fits no bucket"):
        BatchIterator(qm9_sample, edges, Budget(1, 4, 40, 2, 10), buckets=(10,))


def test_make_iterators_dense_shares_buckets_and_counts_no_edges(qm9_sample):
    config = ml_collections.ConfigDict(
        dict(
            batch_size=16,
            eval_batch_size=32,
            skin=None,
            budget_slack=1.15,
            elements=(1, 6, 7, 8, 9),
            shuffle_seed=0,
            buckets=3,
        )
    )
    splits = {
        "train": qm9_sample.subset(np.arange(150)),
        "valid": qm9_sample.subset(np.arange(150, 200)),
    }
    its = pipeline.make_iterators(splits, config, 5.0, 2, label="qm9", layout="dense")
    assert its["train"].buckets == its["valid"].buckets == dense_buckets(qm9_sample.n_atoms, 3)
    assert its["train"].budget.graphs == 8 and its["valid"].budget.graphs == 16
    batch = next(its["train"])
    check_dense_batch(batch, splits["train"], _budget_of(its["train"], batch))
