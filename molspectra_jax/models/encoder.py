"""TorchMD-Net's equivariant transformer (ET; Thölke & De Fabritiis, ICLR 2022) in JAX.

Features are scalars x [N, F] (irreps F x 0e) and vectors vec [N, 3, F] (F x 1o). The
layer math runs on those raw arrays (one dense matmul per projection, no Clebsch-Gordan
bookkeeping: ET only ever multiplies vectors by scalars and takes dot products), and
`as_irreps` wraps the result back into an `e3nn.IrrepsArray` "Fx0e + Fx1o" for the
heads' users and the equivariance tests. Edge directions are e3nn's l=1 spherical
harmonics. One encoder call sees one shard: a `Graph` with atom arrays [N] and edge
arrays [E] (the contract every encoder keeps is in `molspectra_jax/models/__init__.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from molspectra_jax.graph import Graph


def cosine_cutoff(distance: jax.Array, cutoff: float) -> jax.Array:
    """[E] -> [E]: 0.5 (cos(pi d / cutoff) + 1) inside the cutoff, 0 outside."""
    return jnp.where(distance < cutoff, 0.5 * (jnp.cos(jnp.pi * distance / cutoff) + 1.0), 0.0)


def exp_normal_rbf(distance: jax.Array, num_rbf: int, cutoff: float) -> jax.Array:
    """[E] -> [E, K] exp-normal radial basis (PhysNet/TorchMD-Net) times the cosine cutoff.

    Fixed (untrained) means and widths, TorchMD-Net's initial values.
    """
    alpha = 5.0 / cutoff
    start = math.exp(-cutoff)
    means = jnp.linspace(start, 1.0, num_rbf)  # [K]
    beta = (2.0 / num_rbf * (1.0 - start)) ** -2
    rbf = jnp.exp(-beta * (jnp.exp(-alpha * distance[:, None]) - means) ** 2)  # [E, K]
    return rbf * cosine_cutoff(distance, cutoff)[:, None]


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm with a finite gradient at 0 (padding edges have zero length)."""
    sq = jnp.sum(x**2, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


class VectorNorm(nn.Module):
    """Equivariant normalisation of vector features vec [N, 3, F].

    "rms": divide by the RMS vector length over channels (with a learned per-channel
    scale). "whitened": TorchMD-Net/Coord's EquivariantLayerNorm, centre over channels
    and multiply by C^(-1/2) of the 3x3 covariance (computed by Newton-Schulz iterations,
    not eigh, whose gradient is undefined for the degenerate covariance of planar or
    zero features). "none": identity.
    """

    kind: str = "rms"
    eps: float = 1e-5
    # Whitening divides by the smallest covariance eigenvalue: planar or nearly collinear
    # vector features make float32 round-off blow up (not equivariant to 1e-3). A ridge
    # relative to the trace caps the condition number at ~1/relative_eps.
    relative_eps: float = 1e-3

    @nn.compact
    def __call__(self, vec: jax.Array) -> jax.Array:
        if self.kind == "none":
            return vec
        weight = self.param("weight", nn.initializers.ones, (vec.shape[-1],))
        if self.kind == "rms":
            rms = jnp.sqrt(jnp.mean(jnp.sum(vec**2, axis=1), axis=-1) + self.eps)  # [N]
            return vec / rms[:, None, None] * weight
        if self.kind == "whitened":
            vec = vec - vec.mean(-1, keepdims=True)
            cov = vec @ jnp.swapaxes(vec, 1, 2) / vec.shape[-1]  # [N, 3, 3]
            ridge = self.eps + self.relative_eps * jnp.trace(cov, axis1=1, axis2=2) / 3  # [N]
            cov = cov + ridge[:, None, None] * jnp.eye(3)
            return inverse_sqrt_spd(cov) @ vec * weight
        raise ValueError(f"unknown vector norm {self.kind!r}; choose none, rms, whitened")


def inverse_sqrt_spd(matrix: jax.Array, iterations: int = 24) -> jax.Array:
    """[..., 3, 3] SPD -> M^(-1/2) by coupled Newton-Schulz iteration (rotation-covariant)."""
    scale = jnp.trace(matrix, axis1=-2, axis2=-1)[..., None, None]  # eigenvalues now in (0, 1]
    y = matrix / scale
    z = jnp.zeros_like(matrix) + jnp.eye(3)  # derived from matrix: same shard_map type

    def newton_schulz(_, yz):
        y, z = yz
        t = 0.5 * (3.0 * jnp.eye(3) - z @ y)
        return y @ t, t @ z

    # A loop, not unrolled: 24 unrolled iterations per layer dominated compile time.
    _, z = jax.lax.fori_loop(0, iterations, newton_schulz, (y, z))
    return z / jnp.sqrt(scale)


class NeighborEmbedding(nn.Module):
    """x_i <- W [x_i, sum_j C(d_ij) W_r(rbf_ij) * E(z_j)], TorchMD-Net's neighbour embedding."""

    hidden: int
    max_z: int

    @nn.compact
    def __call__(self, x, atomic_numbers, rbf, edge_weight, senders, receivers):
        n = x.shape[0]
        filters = nn.Dense(self.hidden, name="distance_proj")(rbf) * edge_weight[:, None]  # [E, F]
        neighbors = nn.Embed(self.max_z, self.hidden, name="embedding")(atomic_numbers)  # [N, F]
        messages = filters * neighbors[senders]  # [E, F]
        aggregated = jax.ops.segment_sum(messages, receivers, num_segments=n)  # [N, F]
        return nn.Dense(self.hidden, name="combine")(jnp.concatenate([x, aggregated], -1))


class EquivariantAttention(nn.Module):
    """One ET layer: multi-head attention with SiLU-gated (not softmax) scores."""

    hidden: int
    num_heads: int
    activation: Callable = nn.silu
    vector_norm: str = "rms"

    @nn.compact
    def __call__(self, x, vec, rbf, unit, edge_weight, senders, receivers):
        n, f, h = x.shape[0], self.hidden, self.num_heads
        d = f // h
        e = senders.shape[0]
        x = nn.LayerNorm(name="layernorm")(x)
        vec = VectorNorm(self.vector_norm, name="vector_norm")(vec)

        q = nn.Dense(f, name="q")(x).reshape(n, h, d)
        k = nn.Dense(f, name="k")(x).reshape(n, h, d)
        v = nn.Dense(3 * f, name="v")(x).reshape(n, h, 3 * d)
        vec1, vec2, vec3 = jnp.split(nn.Dense(3 * f, use_bias=False, name="vec_proj")(vec), 3, -1)
        vec_dot = jnp.sum(vec1 * vec2, axis=1)  # [N, F]

        dk = self.activation(nn.Dense(f, name="dk")(rbf)).reshape(e, h, d)
        dv = self.activation(nn.Dense(3 * f, name="dv")(rbf)).reshape(e, h, 3 * d)

        scores = jnp.sum(q[receivers] * k[senders] * dk, axis=-1)  # [E, H]
        # edge_weight is the cosine cutoff, already 0 for padding and out-of-cutoff edges.
        attention = self.activation(scores) * edge_weight[:, None]  # [E, H]
        values = v[senders] * dv  # [E, H, 3D]
        x_msg, v1, v2 = jnp.split(values, 3, axis=-1)  # [E, H, D] each
        x_msg = (x_msg * attention[..., None]).reshape(e, f)
        v1, v2 = v1.reshape(e, f), v2.reshape(e, f)
        vec_msg = vec[senders] * v1[:, None, :] + v2[:, None, :] * unit[:, :, None]  # [E, 3, F]
        vec_msg = vec_msg * (edge_weight > 0)[:, None, None]

        x_agg = jax.ops.segment_sum(x_msg, receivers, num_segments=n)  # [N, F]
        vec_agg = jax.ops.segment_sum(vec_msg, receivers, num_segments=n)  # [N, 3, F]
        o1, o2, o3 = jnp.split(nn.Dense(3 * f, name="o")(x_agg), 3, -1)
        dx = vec_dot * o2 + o3
        dvec = vec3 * o1[:, None, :] + vec_agg
        assert dx.shape == (n, f) and dvec.shape == (n, 3, f)
        return dx, dvec


class EquivariantTransformer(nn.Module):
    """ET encoder: (atoms, candidate edges) -> scalars [N, F] and vectors [N, 3, F].

    Paper setting (MolSpectra/Coord on QM9): hidden 256, 8 layers, 8 heads, 64 RBFs,
    cutoff 5 Å. Padding atoms come out as zeros.
    """

    hidden: int = 256
    num_layers: int = 8
    num_heads: int = 8
    num_rbf: int = 64
    cutoff: float = 5.0
    max_z: int = 100
    activation: str = "silu"
    neighbor_embedding: bool = True
    vector_norm: str = "rms"

    @nn.compact
    def __call__(self, graph: Graph) -> tuple[jax.Array, jax.Array]:
        """One shard's graph -> (scalars [N, F], vectors [N, 3, F]); zeros on padding atoms."""
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden {self.hidden} not divisible by {self.num_heads} heads")
        act = {"silu": nn.silu, "gelu": nn.gelu, "tanh": jnp.tanh}[self.activation]
        atomic_numbers, senders, receivers = graph.atomic_numbers, graph.senders, graph.receivers
        n, e = graph.n_atoms, senders.shape[0]
        assert graph.positions.shape == (n, 3) and receivers.shape == graph.edge_mask.shape == (e,)
        edge_vec = graph.positions[senders] - graph.positions[receivers]  # [E, 3]
        distance = safe_norm(edge_vec)  # [E]
        # Candidate edges are cut to the true cutoff here, at the positions the model sees.
        real = graph.edge_mask & (distance < self.cutoff) & (distance > 0)
        distance = jnp.where(real, distance, self.cutoff)  # padding -> harmless value
        edge_weight = cosine_cutoff(distance, self.cutoff) * real  # [E]
        rbf = exp_normal_rbf(distance, self.num_rbf, self.cutoff) * real[:, None]  # [E, K]
        unit = (
            e3nn.spherical_harmonics(
                "1o", jnp.where(real[:, None], edge_vec, 1.0), normalize=True, normalization="norm"
            ).array
            * real[:, None]
        )  # [E, 3]
        assert rbf.shape == (e, self.num_rbf) and unit.shape == (e, 3)

        x = nn.Embed(self.max_z, self.hidden, name="embedding")(atomic_numbers)  # [N, F]
        if self.neighbor_embedding:
            x = NeighborEmbedding(self.hidden, self.max_z, name="neighbor_embedding")(
                x, atomic_numbers, rbf, edge_weight, senders, receivers
            )
        vec = jnp.zeros((n, 3, self.hidden), x.dtype)
        for i in range(self.num_layers):
            dx, dvec = EquivariantAttention(
                self.hidden, self.num_heads, act, self.vector_norm, name=f"layer_{i}"
            )(x, vec, rbf, unit, edge_weight, senders, receivers)
            x, vec = x + dx, vec + dvec
        x = nn.LayerNorm(name="out_norm")(x)
        mask = graph.atom_mask[:, None]
        assert x.shape == (n, self.hidden) and vec.shape == (n, 3, self.hidden)
        return x * mask, vec * mask[:, None]


def as_irreps(scalars: jax.Array, vectors: jax.Array) -> e3nn.IrrepsArray:
    """(x [N, F], vec [N, 3, F]) -> IrrepsArray "Fx0e + Fx1o" [N, 4F] (e3nn's mul-major)."""
    f = scalars.shape[-1]
    vec = jnp.swapaxes(vectors, -1, -2).reshape(*vectors.shape[:-2], 3 * f)  # [N, F*3]
    return e3nn.concatenate(
        [e3nn.IrrepsArray(f"{f}x0e", scalars), e3nn.IrrepsArray(f"{f}x1o", vec)], axis=-1
    )
