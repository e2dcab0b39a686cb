"""The padded molecular graph every model takes (no dependencies beyond the standard library).

A `Graph` is a static-shape pytree: N atom slots, E edge slots, G graph slots. Padding
is made inert by masks (True = real): the last graph slot owns every padding atom, and
padding edges join the last (padding) atom to itself, so gathers and segment sums need
no special cases. Batches add a leading shard axis S to every field (one slice per
device); a model sees one shard, without that axis.

Edges are candidates (all intra-molecular pairs within `cutoff + skin`); encoders cut
them to their cutoff at the positions they are given, so noise added on the device
keeps the neighbour lists exact. E is even and the two halves mirror each other: edge
e + E/2 is edge e reversed (j -> i for i -> j), so what depends on a pair's distance
alone is computed once per pair (padding edges mirror padding edges).
"""

from __future__ import annotations

from typing import Any, NamedTuple

Array = Any  # numpy on the host, jax.Array on the device


class Graph(NamedTuple):
    """Atoms, positions, candidate edges and masks of G padded molecules."""

    atomic_numbers: Array  # [N] int32
    positions: Array  # [N, 3] float32, Å
    atom_mask: Array  # [N] bool
    graph_index: Array  # [N] int32, graph slot of each atom
    senders: Array  # [E] int32, atom index (within the shard)
    receivers: Array  # [E] int32
    edge_mask: Array  # [E] bool
    graph_mask: Array  # [G] bool

    @property
    def n_graphs(self) -> int:
        """G, the number of graph slots (static: a shape, never a traced value)."""
        return self.graph_mask.shape[-1]

    @property
    def n_atoms(self) -> int:
        """N, the number of atom slots."""
        return self.atomic_numbers.shape[-1]

    def with_positions(self, positions: Array) -> Graph:
        """The same graph with other coordinates (noise, finite differences, rotations)."""
        return self._replace(positions=positions)
