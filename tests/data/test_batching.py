"""Static-shape batching of real QM9 molecules: budgets, padding, edges, iteration order."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from molspectra_jax.data import pipeline
from molspectra_jax.data.batching import (
    BatchIterator,
    Budget,
    candidate_edges,
    candidate_pairs,
    collate,
    count_candidate_edges,
    make_budget,
    pack_shard,
    padding_fraction,
)
from molspectra_jax.graph import Graph

CUTOFF, SKIN = 5.0, 1.0


@pytest.fixture(scope="module")
def edges(qm9_sample):
    return candidate_edges(qm9_sample, CUTOFF + SKIN)


def pair_set(positions, radius):
    """Reference: ordered pairs (i, j), i != j, closer than radius, by brute force."""
    n = len(positions)
    return {
        (i, j)
        for i in range(n)
        for j in range(n)
        if i != j and np.sqrt(((positions[i] - positions[j]) ** 2).sum()) < radius
    }


def molecule_edges(dataset, radius, m):
    """Candidate edges of molecule m (molecule-local indices), both directions of each
    pair collate finds."""
    _, pos = dataset.molecule(m)
    first, second, _ = candidate_pairs(pos, [len(pos)], radius)
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    return pairs | {(j, i) for i, j in pairs}


def test_candidate_pairs_match_brute_force_in_row_major_order(qm9_sample, edges):
    """Unordered pairs i < j, row-major; the edge counts are both directions of them."""
    assert edges.radius == CUTOFF + SKIN
    rows = np.arange(0, len(qm9_sample), 7)
    part = qm9_sample.subset(rows)
    senders, receivers, counts = candidate_pairs(part.positions, part.n_atoms, CUTOFF + SKIN)
    np.testing.assert_array_equal(2 * counts, edges.n_edges[rows])
    assert np.all(senders < receivers)
    owner = np.repeat(np.arange(len(rows)), counts)
    for m in range(len(rows)):
        _, pos = part.molecule(m)
        first = part.offsets[m]
        s, r = senders[owner == m] - first, receivers[owner == m] - first
        brute = {(i, j) for i, j in pair_set(pos.astype(np.float64), CUTOFF + SKIN) if i < j}
        assert set(zip(s.tolist(), r.tolist(), strict=True)) == brute
        key = s * 1000 + r  # the order np.nonzero of the [n, n] distance mask gives
        assert np.all(np.diff(key) > 0)


def test_edge_counts_do_not_depend_on_the_chunking(qm9_sample, edges):
    for chunk in (1, 7, 5000):
        counts = count_candidate_edges(qm9_sample, CUTOFF + SKIN, chunk=chunk)
        np.testing.assert_array_equal(counts, edges.n_edges)


def test_skin_keeps_every_pair_within_cutoff_after_noise(qm9_sample, edges):
    """Noise of sigma 0.04 Å (denoising pre-training) moves atoms after the edges are built."""
    rng = np.random.default_rng(0)
    missed_without_skin = 0
    tight = candidate_edges(qm9_sample, CUTOFF)
    for m in range(len(qm9_sample)):
        _, pos = qm9_sample.molecule(m)
        noisy = pos + rng.normal(scale=0.04, size=pos.shape)
        needed = pair_set(noisy, CUTOFF)
        assert needed <= molecule_edges(qm9_sample, edges.radius, m), f"molecule {m} lost a pair"
        missed_without_skin += len(needed - molecule_edges(qm9_sample, tight.radius, m))
    assert missed_without_skin > 0  # the reason for the skin: without it pairs are lost


def test_make_budget(qm9_sample, edges):
    budget = make_budget(qm9_sample, edges, batch_size=16, n_shards=2, slack=1.15)
    assert budget.n_shards == 2 and budget.graphs == 8 + 1
    assert budget.atoms >= qm9_sample.n_atoms.max() + 1
    assert budget.atoms >= np.ceil(8 * qm9_sample.n_atoms.mean() * 1.15) + 1
    assert budget.edges >= edges.n_edges.max() + 1
    with pytest.raises(ValueError, match="batch_size 10 is not divisible by 4 shards"):
        make_budget(qm9_sample, edges, batch_size=10, n_shards=4)


def test_pack_shard_rejects_molecule_larger_than_budget(qm9_sample, edges):
    big = int(np.argmax(qm9_sample.n_atoms))
    tiny = Budget(n_shards=1, graphs=4, atoms=int(qm9_sample.n_atoms[big]), edges=10_000)
    with pytest.raises(ValueError, match=f"molecule {big} .* does not fit the budget"):
        pack_shard(np.array([big]), 0, qm9_sample.n_atoms, edges.n_edges, tiny)
    assert pack_shard(np.array([big]), 1, qm9_sample.n_atoms, edges.n_edges, tiny) == 1


def check_batch(batch, dataset, edges, budget):
    """Every static-shape, padding and content convention of one GraphBatch."""
    s_, g_, n_, e_ = budget.n_shards, budget.graphs, budget.atoms, budget.edges
    assert batch.graph.atomic_numbers.shape == (s_, n_) and batch.graph.positions.shape == (
        s_,
        n_,
        3,
    )
    assert (
        batch.graph.senders.shape
        == batch.graph.receivers.shape
        == batch.graph.edge_mask.shape
        == (s_, e_)
    )
    assert batch.graph.graph_mask.shape == batch.molecule_index.shape == (s_, g_)
    assert batch.targets.shape == (s_, g_, dataset.targets.shape[1])
    assert isinstance(batch.graph, Graph)
    for s in range(s_):
        atoms, emask, gmask = (
            batch.graph.atom_mask[s],
            batch.graph.edge_mask[s],
            batch.graph.graph_mask[s],
        )
        # Budgets: one graph slot and one atom slot are always padding.
        assert gmask.sum() <= g_ - 1 and not gmask[-1]
        assert atoms.sum() <= n_ - 1 and not atoms[-1]
        # Real slots first, padding after; edges in two halves, each the other reversed.
        half, u = e_ // 2, emask.sum() // 2
        assert np.all(atoms[: atoms.sum()]) and np.all(emask[:u]) and np.all(emask[half:][:u])
        assert not emask[u:half].any() and not emask[half + u :].any()
        mirrored = batch.graph.senders[s][:half], batch.graph.receivers[s][half:]
        np.testing.assert_array_equal(*mirrored)
        np.testing.assert_array_equal(
            batch.graph.receivers[s][:half], batch.graph.senders[s][half:]
        )
        assert np.all(gmask[: gmask.sum()])
        # Padding atoms belong to the last graph slot, carry zeros.
        assert np.all(batch.graph.graph_index[s][~atoms] == g_ - 1)
        assert np.all(batch.graph.atomic_numbers[s][~atoms] == 0)
        assert np.all(batch.graph.positions[s][~atoms] == 0)
        assert np.all(batch.molecule_index[s][~gmask] == -1)
        # Padding edges are self-loops on the last (padding) atom.
        assert np.all(batch.graph.senders[s][~emask] == n_ - 1)
        assert np.all(batch.graph.receivers[s][~emask] == n_ - 1)
        # Real edges join real atoms of the same graph: no inter-molecular edges.
        snd, rcv = batch.graph.senders[s][emask], batch.graph.receivers[s][emask]
        assert np.all(atoms[snd]) and np.all(atoms[rcv]) and np.all(snd != rcv)
        np.testing.assert_array_equal(
            batch.graph.graph_index[s][snd], batch.graph.graph_index[s][rcv]
        )
        # Contents: each graph slot holds exactly its dataset molecule.
        for g in np.nonzero(gmask)[0]:
            m = batch.molecule_index[s, g]
            z, pos = dataset.molecule(m)
            slots = np.nonzero(atoms & (batch.graph.graph_index[s] == g))[0]
            np.testing.assert_array_equal(batch.graph.atomic_numbers[s, slots], z)
            np.testing.assert_array_equal(batch.graph.positions[s, slots], pos)
            np.testing.assert_allclose(batch.targets[s, g], dataset.targets[m], rtol=1e-6)
            in_graph = batch.graph.graph_index[s][snd] == g
            local = set(
                zip(
                    (snd[in_graph] - slots[0]).tolist(),
                    (rcv[in_graph] - slots[0]).tolist(),
                    strict=True,
                )
            )
            assert local == molecule_edges(dataset, edges.radius, m)


def test_train_batches_respect_budgets_and_conventions(qm9_sample, edges):
    budget = make_budget(qm9_sample, edges, batch_size=16, n_shards=2)
    iterator = BatchIterator(qm9_sample, edges, budget, seed=0, shuffle=True)
    for _ in range(8):
        check_batch(next(iterator), qm9_sample, edges, budget)


def test_tight_budget_packs_by_atoms(qm9_sample, edges):
    """With no slack the atom budget, not the graph count, usually closes a shard."""
    budget = make_budget(qm9_sample, edges, batch_size=12, slack=0.6)
    iterator = BatchIterator(qm9_sample, edges, budget, shuffle=False)
    seen = []
    for batch in iterator.one_pass():
        check_batch(batch, qm9_sample, edges, budget)
        assert batch.graph.atom_mask.sum() <= budget.atoms - 1
        assert batch.graph.edge_mask.sum() <= budget.edges
        seen.append(batch.graph.graph_mask.sum())
    assert min(seen[:-1]) < budget.graphs - 1  # shards closed early by atoms/edges


def test_one_pass_sees_every_molecule_once_in_order(qm9_sample, edges):
    budget = make_budget(qm9_sample, edges, batch_size=24, n_shards=3)
    iterator = BatchIterator(qm9_sample, edges, budget, shuffle=False)
    for _ in range(2):  # a second pass starts over
        seen = []
        for batch in iterator.one_pass():
            check_batch(batch, qm9_sample, edges, budget)
            index = batch.molecule_index.reshape(-1)
            seen.extend(index[index >= 0].tolist())
        assert seen == list(range(len(qm9_sample)))
    with pytest.raises(StopIteration):
        next(iterator)
    with pytest.raises(ValueError, match="one_pass is for evaluation"):
        next(BatchIterator(qm9_sample, edges, budget, shuffle=True).one_pass())


def _epochs(iterator, n_epochs):
    """Molecule order of each of the first `n_epochs` training epochs."""
    orders = [[] for _ in range(n_epochs + 1)]
    while iterator.state()["epoch"] < n_epochs:
        index = next(iterator).molecule_index.reshape(-1)
        orders[iterator.state()["epoch"]].extend(index[index >= 0].tolist())
    return orders[:n_epochs]


def test_training_epochs_cover_everything_and_reshuffle(qm9_sample, edges):
    budget = make_budget(qm9_sample, edges, batch_size=32, n_shards=2)
    first, second = _epochs(BatchIterator(qm9_sample, edges, budget, seed=5), 2)
    assert sorted(first) == sorted(second) == list(range(len(qm9_sample)))
    assert first != second and first != list(range(len(qm9_sample)))
    other_seed = _epochs(BatchIterator(qm9_sample, edges, budget, seed=6), 1)[0]
    assert other_seed != first
    same_seed = _epochs(BatchIterator(qm9_sample, edges, budget, seed=5), 1)[0]
    assert same_seed == first


def assert_same_batch(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_state_restore_resumes_identical_batches(qm9_sample, edges):
    budget = make_budget(qm9_sample, edges, batch_size=32, n_shards=2)
    original = BatchIterator(qm9_sample, edges, budget, seed=3)
    for _ in range(5):
        next(original)
    state = dict(original.state())
    expected = [next(original) for _ in range(12)]  # crosses an epoch boundary
    assert original.state()["epoch"] > state["epoch"]

    resumed = BatchIterator(qm9_sample, edges, budget, seed=3)
    resumed.restore({k: np.int64(v) for k, v in state.items()})  # as from a checkpoint
    for want in expected:
        assert_same_batch(next(resumed), want)
    assert resumed.state() == original.state()


@pytest.mark.parametrize("shuffle", [True, False])
def test_processes_take_disjoint_parts_of_the_global_batch(qm9_sample, edges, shuffle):
    """Each of 2 processes collates 2 of the 4 global shards; together, the 1-process batch."""
    budget = make_budget(qm9_sample, edges, batch_size=32, n_shards=4)
    whole = BatchIterator(qm9_sample, edges, budget, seed=3, shuffle=shuffle)
    parts = [
        BatchIterator(
            qm9_sample, edges, budget, seed=3, shuffle=shuffle, process_index=p, process_count=2
        )
        for p in range(2)
    ]
    for _ in range(9):  # crosses an epoch boundary when shuffled
        try:
            want = next(whole)
        except StopIteration:
            break
        got = [next(part) for part in parts]
        for p, batch in enumerate(got):
            assert batch.graph.atomic_numbers.shape[0] == 2
            mine = slice(2 * p, 2 * p + 2)
            assert_same_batch(batch, jax.tree.map(lambda x: x[mine], want))  # noqa: B023
        assert parts[0].state() == parts[1].state() == whole.state()
    with pytest.raises(ValueError, match=r"process_index 2 not in \[0, 2\)"):
        BatchIterator(qm9_sample, edges, budget, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="3 shards don't split over 2 processes"):
        BatchIterator(qm9_sample, edges, Budget(3, 9, 200, 3000), process_count=2)


def test_spectra_and_atom_targets_follow_their_molecules(qm9_sample, edges):
    rng = np.random.default_rng(0)
    spectra = {"ir": rng.normal(size=(len(qm9_sample), 7)).astype(np.float32)}
    forces = rng.normal(size=(qm9_sample.offsets[-1], 3)).astype(np.float32)
    dataset = dataclasses.replace(qm9_sample, atom_targets=forces, spectra=spectra)
    budget = make_budget(dataset, edges, batch_size=8)
    shards = [np.array([4, 150, 9])]
    batch = collate(dataset, edges, shards, budget)
    assert batch.spectra["ir"].shape == (1, budget.graphs, 7)
    np.testing.assert_array_equal(batch.spectra["ir"][0, :3], spectra["ir"][[4, 150, 9]])
    assert np.all(batch.spectra["ir"][0, 3:] == 0)
    slots = np.nonzero(batch.graph.atom_mask[0] & (batch.graph.graph_index[0] == 1))[0]
    np.testing.assert_array_equal(
        batch.atom_targets[0, slots], forces[dataset.offsets[150] : dataset.offsets[151]]
    )
    assert np.all(batch.atom_targets[0][~batch.graph.atom_mask[0]] == 0)


def test_padding_fraction(qm9_sample, edges):
    budget = Budget(n_shards=2, graphs=4, atoms=40, edges=1000)
    rows = [np.array([0, 1]), np.array([2])]
    batch = collate(qm9_sample, edges, rows, budget)
    n_atoms = qm9_sample.n_atoms[[0, 1, 2]].sum()
    n_edges = edges.n_edges[[0, 1, 2]].sum()
    fractions = padding_fraction(batch)
    assert fractions["graphs"] == pytest.approx(1 - 3 / 8)
    assert fractions["atoms"] == pytest.approx(1 - n_atoms / 80)
    assert fractions["edges"] == pytest.approx(1 - n_edges / 2000)
    empty = collate(qm9_sample, edges, [np.array([], np.int64)] * 2, budget)
    assert padding_fraction(empty) == {"atoms": 1.0, "edges": 1.0, "graphs": 1.0}


def test_default_slack_keeps_padding_modest(qm9_sample, edges):
    budget = make_budget(qm9_sample, edges, batch_size=32, slack=1.15)
    iterator = BatchIterator(qm9_sample, edges, budget, shuffle=False)
    atoms = [padding_fraction(b)["atoms"] for b in list(iterator.one_pass())[:-1]]
    assert 0.0 < np.mean(atoms) < 0.3


def test_make_iterators_with_a_train_split_only(qm9_sample):
    """Pre-training-style splits without evaluation parts still get static budgets."""
    config = ml_collections.ConfigDict(
        dict(
            batch_size=32,
            eval_batch_size=64,
            skin=SKIN,
            budget_slack=1.15,
            elements=(1, 6, 7, 8, 9),
            shuffle_seed=0,
        )
    )
    iterators = pipeline.make_iterators({"train": qm9_sample}, config, CUTOFF, 1, label="qm9")
    train = iterators["train"]
    batch = next(train)
    check_batch(batch, qm9_sample, train.edges, train.budget)


def test_rows_iterate_as_the_subset_would(qm9_sample, edges):
    """A split given as rows (a memory-mapped store is never copied) batches exactly as
    the copied-out subset: same atoms, edges, order and molecule_index."""
    rows = np.random.default_rng(1).permutation(len(qm9_sample))[:150]
    subset = qm9_sample.subset(rows)
    budget = make_budget(qm9_sample, edges, batch_size=16, n_shards=2, rows=rows)
    assert budget == make_budget(subset, candidate_edges(subset, CUTOFF + SKIN), 16, 2)
    for shuffle in (True, False):
        by_rows = BatchIterator(qm9_sample, edges, budget, rows=rows, seed=2, shuffle=shuffle)
        copied_edges = candidate_edges(subset, CUTOFF + SKIN)
        copied = BatchIterator(subset, copied_edges, budget, seed=2, shuffle=shuffle)
        assert len(by_rows) == len(copied) == 150
        for _ in range(12):  # crosses an epoch boundary when shuffled
            if not shuffle and by_rows.cursor >= 150:
                break
            assert_same_batch(next(by_rows), next(copied))


def test_validate_names_the_first_bad_molecule(qm9_sample):
    pipeline.validate(qm9_sample, "qm9", (1, 6, 7, 8, 9), None)
    z = qm9_sample.atomic_numbers.copy()
    z[qm9_sample.offsets[40] + 2] = 3  # lithium
    positions = qm9_sample.positions.copy()
    positions[qm9_sample.offsets[70]] = np.nan
    bad = dataclasses.replace(qm9_sample, atomic_numbers=z, positions=positions)
    with pytest.raises(Exception, match=rf"qm9, record {bad.ids[40]}: unsupported element\(s\) Li"):
        pipeline.validate(bad, "qm9", (1, 6, 7, 8, 9), None)
    bad = dataclasses.replace(qm9_sample, positions=positions)
    with pytest.raises(Exception, match=rf"qm9, record {bad.ids[70]}: non-finite coordinates"):
        pipeline.validate(bad, "qm9", (1, 6, 7, 8, 9), None)
    with pytest.raises(Exception, match="exceeds the budget of 5"):
        pipeline.validate(qm9_sample, "qm9", (1, 6, 7, 8, 9), 5)
