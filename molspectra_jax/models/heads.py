"""Output heads on the encoder's (scalars [N, F], vectors [N, 3, F]).

Per-atom heads are the gated equivariant blocks of PaiNN / TorchMD-Net
(`EquivariantScalar`, `EquivariantVectorOutput`); the molecule-level physics heads
(dipole moment, electronic spatial extent) follow TorchMD-Net's output modules.
Property heads take (x, vec, graph) and return per-atom contributions [N, 1], except the
dipole head, whose norm is not additive over atoms ([G, 1], listed in `MOLECULE_LEVEL`);
summing over a molecule is the caller's segment sum.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from molspectra_jax.graph import Graph
from molspectra_jax.models.encoder import safe_norm

# Atomic masses (u) by atomic number (0 = padding) for the centre of mass of dipole / R2
# heads: H to Ar exactly, Br and I, and round placeholders for the elements between.
_MASSES = np.array(
    "0 1.008 4.003 6.94 9.012 10.81 12.011 14.007 15.999 18.998 20.18 22.99 24.305 26.982 "
    "28.085 30.974 32.06 35.45 39.948".split()
    + [40.0] * 17
    + [79.904]
    + [80.0] * 17
    + [126.904]
    + [130.0] * 47,
    float,
)


class GatedEquivariantBlock(nn.Module):
    """(x [N, F], vec [N, 3, F]) -> (x [N, out], vec [N, 3, out]), PaiNN's gated block."""

    hidden: int
    out: int
    scalar_activation: bool = False

    @nn.compact
    def __call__(self, x, vec):
        vec1 = safe_norm(nn.Dense(self.hidden, use_bias=False, name="vec1")(vec), axis=1)
        vec2 = nn.Dense(self.out, use_bias=False, name="vec2")(vec)  # [N, 3, out]
        h = nn.silu(nn.Dense(self.hidden, name="update0")(jnp.concatenate([x, vec1], -1)))
        x, gate = jnp.split(nn.Dense(2 * self.out, name="update1")(h), 2, -1)
        vec = gate[:, None, :] * vec2
        if self.scalar_activation:
            x = nn.silu(x)
        assert x.shape == (vec.shape[0], self.out) and vec.shape[1:] == (3, self.out)
        return x, vec


class _GatedOutput(nn.Module):
    """Two gated blocks F -> F/2 -> `out` channels: TorchMD-Net's output network."""

    out: int = 1

    @nn.compact
    def __call__(self, x, vec):
        f = x.shape[-1]
        x, vec = GatedEquivariantBlock(f // 2, f // 2, scalar_activation=True)(x, vec)
        return GatedEquivariantBlock(f // 2, self.out)(x, vec)


class ScalarHead(nn.Module):
    """Per-atom invariant contributions [N, out] (e.g. standardized property / atom)."""

    out: int = 1

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        scalar, _ = _GatedOutput(self.out)(x, vec)
        return scalar * graph.atom_mask[:, None]


class VectorHead(nn.Module):
    """Per-atom equivariant vectors [N, 3] (denoising: predicted noise / sigma)."""

    @nn.compact
    def __call__(self, x, vec):
        _, vector = _GatedOutput(1)(x, vec)
        return vector[..., 0]


def _centered_positions(graph: Graph) -> jax.Array:
    """[N, 3] positions relative to each molecule's centre of mass."""
    index, g = graph.graph_index, graph.n_graphs
    mass = jnp.asarray(_MASSES, jnp.float32)[graph.atomic_numbers] * graph.atom_mask  # [N]
    total = jax.ops.segment_sum(mass, index, g)  # [G]
    weighted = jax.ops.segment_sum(mass[:, None] * graph.positions, index, g)  # [G, 3]
    com = weighted / jnp.where(total > 0, total, 1.0)[:, None]
    return graph.positions - com[index]


class DipoleHead(nn.Module):
    """|mu| = |sum_i q_i (r_i - r_com) + mu_i| (D), TorchMD-Net's EquivariantDipoleMoment.

    Returns per-molecule values directly ([G, 1]) since |.| is not additive over atoms.
    """

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        charge, dipole = _GatedOutput(1)(x, vec)  # [N, 1], [N, 3, 1]
        atom = (charge * _centered_positions(graph) + dipole[..., 0]) * graph.atom_mask[:, None]
        molecule = jax.ops.segment_sum(atom, graph.graph_index, graph.n_graphs)  # [G, 3]
        return safe_norm(molecule, axis=-1, keepdims=True)


class SpatialExtentHead(nn.Module):
    """Per-atom q_i |r_i - r_com|^2 (a0^2 after scaling), TorchMD-Net's R2 output."""

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        q, _ = _GatedOutput(1)(x, vec)
        r2 = jnp.sum(_centered_positions(graph) ** 2, -1, keepdims=True)  # [N, 1]
        return q * r2 * graph.atom_mask[:, None]


HEADS = {"scalar": ScalarHead, "dipole": DipoleHead, "spatial_extent": SpatialExtentHead}
MOLECULE_LEVEL = ("dipole",)  # heads that return [G, 1] instead of per-atom values


def build_head(kind: str, **kwargs) -> nn.Module:
    """Head by name (`scalar`, `dipole`, `spatial_extent`); kwargs go to the module."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose from {sorted(HEADS)}")
    return HEADS[kind](**kwargs)
