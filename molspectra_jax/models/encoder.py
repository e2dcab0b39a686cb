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

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from molspectra_jax.graph import Graph


def shifted_softplus(x: jax.Array) -> jax.Array:
    """softplus(x) - log 2 (SchNet's "ssp")."""
    return jax.nn.softplus(x) - math.log(2.0)


# TorchMD-Net's `act_class_mapping` names (its "swish" has beta 1: SiLU) plus GELU.
ACTIVATIONS: dict[str, Callable] = {
    "silu": nn.silu,
    "swish": nn.silu,
    "ssp": shifted_softplus,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "gelu": lambda x: nn.gelu(x, approximate=False),
}


# `dtype` names -> the compute dtype of the dense layers (parameters stay float32);
# "float32" casts nothing, so float64 inputs and parameters (jax x64 tests) stay float64.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def activation(name: str) -> Callable:
    """Activation by TorchMD-Net's name; a clear error for an unknown one."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# Linear layers as TorchMD-Net initialises them (xavier-uniform weights, zero bias) and
# its embeddings (N(0, 1)).
dense_init = nn.initializers.xavier_uniform()
embed_init = nn.initializers.normal(1.0)


def cosine_cutoff(distance: jax.Array, upper: float, lower: float = 0.0) -> jax.Array:
    """[E] -> [E] TorchMD-Net's CosineCutoff: 1 at `lower` (or 0 Å) falling to 0 at `upper`.

    With lower = 0: 0.5 (cos(pi d / upper) + 1) for d < upper. With lower > 0:
    0.5 (cos(pi (2 (d - lower) / (upper - lower) + 1)) + 1) for lower < d < upper.
    """
    if lower > 0:
        phase = math.pi * (2.0 * (distance - lower) / (upper - lower) + 1.0)
        return jnp.where((distance > lower) & (distance < upper), 0.5 * (jnp.cos(phase) + 1), 0.0)
    return jnp.where(distance < upper, 0.5 * (jnp.cos(jnp.pi * distance / upper) + 1.0), 0.0)


class RadialBasis(nn.Module):
    """[...] distances (Å) -> [..., K] TorchMD-Net radial basis, parameters trainable or fixed.

    "expnorm" (PhysNet): exp(-beta (exp(alpha (lower - d)) - mu)^2) times the cosine
    cutoff (0 to upper), alpha = 5 / (upper - lower). "gauss": exp(coeff (d - offset)^2)
    with offsets evenly spaced from lower to upper, no cutoff factor.
    """

    kind: str
    num_rbf: int
    lower: float
    upper: float
    trainable: bool

    def _values(self, name: str, init: np.ndarray) -> jax.Array:
        if self.trainable:
            return self.param(name, lambda _: jnp.asarray(init, jnp.float32))
        return jnp.asarray(init, jnp.float32)

    @nn.compact
    def __call__(self, distance: jax.Array) -> jax.Array:
        k, lower, upper = self.num_rbf, self.lower, self.upper
        d = distance[..., None]
        if self.kind == "expnorm":
            start = np.float32(np.exp(np.float32(lower - upper)))
            means = self._values("means", np.linspace(start, 1.0, k, dtype=np.float32))
            beta = np.float32((2.0 / k * (1.0 - start)) ** -2)
            betas = self._values("betas", np.full(k, beta, np.float32))
            alpha = 5.0 / (upper - lower)
            smear = jnp.exp(-betas * (jnp.exp(alpha * (lower - d)) - means) ** 2)
            return smear * cosine_cutoff(distance, upper)[..., None]
        if self.kind == "gauss":
            offsets = np.linspace(lower, upper, k, dtype=np.float32)
            coeff = self._values("coeff", np.float32(-0.5 / (offsets[1] - offsets[0]) ** 2))
            offsets = self._values("offset", offsets)
            return jnp.exp(coeff * (d - offsets) ** 2)
        raise ValueError(f"unknown rbf {self.kind!r}; choose expnorm or gauss")


class SparsePairs(NamedTuple):
    """Pairs as edge lists: pair arrays are [E, ...], sender j and receiver i index atoms;
    edge e + E/2 mirrors edge e (`Graph`), so features of the distance alone are [E/2, ...].
    """

    senders: jax.Array  # [E] int32
    receivers: jax.Array  # [E] int32
    n_atoms: int

    def source(self, a: jax.Array) -> jax.Array:
        """[N, ...] atom array -> [E, ...] its value at each pair's sender j."""
        return a[self.senders]

    def target(self, a: jax.Array) -> jax.Array:
        """[N, ...] -> [E, ...] at each pair's receiver i."""
        return a[self.receivers]

    def aggregate(self, m: jax.Array) -> jax.Array:
        """[E, ...] pair messages -> [N, ...] summed over the senders of each receiver."""
        return jax.ops.segment_sum(m, self.receivers, num_segments=self.n_atoms)

    def mirror(self, a: jax.Array) -> jax.Array:
        """[E/2, ...] features of the first half's pairs -> [E, ...] of both halves."""
        return jnp.concatenate([a, a], axis=0)


class DensePairs(NamedTuple):
    """Pairs as per-molecule blocks: atoms [G * n] hold G molecules of n slots each, pair
    arrays are [G, n_i, n_j, ...]. Gathers are broadcasts and sums run over j (no scatter).
    """

    n_graphs: int
    n_slots: int

    def source(self, a: jax.Array) -> jax.Array:
        """[G n, ...] -> [G, 1, n, ...], broadcasting over receivers i."""
        return a.reshape(self.n_graphs, 1, self.n_slots, *a.shape[1:])

    def target(self, a: jax.Array) -> jax.Array:
        """[G n, ...] -> [G, n, 1, ...], broadcasting over senders j."""
        return a.reshape(self.n_graphs, self.n_slots, 1, *a.shape[1:])

    def aggregate(self, m: jax.Array) -> jax.Array:
        """[G, n, n, ...] -> [G n, ...] summed over senders j."""
        return m.sum(2).reshape(self.n_graphs * self.n_slots, *m.shape[3:])

    def mirror(self, a: jax.Array) -> jax.Array:
        """Pair features are already [G, n, n, ...] (both orders of every pair)."""
        return a


LAYOUTS = ("sparse", "dense")


def _nearest_neighbors(
    real: jax.Array, distance: jax.Array, receivers: jax.Array, n: int, k: int
) -> jax.Array:
    """[E] mask `real` keeping at most the `k` nearest real edges of each receiver.

    Skipped (a `lax.cond`, no sort) when no atom has more than `k` neighbours.
    """
    receivers = jnp.asarray(receivers)

    def cap(real):
        key = jnp.where(real, distance, jnp.inf)
        order = jnp.lexsort((key, receivers))  # by receiver, then distance
        sorted_receivers = receivers[order]
        position = jnp.arange(receivers.shape[0])
        first = jax.ops.segment_min(position, sorted_receivers, num_segments=n)
        rank = jnp.zeros_like(position).at[order].set(position - first[sorted_receivers])
        return real & (rank < k)

    count = jax.ops.segment_sum(real.astype(jnp.int32), receivers, num_segments=n)
    return jax.lax.cond(jnp.any(count > k), cap, lambda r: r, real)


def _nearest_neighbors_dense(real: jax.Array, distance: jax.Array, k: int) -> jax.Array:
    """[G, n, n] mask `real` keeping at most the `k` nearest senders j of each receiver i
    (ties to the lower j, as the sparse layout's row-major edges). Nothing to do, and
    nothing traced, when a molecule block has at most k + 1 slots."""
    if real.shape[-1] <= k + 1:
        return real

    def cap(real):
        key = jnp.where(real, distance, jnp.inf)
        rank = jnp.argsort(jnp.argsort(key, axis=-1, stable=True), axis=-1, stable=True)
        return real & (rank < k)

    return jax.lax.cond(jnp.any(real.sum(-1) > k), cap, lambda r: r, real)


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm with a finite gradient at 0 (padding edges have zero length)."""
    sq = jnp.sum(x**2, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


class EquivariantLayerNorm(nn.Module):
    """The Coord/MolSpectra fork's "whitened" EquivariantLayerNorm of vectors [N, 3, F].

    Centre over channels, C = X X^T / F (3x3), then X <- (C + ridge)^(-1/2) X times a
    learned per-channel weight. `regularizer` "fork" is the fork's exact formula
    (ridge = eps diag(2, 3, 4): its C + eps diag(1, 2, 3) inverted as 1 / sqrt(s + eps)).
    It whitens directions of tiny variance up to 1/sqrt(eps) ~ 300x, so the float32
    round-off of planar or linear molecules' out-of-plane components comes out O(1) and
    rotation-dependent (in the fork too: its features are float32). "ridge" (ours)
    adds (eps + 1e-3 tr(C) / 3) I instead, capping that gain at ~50x: equivariant to
    float32 precision. The inverse square root is a Newton-Schulz iteration (smooth
    gradients where eigenvalues coincide, e.g. all-zero padding vectors), in float64
    when `jax_enable_x64` is on (as the fork), else float32: then the covariance of
    ill-conditioned vectors carries ~1e-7 / (smallest eigenvalue / trace) relative error,
    up to ~1e-3 against the fork.
    """

    regularizer: str = "ridge"
    eps: float = 1e-5
    relative_eps: float = 1e-3

    @nn.compact
    def __call__(self, vec: jax.Array) -> jax.Array:
        weight = self.param("weight", nn.initializers.ones, (vec.shape[-1],))
        dtype = vec.dtype
        if jax.config.jax_enable_x64:  # the fork's float64 (when JAX allows it)
            vec = vec.astype(jnp.float64)
        vec = vec - vec.mean(-1, keepdims=True)
        cov = vec @ jnp.swapaxes(vec, 1, 2) / vec.shape[-1]  # [N, 3, 3]
        if self.regularizer == "fork":
            cov = cov + self.eps * jnp.diag(jnp.array([2.0, 3.0, 4.0], vec.dtype))
        elif self.regularizer == "ridge":
            ridge = self.eps + self.relative_eps * jnp.trace(cov, axis1=1, axis2=2) / 3  # [N]
            cov = cov + ridge[:, None, None] * jnp.eye(3, dtype=vec.dtype)
        else:
            raise ValueError(f"unknown whitening {self.regularizer!r}; choose ridge or fork")
        return (inverse_sqrt_spd(cov) @ vec).astype(dtype) * weight


def inverse_sqrt_spd(matrix: jax.Array, iterations: int = 32) -> jax.Array:
    """[..., 3, 3] SPD -> M^(-1/2) by coupled Newton-Schulz iteration (rotation-covariant)."""
    scale = jnp.trace(matrix, axis1=-2, axis2=-1)[..., None, None]  # eigenvalues now in (0, 1]
    y = matrix / scale
    z = jnp.zeros_like(matrix) + jnp.eye(3)  # derived from matrix: same shard_map type

    def newton_schulz(_, yz):
        y, z = yz
        t = 0.5 * (3.0 * jnp.eye(3) - z @ y)
        return y @ t, t @ z

    # A loop, not unrolled: unrolled iterations in every layer dominated compile time.
    _, z = jax.lax.fori_loop(0, iterations, newton_schulz, (y, z))
    return z / jnp.sqrt(scale)


class NeighborEmbedding(nn.Module):
    """x_i <- W [x_i, sum_j C(d_ij) W_r(rbf_ij) * E(z_j)], TorchMD-Net's neighbour embedding
    (self-pairs excluded)."""

    hidden: int
    max_z: int
    dtype: Any = None  # of the dense layers (None: that of their inputs and parameters)

    @nn.compact
    def __call__(self, x, atomic_numbers, rbf, edge_weight, pairs):
        dense = functools.partial(nn.Dense, kernel_init=dense_init, dtype=self.dtype)
        distance_proj = dense(self.hidden, name="distance_proj")
        filters = pairs.mirror(distance_proj(rbf)) * edge_weight[..., None]  # [P..., F]
        embed = nn.Embed(self.max_z, self.hidden, embedding_init=embed_init, name="embedding")
        messages = filters * pairs.source(embed(atomic_numbers))  # [P..., F]
        aggregated = pairs.aggregate(messages)  # [N, F]
        combine = dense(self.hidden, name="combine")
        return combine(jnp.concatenate([x, aggregated], -1))


class EquivariantAttention(nn.Module):
    """One ET layer: multi-head attention with activated (not softmax) scores.

    `distance_influence` says whether the radial filters scale the keys ("keys"), the
    values ("values"), both or neither. `self_pair` = (basis [K], cutoff weight) at
    distance 0 adds TorchMD-Net's self-pair to every atom's neighbourhood: its score
    q_i.k_i, its values, and no direction term. `vector_cutoff` scales the values, not the scores,
    by the cutoff (TorchMD-Net's smooth variant).
    """

    hidden: int
    num_heads: int
    activation: Callable = nn.silu
    attn_activation: Callable = nn.silu
    distance_influence: str = "both"
    vector_cutoff: bool = False
    dtype: Any = None  # of the dense layers (None: that of their inputs and parameters)

    @nn.compact
    def __call__(
        self, x, vec, rbf, unit, edge_weight, real, pairs, self_pair=None, zero_vectors=False
    ):
        """`zero_vectors`: `vec` is known to be all zeros (the first layer), so the
        per-pair vec_j terms, exactly zero, are not computed."""
        n, f, h = x.shape[0], self.hidden, self.num_heads
        d = f // h
        dense = functools.partial(nn.Dense, kernel_init=dense_init, dtype=self.dtype)
        x = nn.LayerNorm(epsilon=1e-5, name="layernorm")(x)

        q = dense(f, name="q")(x).reshape(n, h, d)
        k = dense(f, name="k")(x).reshape(n, h, d)
        v = dense(3 * f, name="v")(x).reshape(n, h, 3 * d)
        vec1, vec2, vec3 = jnp.split(dense(3 * f, use_bias=False, name="vec_proj")(vec), 3, -1)
        vec_dot = jnp.sum(vec1 * vec2, axis=1)  # [N, F]

        keys = self.distance_influence in ("keys", "both")
        values = self.distance_influence in ("values", "both")
        dk_proj = dense(f, name="dk") if keys else None
        dv_proj = dense(3 * f, name="dv") if values else None

        def messages(q_i, k_j, v_j, vec_j, rbf, unit, weight, real, mirror):
            """Per-pair scalar [P..., F] and vector [P..., 3, F] messages j -> i (P... the
            pair shape of `weight`; atom inputs broadcast to it; `mirror` takes what `rbf`
            gives to it). Pairs not `real` (None: all are) carry nothing: their weight and
            `unit` are 0, and their vec_j factor is masked here, at [P..., F]."""
            pair = weight.shape
            scores = q_i * k_j
            if keys:
                scores = scores * mirror(self.activation(dk_proj(rbf))).reshape(*pair, h, d)
            attention = self.attn_activation(jnp.sum(scores, -1))  # [P..., H]
            # weight is the cosine cutoff, 0 for padding and out-of-cutoff pairs.
            if self.vector_cutoff:
                v_j = v_j * weight[..., None, None]
            else:
                attention = attention * weight[..., None]
            if values:
                v_j = v_j * mirror(self.activation(dv_proj(rbf))).reshape(*pair, h, 3 * d)
            x_msg, v1, v2 = jnp.split(v_j, 3, axis=-1)  # [P..., H, D] each
            x_msg = x_msg * attention[..., None]
            x_msg, v1, v2 = (a.reshape(*a.shape[:-2], f) for a in (x_msg, v1, v2))
            vec_msg = v2[..., None, :] * unit[..., :, None]  # [P..., 3, F]
            if vec_j is not None:
                if real is not None:
                    v1 = v1 * real[..., None]
                vec_msg = vec_msg + vec_j * v1[..., None, :]
            return x_msg, vec_msg

        x_msg, vec_msg = messages(
            pairs.target(q),
            pairs.source(k),
            pairs.source(v),
            None if zero_vectors else pairs.source(vec),
            rbf,
            unit,
            edge_weight,
            real,
            pairs.mirror,
        )
        x_agg = pairs.aggregate(x_msg)  # [N, F]
        vec_agg = pairs.aggregate(vec_msg)  # [N, 3, F]
        if self_pair is not None:
            rbf0 = jnp.broadcast_to(self_pair[0], (n, self_pair[0].shape[-1]))
            weight0 = jnp.full((n,), self_pair[1], x.dtype)
            no_mirror = lambda a: a  # noqa: E731 (per-atom features already)
            vec_i = None if zero_vectors else vec
            x_self, vec_self = messages(
                q, k, v, vec_i, rbf0, jnp.zeros((n, 3)), weight0, None, no_mirror
            )
            x_agg, vec_agg = x_agg + x_self, vec_agg + vec_self
        o1, o2, o3 = jnp.split(dense(3 * f, name="o")(x_agg), 3, -1)
        dx = vec_dot * o2 + o3
        dvec = vec3 * o1[:, None, :] + vec_agg
        assert dx.shape == (n, f) and dvec.shape == (n, 3, f)
        return dx, dvec


class PairGeometry(NamedTuple):
    """What the layers need of the pairs, in one layout (P... = [E] or [G, n, n])."""

    pairs: SparsePairs | DensePairs
    rbf: jax.Array  # [P..., K] radial basis (sparse: of the first half [E/2, K]), 0 off pairs
    unit: jax.Array  # [P..., 3] unit vectors receiver -> sender, 0 off real pairs
    weight: jax.Array  # [P...] attention cutoff weights (dense: self-pairs included)
    real: jax.Array  # [P...] bool, pairs that carry messages (dense: self-pairs included)
    neighbor_weight: jax.Array  # [P...] cutoff weights of neighbours only (no self-pairs)
    self_pair: tuple | None  # sparse: (basis [K], weight) of every atom's self-pair


def _pair_features(edge_vec, candidate, upper, lower, cap):
    """(distance, unit, weight, real) of pairs [P..., 3] cut to [lower, upper) Å; `cap`
    (real, distance) -> real keeps the nearest neighbours, None keeps all."""
    distance = safe_norm(edge_vec)  # [P...]
    real = candidate & (distance < upper) & (distance >= lower) & (distance > 0)
    if cap is not None:
        real = cap(real, distance)
    weight = cosine_cutoff(jnp.where(real, distance, upper), upper, lower) * real
    safe = jnp.where(real[..., None], edge_vec, 1.0)
    sh = e3nn.spherical_harmonics("1o", safe, normalize=True, normalization="norm").array
    return distance, sh * real[..., None], weight, real


def _basis(radial, distance, real, upper):
    """[P..., K] radial basis of the pairs `real`, 0 elsewhere (at the cutoff meanwhile)."""
    return radial(jnp.where(real, distance, upper)) * real[..., None]


def sparse_geometry(graph, radial, upper, lower, max_neighbors, self_loops) -> PairGeometry:
    """Pairs from the graph's candidate edges [E]; the self-pair apart (every atom's)."""
    n, senders, receivers = graph.n_atoms, graph.senders, graph.receivers
    assert graph.positions.shape == (n, 3) and receivers.shape == graph.edge_mask.shape
    edge_vec = graph.positions[senders] - graph.positions[receivers]  # [E, 3]
    # Candidate edges are cut to the true cutoff here, at the positions the model sees.
    cap = None
    if max_neighbors > 0:
        cap = functools.partial(_nearest_neighbors, receivers=receivers, n=n, k=max_neighbors)
    distance, unit, weight, real = _pair_features(edge_vec, graph.edge_mask, upper, lower, cap)
    # The basis once per pair: edge e + E/2 mirrors edge e (same distance; the neighbour
    # cap may keep one direction only, the other's messages are masked anyway).
    half = senders.shape[0] // 2
    rbf = _basis(radial, distance[:half], real[:half] | real[half:], upper)  # [E/2, K]
    self_pair = None
    if self_loops:
        zero = jnp.zeros((1,), rbf.dtype)
        self_pair = (radial(zero)[0], cosine_cutoff(zero, upper, lower)[0])
    pairs = SparsePairs(senders, receivers, n)
    return PairGeometry(pairs, rbf, unit, weight, real, weight, self_pair)


def dense_geometry(graph, radial, upper, lower, max_neighbors, self_loops) -> PairGeometry:
    """Pairs of every two atom slots of a molecule block: the graph holds G molecules of
    n = N / G slots each (`batching.collate`, `Budget.slots`); its edges are not read. The
    self-pair is the block's diagonal (distance 0, no direction)."""
    g = graph.n_graphs
    n = graph.n_atoms // g
    if n * g != graph.n_atoms:
        raise ValueError(f"dense layout: {graph.n_atoms} atom slots are not {g} blocks")
    positions = graph.positions.reshape(g, n, 3)
    mask = graph.atom_mask.reshape(g, n)
    edge_vec = positions[:, None, :, :] - positions[:, :, None, :]  # [G, i, j, 3]: r_j - r_i
    both = mask[:, :, None] & mask[:, None, :]  # [G, n, n]
    cap = None
    if max_neighbors > 0:
        cap = functools.partial(_nearest_neighbors_dense, k=max_neighbors)
    distance, unit, weight, real = _pair_features(edge_vec, both, upper, lower, cap)
    rbf = _basis(radial, distance, real, upper)  # [G, n, n, K]
    neighbor_weight = weight
    if self_loops:
        diagonal = jnp.eye(n, dtype=bool) & both  # real atoms' self-pairs
        zero = jnp.zeros((1,), rbf.dtype)
        rbf = rbf + diagonal[..., None] * radial(zero)[0]
        weight = weight + diagonal * cosine_cutoff(zero, upper, lower)[0]
        real = real | diagonal
    return PairGeometry(DensePairs(g, n), rbf, unit, weight, real, neighbor_weight, None)


class EquivariantTransformer(nn.Module):
    """ET encoder: (atoms, candidate edges) -> scalars [N, F] and vectors [N, 3, F].

    Paper setting (MolSpectra/Coord on QM9): hidden 256, 8 layers, 8 heads, 64 RBFs,
    cutoff 5 Å. The other fields are TorchMD-Net hyper-parameters under their names
    there, defaulting to the reference's values (docs/faithfulness.md): `cutoff_lower`,
    `rbf` "expnorm" | "gauss" (its `rbf_type`), `trainable_rbf`, `activation` and
    `attn_activation` (names in ACTIVATIONS), `distance_influence` "keys" | "values" |
    "both" | "none", `self_loops` (every atom attends to itself: its `loop=True`),
    `max_num_neighbors` (at most this many nearest neighbours per atom besides itself;
    0 = no cap) and `vector_cutoff`. Two options are the MolSpectra/Coord fork's:
    `layernorm_on_vec` "whitened" whitens the output vectors (EquivariantLayerNorm;
    "none" = upstream), and `layer_norms` (the fork's QM9 setting, off for MD17:
    `use_dataset_md17`) normalizes the residual stream after every layer, x by a
    LayerNorm and vec by an EquivariantLayerNorm; `whitening` "fork" computes those
    exactly as the fork (imported weights), "ridge" keeps them rotation-equivariant in
    float32 (EquivariantLayerNorm). Padding atoms come out as zeros.
    """

    hidden: int = 256
    num_layers: int = 8
    num_heads: int = 8
    num_rbf: int = 64
    cutoff: float = 5.0
    max_z: int = 100
    activation: str = "silu"
    neighbor_embedding: bool = True
    layernorm_on_vec: str = "none"
    layer_norms: bool = False
    whitening: str = "ridge"
    cutoff_lower: float = 0.0
    rbf: str = "expnorm"
    trainable_rbf: bool = False
    attn_activation: str = "silu"
    distance_influence: str = "both"
    self_loops: bool = True
    max_num_neighbors: int = 32
    vector_cutoff: bool = False
    dtype: str = "float32"
    layout: str = "sparse"

    @nn.compact
    def __call__(self, graph: Graph) -> tuple[jax.Array, jax.Array]:
        """One shard's graph -> (scalars [N, F], vectors [N, 3, F]); zeros on padding atoms."""
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden {self.hidden} not divisible by {self.num_heads} heads")
        if self.layernorm_on_vec not in ("none", "whitened"):
            raise ValueError(
                f"unknown layernorm_on_vec {self.layernorm_on_vec!r}; choose none or whitened"
            )
        if self.distance_influence not in ("keys", "values", "both", "none"):
            raise ValueError(
                f"unknown distance_influence {self.distance_influence!r}; "
                "choose keys, values, both or none"
            )
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {list(COMPUTE_DTYPES)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose from {list(LAYOUTS)}")
        compute = COMPUTE_DTYPES[self.dtype]
        act, attn_act = activation(self.activation), activation(self.attn_activation)
        n = graph.n_atoms
        radial = RadialBasis(
            self.rbf, self.num_rbf, self.cutoff_lower, self.cutoff, self.trainable_rbf, name="rbf"
        )
        geometry = sparse_geometry if self.layout == "sparse" else dense_geometry
        pairs, rbf, unit, weight, real, neighbor_weight, self_pair = geometry(
            graph, radial, self.cutoff, self.cutoff_lower, self.max_num_neighbors, self.self_loops
        )

        embed = nn.Embed(self.max_z, self.hidden, embedding_init=embed_init, name="embedding")
        x = embed(graph.atomic_numbers)  # [N, F]
        if self.neighbor_embedding:
            x = NeighborEmbedding(self.hidden, self.max_z, compute, name="neighbor_embedding")(
                x, graph.atomic_numbers, rbf, neighbor_weight, pairs
            )
        vec = jnp.zeros((n, 3, self.hidden), x.dtype)
        for i in range(self.num_layers):
            layer = EquivariantAttention(
                self.hidden,
                self.num_heads,
                act,
                attn_act,
                self.distance_influence,
                self.vector_cutoff,
                compute,
                name=f"layer_{i}",
            )
            dx, dvec = layer(x, vec, rbf, unit, weight, real, pairs, self_pair, i == 0)
            x, vec = x + dx, vec + dvec
            if self.layer_norms:
                x = nn.LayerNorm(epsilon=1e-5, name=f"x_norm_{i}")(x)
                vec = EquivariantLayerNorm(self.whitening, name=f"vec_norm_{i}")(vec)
        x = nn.LayerNorm(epsilon=1e-5, name="out_norm")(x)
        if self.layernorm_on_vec == "whitened":
            vec = EquivariantLayerNorm(self.whitening, name="out_norm_vec")(vec)
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
