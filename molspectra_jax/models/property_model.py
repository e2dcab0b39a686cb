"""Encoder + one head per target: molecule-level predictions in standardized units.

The model returns `raw [G, T]`; `denormalize` maps it to the targets' units with the
train-split statistics (TorchMD-Net's standardize + atomref prior), outside the
module, so statistics are data, not parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from molspectra_jax.models.encoder import EquivariantTransformer
from molspectra_jax.models.heads import MOLECULE_LEVEL, VectorHead, build_head


class TargetStats(NamedTuple):
    """Per-target mean [T], std [T] and per-element reference values atomref [Z, T]."""

    mean: jax.Array
    std: jax.Array
    atomref: jax.Array


class PropertyModel(nn.Module):
    """ET encoder, a head per target and (optionally) a noise head for noisy nodes."""

    encoder: EquivariantTransformer
    heads: tuple[str, ...]
    noise_head: bool = False

    @nn.compact
    def __call__(
        self,
        atomic_numbers,
        positions,
        senders,
        receivers,
        edge_mask,
        atom_mask,
        graph_index,
        n_graphs: int,
    ):
        """Shard arrays ([N], [N, 3], [E], ...) -> {"raw": [G, T], "noise": [N, 3]?}."""
        x, vec = self.encoder(atomic_numbers, positions, senders, receivers, edge_mask, atom_mask)
        columns = []
        for t, kind in enumerate(self.heads):
            out = build_head(kind, name=f"head_{t}_{kind}")(
                x, vec, atomic_numbers, positions, atom_mask, graph_index, n_graphs
            )
            if kind not in MOLECULE_LEVEL:
                out = jax.ops.segment_sum(out, graph_index, num_segments=n_graphs)  # [G, 1]
            columns.append(out)
        outputs = {"raw": jnp.concatenate(columns, axis=-1)}  # [G, T]
        if self.noise_head:
            outputs["noise"] = VectorHead(name="noise_head")(x, vec) * atom_mask[:, None]
        return outputs


def atomref_sum(atomic_numbers, atom_mask, graph_index, n_graphs, atomref):
    """[G, T] sum of the per-element reference values of each molecule's atoms."""
    per_atom = atomref[atomic_numbers] * atom_mask[:, None]  # [N, T]
    return jax.ops.segment_sum(per_atom, graph_index, num_segments=n_graphs)


def denormalize(raw, stats: TargetStats, reference, molecule_level):
    """raw [G, T] -> target units: raw * std + mean + atomref sum.

    `molecule_level` [T] bool marks heads (dipole) whose output is a norm: no mean added.
    """
    mean = jnp.where(molecule_level, 0.0, stats.mean)
    return raw * stats.std + mean + reference
