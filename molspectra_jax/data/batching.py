"""Static-shape batches: molecules packed into fixed budgets of graphs, atoms and edges.

XLA compiles one program per input shape, so every batch has the same shapes: a
leading shard axis S (one slice per device, so data parallelism never moves atoms
between devices), then per shard the padded `molspectra_jax.graph.Graph` of G graph
slots, N atom slots and E edge slots (the padding layout is described there).

Edges are *candidates*: all intra-molecular pairs within `cutoff + skin`, computed
once on the host. The model masks them to the true cutoff with the positions it is
given, so neighbour lists stay exact when noise (sigma 0.04 Å) moves atoms on device,
as long as no pair distance changes by more than `skin`.
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


@dataclasses.dataclass(frozen=True)
class Budget:
    """Per-shard slot counts; one padding graph and at least one padding atom included."""

    n_shards: int
    graphs: int
    atoms: int
    edges: int


@dataclasses.dataclass(frozen=True)
class CandidateEdges:
    """Intra-molecular pairs within a radius, molecule m's at `offsets[m]:offsets[m+1]`."""

    senders: np.ndarray  # [P] int32, molecule-local
    receivers: np.ndarray  # [P] int32
    offsets: np.ndarray  # [M + 1] int64
    radius: float

    @property
    def n_edges(self) -> np.ndarray:
        return np.diff(self.offsets)


def candidate_edges(dataset: MoleculeDataset, radius: float) -> CandidateEdges:
    """All ordered pairs i != j of each molecule closer than `radius` (Å)."""
    senders, receivers, counts = [], [], []
    for m in range(len(dataset)):
        _, pos = dataset.molecule(m)
        dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)  # [n, n]
        s, r = np.nonzero((dist < radius) & ~np.eye(len(pos), dtype=bool))
        senders.append(s.astype(np.int32))
        receivers.append(r.astype(np.int32))
        counts.append(len(s))
    return CandidateEdges(
        senders=np.concatenate(senders),
        receivers=np.concatenate(receivers),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        radius=radius,
    )


def make_budget(
    dataset: MoleculeDataset,
    edges: CandidateEdges,
    batch_size: int,
    n_shards: int = 1,
    slack: float = 1.15,
) -> Budget:
    """Budgets sized so a shard of `batch_size / n_shards` average molecules fits.

    `slack` > 1 leaves room for above-average molecules, so the graph count is usually
    what fills a shard; the padding fraction is roughly 1 - 1/slack.
    """
    if batch_size < 1 or n_shards < 1:
        raise ValueError(f"batch_size {batch_size} and {n_shards} shards must be positive")
    if batch_size % n_shards:
        raise ValueError(f"batch_size {batch_size} is not divisible by {n_shards} shards")
    per_shard = batch_size // n_shards
    n_atoms, n_edges = dataset.n_atoms, edges.n_edges
    atoms = max(int(n_atoms.max()), math.ceil(per_shard * n_atoms.mean() * slack)) + 1
    edge_slots = max(int(n_edges.max()), math.ceil(per_shard * n_edges.mean() * slack)) + 1
    return Budget(n_shards=n_shards, graphs=per_shard + 1, atoms=atoms, edges=edge_slots)


def pack_shard(
    order: np.ndarray, start: int, n_atoms: np.ndarray, n_edges: np.ndarray, budget: Budget
) -> int:
    """End index `stop` such that molecules order[start:stop] fill one shard greedily."""
    atoms = edges = 0
    stop = start
    while stop < len(order) and stop - start < budget.graphs - 1:
        m = order[stop]
        if atoms + n_atoms[m] > budget.atoms - 1 or edges + n_edges[m] > budget.edges:
            break
        atoms, edges = atoms + n_atoms[m], edges + n_edges[m]
        stop += 1
    if stop == start and start < len(order):
        raise ValueError(
            f"molecule {order[start]} ({n_atoms[order[start]]} atoms, "
            f"{n_edges[order[start]]} edges) does not fit the budget {budget}"
        )
    return stop


def collate(
    dataset: MoleculeDataset, edges: CandidateEdges, shards: list[np.ndarray], budget: Budget
) -> GraphBatch:
    """Pad `shards` (lists of dataset rows, one per shard) into a [len(shards), ...] batch.

    Spectra come from `dataset.spectra`, one row per graph.
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
        # takes the next n_atoms[g] atom slots and n_edges[g] edge slots.
        rows = np.asarray(rows, np.int64)
        na = dataset.offsets[rows + 1] - dataset.offsets[rows]  # [g]
        ne = edges.offsets[rows + 1] - edges.offsets[rows]  # [g]
        a, e, g = int(na.sum()), int(ne.sum()), len(rows)
        atoms = concat_ranges(dataset.offsets[rows], na)  # [a] dataset atom rows
        first_atom = np.cumsum(na) - na  # [g] each molecule's first slot
        pairs = concat_ranges(edges.offsets[rows], ne)  # [e] candidate-edge rows
        shift = np.repeat(first_atom, ne)  # molecule-local -> shard atom index
        graph.atomic_numbers[s, :a] = dataset.atomic_numbers[atoms]
        graph.positions[s, :a] = dataset.positions[atoms]
        graph.atom_mask[s, :a] = True
        graph.graph_index[s, :a] = np.repeat(np.arange(g, dtype=np.int32), na)
        graph.senders[s, :e] = edges.senders[pairs] + shift
        graph.receivers[s, :e] = edges.receivers[pairs] + shift
        graph.edge_mask[s, :e] = True
        graph.graph_mask[s, :g] = True
        batch.molecule_index[s, :g] = rows
        batch.targets[s, :g] = dataset.targets[rows]
        if k_:
            batch.atom_targets[s, :a] = dataset.atom_targets[atoms]
        for k, v in dataset.spectra.items():
            batch.spectra[k][s, :g] = v[rows]
    return batch


class BatchIterator:
    """Endless (train) or one-pass (eval) iterator of `GraphBatch`es over a dataset.

    Training order is a fresh seeded permutation each epoch; the iterator's position
    (epoch, cursor) is part of the checkpoint, so a resumed run sees exactly the
    batches it would have seen.

    Multi-host: every process walks the same order and packs all `budget.n_shards`
    shards of the global batch (cheap index arithmetic), then collates only its own
    `n_shards / process_count` of them, so hosts see disjoint molecules and stay in step.
    """

    def __init__(
        self,
        dataset: MoleculeDataset,
        edges: CandidateEdges,
        budget: Budget,
        *,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if budget.n_shards % process_count:
            raise ValueError(f"{budget.n_shards} shards don't split over {process_count} processes")
        self.dataset, self.edges, self.budget = dataset, edges, budget
        self.seed, self.shuffle = seed, shuffle
        local = budget.n_shards // process_count
        self.local_shards = slice(process_index * local, (process_index + 1) * local)
        self.epoch, self.cursor = 0, 0
        self._cached_order = None  # (epoch, order)

    def _order(self) -> np.ndarray:
        """This epoch's molecule order, computed once per epoch (128 ms at 3.4M molecules)."""
        if self._cached_order is None or self._cached_order[0] != self.epoch:
            n = len(self.dataset)
            rng = np.random.default_rng([self.seed, self.epoch])
            self._cached_order = (self.epoch, rng.permutation(n) if self.shuffle else np.arange(n))
        return self._cached_order[1]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])

    def __iter__(self) -> Iterator[GraphBatch]:
        return self

    def one_pass(self) -> Iterator[GraphBatch]:
        """Every molecule once, in dataset order, from the start (evaluation)."""
        if self.shuffle:
            raise ValueError("one_pass is for evaluation iterators (shuffle=False)")
        self.epoch, self.cursor = 0, 0
        yield from self

    def __next__(self) -> GraphBatch:
        order = self._order()
        if self.cursor >= len(order):
            if not self.shuffle:
                raise StopIteration
            self.epoch, self.cursor = self.epoch + 1, 0
            order = self._order()
        shards = []
        for _ in range(self.budget.n_shards):
            stop = pack_shard(
                order, self.cursor, self.dataset.n_atoms, self.edges.n_edges, self.budget
            )
            shards.append(order[self.cursor : stop])
            self.cursor = stop
        return collate(self.dataset, self.edges, shards[self.local_shards], self.budget)


def padding_fraction(batch: GraphBatch) -> dict[str, float]:
    """Fraction of atom, edge and graph slots that are padding in one batch."""
    return {
        "atoms": 1.0 - float(batch.graph.atom_mask.mean()),
        "edges": 1.0 - float(batch.graph.edge_mask.mean()),
        "graphs": 1.0 - float(batch.graph.graph_mask.mean()),
    }
