"""Output heads on the encoder's (scalars [N, F], vectors [N, 3, F]).

Per-atom heads are the gated equivariant blocks of PaiNN / TorchMD-Net
(`EquivariantScalar`, `EquivariantVectorOutput`); the molecule-level physics heads
(dipole moment, electronic spatial extent) follow TorchMD-Net's output modules.
Property heads take (x, vec, graph) and return per-atom contributions [N, 1], except the
dipole head, whose norm is not additive over atoms ([G, 1], listed in `MOLECULE_LEVEL`);
summing over a molecule is the caller's segment sum.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from molspectra_jax.elements import ATOMIC_MASSES
from molspectra_jax.graph import Graph
from molspectra_jax.models.encoder import activation, dense_init, safe_norm


class MLP(nn.Module):
    """[N, F] -> [N, out]: Dense(hidden), activation, Dense(out) (TorchMD-Net's MLP)."""

    hidden: int
    out: int
    activation: str = "silu"

    @nn.compact
    def __call__(self, x):
        h = activation(self.activation)(nn.Dense(self.hidden, kernel_init=dense_init)(x))
        return nn.Dense(self.out, kernel_init=dense_init)(h)


class GatedEquivariantBlock(nn.Module):
    """(x [N, F], vec [N, 3, F]) -> (x [N, out], vec [N, 3, out]), PaiNN's gated block.

    As TorchMD-Net builds it: the vector norms and the update MLP's hidden layer keep the
    input width F.
    """

    out: int
    activation: str = "silu"
    scalar_activation: bool = False

    @nn.compact
    def __call__(self, x, vec):
        f = x.shape[-1]
        act = activation(self.activation)
        dense = functools.partial(nn.Dense, kernel_init=dense_init)
        vec1 = safe_norm(dense(f, use_bias=False, name="vec1")(vec), axis=1)  # [N, F]
        vec2 = dense(self.out, use_bias=False, name="vec2")(vec)  # [N, 3, out]
        h = act(dense(f, name="update0")(jnp.concatenate([x, vec1], -1)))
        x, gate = jnp.split(dense(2 * self.out, name="update1")(h), 2, -1)
        vec = gate[:, None, :] * vec2
        if self.scalar_activation:
            x = act(x)
        assert x.shape == (vec.shape[0], self.out) and vec.shape[1:] == (3, self.out)
        return x, vec


class _GatedOutput(nn.Module):
    """Two gated blocks F -> F/2 -> `out` channels: TorchMD-Net's EquivariantScalar network."""

    out: int = 1
    activation: str = "silu"

    @nn.compact
    def __call__(self, x, vec):
        x, vec = GatedEquivariantBlock(x.shape[-1] // 2, self.activation, True)(x, vec)
        return GatedEquivariantBlock(self.out, self.activation)(x, vec)


class ScalarHead(nn.Module):
    """Per-atom invariant contributions [N, out] (TorchMD-Net's EquivariantScalar)."""

    out: int = 1
    activation: str = "silu"

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        scalar, _ = _GatedOutput(self.out, self.activation)(x, vec)
        return scalar * graph.atom_mask[:, None]


class MLPScalarHead(nn.Module):
    """Per-atom contributions [N, 1] from the scalars only (TorchMD-Net's Scalar)."""

    activation: str = "silu"

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        return MLP(x.shape[-1] // 2, 1, self.activation)(x) * graph.atom_mask[:, None]


class VectorHead(nn.Module):
    """Per-atom equivariant vectors [N, 3] (denoising: predicted noise / sigma;
    TorchMD-Net's EquivariantVectorOutput)."""

    activation: str = "silu"

    @nn.compact
    def __call__(self, x, vec):
        _, vector = _GatedOutput(1, self.activation)(x, vec)
        return vector[..., 0]


def _centered_positions(graph: Graph) -> jax.Array:
    """[N, 3] positions relative to each molecule's centre of mass."""
    index, g = graph.graph_index, graph.n_graphs
    mass = jnp.asarray(ATOMIC_MASSES, jnp.float32)[graph.atomic_numbers] * graph.atom_mask  # [N]
    total = jax.ops.segment_sum(mass, index, g)  # [G]
    weighted = jax.ops.segment_sum(mass[:, None] * graph.positions, index, g)  # [G, 3]
    com = weighted / jnp.where(total > 0, total, 1.0)[:, None]
    return graph.positions - com[index]


class DipoleHead(nn.Module):
    """|mu| = |sum_i q_i (r_i - r_com) + mu_i| (D), TorchMD-Net's EquivariantDipoleMoment.

    Returns per-molecule values directly ([G, 1]) since |.| is not additive over atoms.
    """

    activation: str = "silu"

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        charge, dipole = _GatedOutput(1, self.activation)(x, vec)  # [N, 1], [N, 3, 1]
        atom = (charge * _centered_positions(graph) + dipole[..., 0]) * graph.atom_mask[:, None]
        molecule = jax.ops.segment_sum(atom, graph.graph_index, graph.n_graphs)  # [G, 3]
        return safe_norm(molecule, axis=-1, keepdims=True)


class SpatialExtentHead(nn.Module):
    """Per-atom q_i |r_i - r_com|^2 (a0^2 after scaling), TorchMD-Net's
    ElectronicSpatialExtent: q_i from the scalars by an MLP."""

    activation: str = "silu"

    @nn.compact
    def __call__(self, x, vec, graph: Graph):
        q = MLP(x.shape[-1] // 2, 1, self.activation)(x)
        r2 = jnp.sum(_centered_positions(graph) ** 2, -1, keepdims=True)  # [N, 1]
        return q * r2 * graph.atom_mask[:, None]


HEADS = {
    "scalar": ScalarHead,
    "mlp_scalar": MLPScalarHead,
    "dipole": DipoleHead,
    "spatial_extent": SpatialExtentHead,
}
MOLECULE_LEVEL = ("dipole",)  # heads that return [G, 1] instead of per-atom values


def build_head(kind: str, **kwargs) -> nn.Module:
    """Head by name (`scalar`, `mlp_scalar`, `dipole`, `spatial_extent`); kwargs go to it."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose from {sorted(HEADS)}")
    return HEADS[kind](**kwargs)
