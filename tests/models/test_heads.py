"""Heads: denoising vectors rotate with the molecule; property outputs do not change."""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from molspectra_jax.data.batching import Budget, candidate_edges, collate
from molspectra_jax.models.encoder import EquivariantTransformer
from molspectra_jax.models.pretrain_model import PretrainModel
from molspectra_jax.models.property_model import PropertyModel

ATOL = 2e-4


@pytest.fixture(scope="module")
def shard(qm9_sample):
    edges = candidate_edges(qm9_sample, 6.0)
    batch = collate(qm9_sample, edges, [np.arange(4)], Budget(1, 5, 120, 3000))
    return jax.tree.map(lambda x: jnp.asarray(x[0]), batch.graph)


def _encoder():
    return EquivariantTransformer(hidden=32, num_layers=2, num_heads=4, num_rbf=16)


def test_denoising_head_is_equivariant_and_embedding_invariant(shard):
    model = PretrainModel(_encoder())
    params = jax.jit(model.init)(jax.random.key(0), shard)
    apply = jax.jit(model.apply)

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        out = apply(params, shard.with_positions(positions.array))
        return e3nn.concatenate(
            [
                e3nn.IrrepsArray("1o", out["noise"]),
                e3nn.IrrepsArray(
                    f"{out['embedding'].shape[-1]}x0e",
                    jnp.repeat(out["embedding"][:1], shard.positions.shape[0], 0),
                ),
            ],
            axis=-1,
        )

    e3nn.utils.assert_equivariant(
        f, jax.random.key(1), e3nn.IrrepsArray("1o", shard.positions), atol=ATOL, rtol=ATOL
    )


@pytest.mark.parametrize("heads", [("scalar",), ("dipole",), ("spatial_extent",)])
def test_property_heads_are_invariant(shard, heads):
    model = PropertyModel(_encoder(), heads=heads, noise_head=True)
    params = jax.jit(model.init)(jax.random.key(0), shard)
    apply = jax.jit(model.apply)
    rotation = jnp.asarray(e3nn.rand_matrix(jax.random.key(2), ()))  # proper rotation
    shift = jnp.array([1.0, -2.0, 0.5])
    a = apply(params, shard)
    b = apply(params, shard.with_positions(shard.positions @ rotation.T + shift))
    real = np.asarray(shard.graph_mask)
    np.testing.assert_allclose(a["raw"][real], b["raw"][real], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(a["noise"] @ rotation.T, b["noise"], atol=1e-3)
