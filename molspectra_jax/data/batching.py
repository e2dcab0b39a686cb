"""Static-shape batches: molecules packed into fixed budgets of graphs, atoms and edges.

XLA compiles one program per input shape, so every batch has the same shapes: a
leading shard axis S (one slice per device, so data parallelism never moves atoms
between devices), then per shard the padded `molspectra_jax.graph.Graph` of G graph
slots, N atom slots and E edge slots (the padding layout is described there).

Edges are *candidates*: all intra-molecular pairs within `cutoff + skin`, found per
batch on the host (vectorized, nothing held per dataset but one count per molecule,
which packing needs). The model masks them to the true cutoff with the positions it is
given, so neighbour lists stay exact when noise (sigma 0.04 Å) moves atoms on device,
as long as no pair distance shrinks by more than `skin`. By default the skin follows
the noise (`candidate_radius`): SKIN_SIGMAS standard deviations of a pair's relative
displacement, and nothing when nothing moves (fine-tuning without noisy nodes,
prediction); the train steps count any pair that was missed all the same
(`molspectra_jax.train.neighbors`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from molspectra_jax.data.records import MoleculeDataset, concat_ranges
from molspectra_jax.graph import Graph


class GraphBatch(NamedTuple):
    """A padded batch: S shards x (G graphs, N atoms, E edges), plus what is learnt from it.

    `graph` holds the model inputs with a leading shard axis ([S, N], [S, E], [S, G]).
    """

    graph: Graph
    molecule_index: np.ndarray  # [S, G] int32, dataset row of each graph, -1 = padding
    targets: np.ndarray  # [S, G, T] float32
    atom_targets: np.ndarray  # [S, N, K] float32 (e.g. forces), K may be 0
    spectra: dict  # name -> [S, G, L] float32, empty when unused


# A pair's distance changes under noise by about the projection of n_i - n_j on its
# direction: N(0, 2 sigma^2). Five of those standard deviations (0.28 Å at sigma 0.04 Å)
# are missed once in ~3.5 million pairs at the edge of the candidate radius, where the
# cosine cutoff weight of the pair is (pi skin / 2 cutoff)^2 ~ 1e-2 at most.
SKIN_SIGMAS = 5.0


def candidate_radius(cutoff: float, skin: float | None, noise_sigma: float) -> float:
    """Candidate-edge radius (Å): cutoff + skin; `skin` None derives it from the noise
    added on the device (sigma Å per coordinate): SKIN_SIGMAS * sqrt(2) * sigma."""
    if skin is None:
        skin = SKIN_SIGMAS * math.sqrt(2.0) * noise_sigma
    if skin < 0:
        raise ValueError(f"skin {skin} Å must be >= 0 (or None: from the noise)")
    return float(cutoff + skin)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Per-shard slot counts; one padding graph and at least one padding atom included.

    `edges` is even: each pair fills one slot in each half. `slots` > 0 is the dense
    layout's (`collate` with it): every graph slot owns `slots` atom slots (atoms =
    graphs * slots) and no edge is found.
    """

    n_shards: int
    graphs: int
    atoms: int
    edges: int
    slots: int = 0

    def __post_init__(self):
        if self.edges % 2:
            raise ValueError(f"{self}: edge slots must be even (a pair fills one per half)")


@dataclasses.dataclass(frozen=True)
class CandidateEdges:
    """How many candidate edges each molecule has: pairs i != j closer than `radius`.

    The pairs themselves are found per batch (`candidate_pairs`); packing a shard only
    needs the counts.
    """

    counts: np.ndarray  # [M] int32
    radius: float

    @property
    def n_edges(self) -> np.ndarray:
        return self.counts


def candidate_pairs(
    positions: np.ndarray, n_atoms: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unordered pairs i < j of each molecule closer than `radius` (Å), molecule by
    molecule, each molecule's in row-major (i, j) order. A batch holds each pair twice,
    (i -> j) and (j -> i), in the two halves of its edge slots (`collate`).

    Args:
      positions: [A, 3] float32, the atoms of g molecules back to back.
      n_atoms: [g] atoms per molecule (sum A).

    Returns:
      first, second: [U] int64 indices into `positions` (first < second); counts: [g]
      unordered pairs per molecule.
    """
    within, start = _pair_mask(positions, n_atoms, radius)  # [g, n, n]
    within &= np.triu(np.ones(within.shape[1:], bool), 1)
    per_atom = within.sum(axis=2)  # [g, n]
    n = within.shape[-1]
    first = np.repeat((start[:, None] + np.arange(n)).ravel(), per_atom.ravel())
    counts = per_atom.sum(axis=1)
    # The True entries in row-major order: molecule, then i, then j.
    second = np.repeat(start, counts) + np.broadcast_to(np.arange(n), within.shape)[within]
    return first, second, counts


def _pair_mask(positions, n_atoms, radius) -> tuple[np.ndarray, np.ndarray]:
    """([g, n, n] bool, pair (i, j) of molecule m within `radius`, i != j; [g] first atom).

    Molecules are padded to the largest, n atoms, one coordinate at a time, so the
    distances are a few contiguous array operations (no per-molecule loop). Padding
    slots sit 1e6 Å apart, so no pair with one is ever within the radius.
    """
    n_atoms = np.asarray(n_atoms, np.int64)
    g, n = len(n_atoms), int(n_atoms.max(initial=0))
    first = np.cumsum(n_atoms) - n_atoms
    slot = np.arange(len(positions)) + np.repeat(np.arange(g) * n - first, n_atoms)
    padded = np.broadcast_to(np.arange(1, g * n + 1, dtype=np.float32) * 1e6, (3, g * n)).copy()
    padded[:, slot] = np.asarray(positions, np.float32).T
    padded = padded.reshape(3, g, n)
    # (dx^2 + dy^2) + dz^2, then sqrt, in float32: np.linalg.norm's arithmetic, so a pair
    # on the radius is kept or dropped exactly as the on-device distance would say.
    squared, delta = np.zeros((g, n, n), np.float32), np.empty((g, n, n), np.float32)
    for coordinate in padded:
        np.subtract(coordinate[:, :, None], coordinate[:, None, :], out=delta)
        np.multiply(delta, delta, out=delta)
        squared += delta
    squared.reshape(g, n * n)[:, :: n + 1] = np.inf  # i == j
    return np.sqrt(squared, out=squared) < radius, first


def count_candidate_edges(dataset: MoleculeDataset, radius: float, chunk: int = 512) -> np.ndarray:
    """[M] int32 candidate edges per molecule (`candidate_pairs` counts), `chunk`
    molecules at a time so memory stays bounded."""
    counts = np.zeros(len(dataset), np.int32)
    for start in range(0, len(dataset), chunk):
        stop = min(start + chunk, len(dataset))
        atoms = dataset.positions[dataset.offsets[start] : dataset.offsets[stop]]
        within, _ = _pair_mask(atoms, dataset.n_atoms[start:stop], radius)
        counts[start:stop] = within.sum(axis=(1, 2))
    return counts


def candidate_edges(dataset: MoleculeDataset, radius: float) -> CandidateEdges:
    """Candidate-edge counts of every molecule of `dataset` within `radius` (Å); read from
    (or written to) the molecule store's cache when the dataset is mapped from one."""
    if dataset.store:
        from molspectra_jax.data import molstore

        counts = molstore.edge_counts(dataset, radius)
    else:
        counts = count_candidate_edges(dataset, radius)
    return CandidateEdges(counts=counts, radius=radius)


def make_budget(
    dataset: MoleculeDataset,
    edges: CandidateEdges,
    batch_size: int,
    n_shards: int = 1,
    slack: float = 1.15,
    rows: np.ndarray | None = None,
) -> Budget:
    """Budgets sized so a shard of `batch_size / n_shards` average molecules (of `rows`,
    default all) fits.

    `slack` > 1 leaves room for above-average molecules, so the graph count is usually
    what fills a shard; the padding fraction is roughly 1 - 1/slack.
    """
    if batch_size < 1 or n_shards < 1:
        raise ValueError(f"batch_size {batch_size} and {n_shards} shards must be positive")
    if batch_size % n_shards:
        raise ValueError(f"batch_size {batch_size} is not divisible by {n_shards} shards")
    per_shard = batch_size // n_shards
    n_atoms, n_edges = dataset.n_atoms, edges.n_edges
    if rows is not None:
        n_atoms, n_edges = n_atoms[rows], n_edges[rows]
    atoms = max(int(n_atoms.max()), math.ceil(per_shard * n_atoms.mean() * slack)) + 1
    edge_slots = max(int(n_edges.max()), math.ceil(per_shard * n_edges.mean() * slack)) + 2
    edge_slots += edge_slots % 2  # two halves (`collate`)
    return Budget(n_shards=n_shards, graphs=per_shard + 1, atoms=atoms, edges=edge_slots)


# Dense-layout batches are sorted by size bucket within windows of this many batches.
BUCKET_WINDOW = 16


def dense_budget(budget: Budget, slots: int) -> Budget:
    """The dense layout's shape for one bucket: `budget.graphs` molecule blocks of
    `slots` atom slots per shard, no edges (two padding slots)."""
    return Budget(budget.n_shards, budget.graphs, budget.graphs * slots, 2, slots)


def dense_buckets(n_atoms: np.ndarray, count: int) -> tuple[int, ...]:
    """At most `count` slot counts (ascending; the last the largest molecule) that
    minimise the padded pair slots sum_m bucket(m)^2 of molecules of `n_atoms` atoms: an
    exact dynamic programme over the distinct sizes."""
    sizes, freq = np.unique(np.asarray(n_atoms, np.int64), return_counts=True)
    k, s = min(count, len(sizes)), len(sizes)
    below = np.concatenate([[0], np.cumsum(freq)])  # molecules of sizes[:i]
    # cost[i, j]: sizes[i..j] all padded to sizes[j]
    cost = (below[None, 1:] - below[:-1, None]) * sizes[None, :] ** 2.0
    best = np.full((k + 1, s + 1), np.inf)
    best[0, 0] = 0.0
    cut = np.zeros((k + 1, s + 1), np.int64)
    for b in range(1, k + 1):
        for j in range(1, s + 1):
            options = best[b - 1, :j] + cost[np.arange(j), j - 1]
            cut[b, j] = int(np.argmin(options))
            best[b, j] = options[cut[b, j]]
    b = int(np.argmin(best[1:, s])) + 1
    edges, j = [], s
    while j > 0:
        edges.append(int(sizes[j - 1]))
        j, b = cut[b, j], b - 1
    return tuple(sorted(edges))


def pack_shard(
    order: np.ndarray, start: int, n_atoms: np.ndarray, n_edges: np.ndarray, budget: Budget
) -> int:
    """End index `stop` such that molecules order[start:stop] fill one shard greedily:
    the first molecule that would overflow the graph, atom or edge budget closes it."""
    window = order[start : start + budget.graphs - 1]
    atoms, edges = np.cumsum(n_atoms[window]), np.cumsum(n_edges[window])
    fit = min(
        np.searchsorted(atoms, budget.atoms - 1, side="right"),
        np.searchsorted(edges, budget.edges, side="right"),
    )
    if fit == 0 and start < len(order):
        raise ValueError(
            f"molecule {order[start]} ({n_atoms[order[start]]} atoms, "
            f"{n_edges[order[start]]} edges) does not fit the budget {budget}"
        )
    return start + int(fit)


def collate(
    dataset: MoleculeDataset,
    edges: CandidateEdges,
    shards: list[np.ndarray],
    budget: Budget,
    index: list[np.ndarray] | None = None,
) -> GraphBatch:
    """Pad `shards` (lists of dataset rows, one per shard) into a [len(shards), ...] batch.

    Candidate edges are found here, within `edges.radius`; with `budget.slots` (the dense
    layout) molecule g takes atom slots [g * slots, g * slots + n_atoms) and its padding
    atoms stay in its graph, and no edge is found. Spectra come from
    `dataset.spectra`, one row per graph. `index` (parallel to `shards`) is what
    `molecule_index` records for each graph; by default the dataset row.
    """
    s_, g_, n_, e_ = len(shards), budget.graphs, budget.atoms, budget.edges
    t_ = dataset.targets.shape[1]
    k_ = 0 if dataset.atom_targets is None else dataset.atom_targets.shape[1]
    graph = Graph(
        atomic_numbers=np.zeros((s_, n_), np.int32),
        positions=np.zeros((s_, n_, 3), np.float32),
        atom_mask=np.zeros((s_, n_), bool),
        graph_index=np.full((s_, n_), g_ - 1, np.int32),
        senders=np.full((s_, e_), n_ - 1, np.int32),
        receivers=np.full((s_, e_), n_ - 1, np.int32),
        edge_mask=np.zeros((s_, e_), bool),
        graph_mask=np.zeros((s_, g_), bool),
    )
    batch = GraphBatch(
        graph=graph,
        molecule_index=np.full((s_, g_), -1, np.int32),
        targets=np.zeros((s_, g_, t_), np.float32),
        atom_targets=np.zeros((s_, n_, k_), np.float32),
        spectra={k: np.zeros((s_, g_, v.shape[1]), np.float32) for k, v in dataset.spectra.items()},
    )
    for s, rows in enumerate(shards):
        # One shard in a few numpy slices (no per-molecule loop): molecule g of `rows`
        # takes the next n_atoms[g] atom slots and its candidate pairs the next edge slots.
        rows = np.asarray(rows, np.int64)
        na = dataset.offsets[rows + 1] - dataset.offsets[rows]  # [g]
        a, g = int(na.sum()), len(rows)
        atoms = concat_ranges(dataset.offsets[rows], na)  # [a] dataset atom rows
        if budget.slots:
            if g > g_ or na.max(initial=0) > budget.slots:
                raise ValueError(f"{g} molecules of up to {na.max()} atoms exceed {budget}")
            slot = concat_ranges(np.arange(g) * budget.slots, na)  # [a] atom slots
            graph.graph_index[s] = np.arange(n_) // budget.slots
        else:
            slot = np.arange(a)
            graph.graph_index[s, :a] = np.repeat(np.arange(g, dtype=np.int32), na)
        graph.positions[s, slot] = dataset.positions[atoms]
        graph.atomic_numbers[s, slot] = dataset.atomic_numbers[atoms]
        graph.atom_mask[s, slot] = True
        graph.graph_mask[s, :g] = True
        if not budget.slots:
            # Pair (i, j) in slot e of the first half, (j, i) in slot e of the second.
            first, second, _ = candidate_pairs(graph.positions[s, :a], na, edges.radius)
            u, half = len(first), e_ // 2
            if 2 * u > e_:
                raise ValueError(f"{2 * u} candidate edges exceed the budget of {e_} ({budget})")
            graph.senders[s, :u], graph.receivers[s, :u] = first, second
            graph.senders[s, half : half + u], graph.receivers[s, half : half + u] = second, first
            graph.edge_mask[s, :u] = graph.edge_mask[s, half : half + u] = True
        batch.molecule_index[s, :g] = rows if index is None else index[s]
        batch.targets[s, :g] = dataset.targets[rows]
        if k_:
            batch.atom_targets[s, slot] = dataset.atom_targets[atoms]
        for k, v in dataset.spectra.items():
            batch.spectra[k][s, :g] = v[rows]
    return batch


class BatchIterator:
    """Endless (train) or one-pass (eval) iterator of `GraphBatch`es over a dataset's rows.

    `rows` (default: all) are the dataset rows this iterator walks, a split of a dataset
    too large to copy (a memory-mapped store); the batches are those of
    `dataset.subset(rows)`, `molecule_index` included.

    Training order is a fresh seeded permutation each epoch; the iterator's position
    (epoch, cursor) is part of the checkpoint, so a resumed run sees exactly the
    batches it would have seen.

    Multi-host: every process walks the same order and packs all `budget.n_shards`
    shards of the global batch (cheap index arithmetic), then collates only its own
    `n_shards / process_count` of them, so hosts see disjoint molecules and stay in step.

    `buckets` (slot counts, ascending) makes dense-layout batches: each molecule goes to
    the smallest bucket that holds it, the epoch order is sorted by bucket within windows
    of BUCKET_WINDOW batches (still shuffled across the epoch), and a batch takes up to
    `n_shards * budget.graphs` consecutive molecules of one bucket, in that bucket's
    static shape (`dense_budget`): one compiled program per bucket.
    """

    def __init__(
        self,
        dataset: MoleculeDataset,
        edges: CandidateEdges,
        budget: Budget,
        *,
        rows: np.ndarray | None = None,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        buckets: tuple[int, ...] = (),
    ):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if budget.n_shards % process_count:
            raise ValueError(f"{budget.n_shards} shards don't split over {process_count} processes")
        self.dataset, self.edges, self.budget = dataset, edges, budget
        self.rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, np.int64)
        self.n_atoms, self.n_edges = dataset.n_atoms[self.rows], edges.n_edges[self.rows]
        self.seed, self.shuffle = seed, shuffle
        local = budget.n_shards // process_count
        self.local_shards = slice(process_index * local, (process_index + 1) * local)
        self.epoch, self.cursor = 0, 0
        self._cached_order = None  # (epoch, order)
        self.buckets = tuple(int(b) for b in buckets)
        if self.buckets:
            if list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError(f"buckets {self.buckets} must ascend")
            if self.n_atoms.max(initial=0) > self.buckets[-1]:
                raise ValueError(
                    f"a molecule of {self.n_atoms.max()} atoms fits no bucket of {self.buckets}"
                )
            self.bucket_of = np.searchsorted(self.buckets, self.n_atoms)  # [len(rows)]
            self.budgets = [dense_budget(budget, b) for b in self.buckets]
            self.budget = self.budgets[-1]

    def __len__(self) -> int:
        """Molecules per epoch."""
        return len(self.rows)

    def _order(self) -> np.ndarray:
        """This epoch's order of positions in `rows`, computed once per epoch (128 ms at
        3.4M molecules)."""
        if self._cached_order is None or self._cached_order[0] != self.epoch:
            n = len(self.rows)
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            if self.buckets:  # stable sort by bucket within windows of the order
                window = BUCKET_WINDOW * self.budget.n_shards * self.budget.graphs
                key = np.arange(n) // window * len(self.buckets) + self.bucket_of[order]
                order = order[np.argsort(key, kind="stable")]
            self._cached_order = (self.epoch, order)
        return self._cached_order[1]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])

    def __iter__(self) -> Iterator[GraphBatch]:
        return self

    def one_pass(self) -> Iterator[GraphBatch]:
        """Every molecule once, in row order, from the start (evaluation)."""
        if self.shuffle:
            raise ValueError("one_pass is for evaluation iterators (shuffle=False)")
        self.epoch, self.cursor = 0, 0
        yield from self

    def __next__(self) -> GraphBatch:
        rows, index, budget = self.plan()
        return collate(self.dataset, self.edges, rows, budget, index)

    def plan(self) -> tuple[list[np.ndarray], list[np.ndarray], Budget]:
        """Advance by one batch without building it: (dataset rows, positions in `rows`)
        of each of this process's shards, and the batch's budget; `collate` builds it
        (`__next__` does both)."""
        order = self._order()
        if self.cursor >= len(order):
            if not self.shuffle:
                raise StopIteration
            self.epoch, self.cursor = self.epoch + 1, 0
            order = self._order()
        budget, shards = self.budget, []
        if self.buckets:  # one bucket's run of molecules, shard after shard
            bucket = self.bucket_of[order[self.cursor]]
            budget, g = self.budgets[bucket], self.budget.graphs
            run = order[self.cursor : self.cursor + budget.n_shards * g]
            run = run[: np.argmin(np.append(self.bucket_of[run] == bucket, False))]
            shards = [run[k * g : (k + 1) * g] for k in range(budget.n_shards)]
            self.cursor += len(run)
        for _ in range(budget.n_shards - len(shards)):
            stop = pack_shard(order, self.cursor, self.n_atoms, self.n_edges, budget)
            shards.append(order[self.cursor : stop])
            self.cursor = stop
        local = shards[self.local_shards]
        return [self.rows[p] for p in local], local, budget


def padding_fraction(batch: GraphBatch) -> dict[str, float]:
    """Fraction of atom, edge and graph slots that are padding in one batch."""
    return {
        "atoms": 1.0 - float(batch.graph.atom_mask.mean()),
        "edges": 1.0 - float(batch.graph.edge_mask.mean()),
        "graphs": 1.0 - float(batch.graph.graph_mask.mean()),
    }
