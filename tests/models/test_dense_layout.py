"""The ET's dense layout (per-molecule pair blocks): the sparse layout's outputs on real
molecules for every option, and the same physics (equivariance, padding, gradients)."""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from molspectra_jax.data.batching import Budget, candidate_edges, collate
from molspectra_jax.graph import Graph
from molspectra_jax.models.encoder import EquivariantTransformer, as_irreps

ROWS = [0, 1, 2, 3, 5]
ATOL = 2e-5  # the same float32 math, summed in another order

OPTIONS = {
    "default": dict(),
    "whitened_out": dict(layernorm_on_vec="whitened"),
    "gauss_trainable": dict(rbf="gauss", trainable_rbf=True, activation="ssp"),
    "keys_only_lower": dict(distance_influence="keys", cutoff_lower=0.8, attn_activation="tanh"),
    "values_no_loops": dict(distance_influence="values", self_loops=False, vector_cutoff=True),
    "no_influence": dict(max_num_neighbors=0, distance_influence="none", activation="mish"),
    "binding_cap": dict(max_num_neighbors=5),
}


def sparse_shard(dataset, rows) -> Graph:
    edges = candidate_edges(dataset, 6.0)
    n = int(dataset.n_atoms[rows].sum())
    budget = Budget(1, len(rows) + 1, n + 3, int(edges.n_edges[rows].sum()) + 6)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), collate(dataset, edges, [rows], budget).graph)


def dense_shard(dataset, rows, slots=None, graphs=None) -> Graph:
    slots = slots or int(dataset.n_atoms[rows].max()) + 2  # padding atoms in every block
    graphs = graphs or len(rows) + 1  # and a padding block
    budget = Budget(1, graphs, graphs * slots, 2, slots)
    batch = collate(dataset, candidate_edges(dataset, 6.0), [rows], budget)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), batch.graph)


def real_atoms(shard: Graph, out):
    """Outputs of the real atoms, in molecule order (the order of both layouts)."""
    mask = np.asarray(shard.atom_mask)
    return [np.asarray(o)[mask] for o in out]


def _model(options, layout):
    return EquivariantTransformer(
        hidden=16, num_layers=2, num_heads=2, num_rbf=8, layout=layout, **OPTIONS[options]
    )


@pytest.mark.parametrize("options", sorted(OPTIONS))
def test_dense_gives_the_sparse_outputs_with_the_same_parameters(qm9_sample, options):
    sparse, dense = sparse_shard(qm9_sample, ROWS), dense_shard(qm9_sample, ROWS)
    params = _model(options, "sparse").init(jax.random.key(0), sparse)
    x_s, v_s = real_atoms(sparse, _model(options, "sparse").apply(params, sparse))
    x_d, v_d = real_atoms(dense, _model(options, "dense").apply(params, dense))
    np.testing.assert_allclose(x_d, x_s, atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(v_d, v_s, atol=ATOL, rtol=1e-4)  # whitening: relative
    # Parameters are layout-free: dense initialises the same tree
    dense_params = _model(options, "dense").init(jax.random.key(0), dense)
    assert jax.tree.structure(dense_params) == jax.tree.structure(params)


def test_dense_gives_the_sparse_outputs_with_per_layer_norms_in_float64(qm9_sample):
    """The fork's per-layer whitening amplifies float32 round-off (~1e-2 in some vector
    components, in either layout: test_encoder.py); in float64 the layouts agree."""
    sparse, dense = sparse_shard(qm9_sample, ROWS), dense_shard(qm9_sample, ROWS)
    options = dict(layernorm_on_vec="whitened", layer_norms=True)
    models = {k: _model("default", k).clone(**options) for k in ("sparse", "dense")}
    params = models["sparse"].init(jax.random.key(0), sparse)
    with jax.enable_x64(True):
        to64 = lambda tree: jax.tree.map(  # noqa: E731
            lambda a: np.asarray(a, np.float64) if np.issubdtype(a.dtype, np.floating) else a,
            tree,
        )
        x_s, v_s = real_atoms(sparse, models["sparse"].apply(to64(params), to64(sparse)))
        x_d, v_d = real_atoms(dense, models["dense"].apply(to64(params), to64(dense)))
    np.testing.assert_allclose(x_d, x_s, atol=1e-9)
    np.testing.assert_allclose(v_d, v_s, atol=1e-9)


def test_dense_layout_is_equivariant_and_zero_on_padding_with_finite_gradients(qm9_sample):
    shard = dense_shard(qm9_sample, ROWS)
    model = _model("whitened_out", "dense")
    params = model.init(jax.random.key(0), shard)
    x, vec = model.apply(params, shard)
    padding = ~np.asarray(shard.atom_mask)
    assert padding.sum() > 0 and not np.any(x[padding]) and not np.any(vec[padding])

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return as_irreps(*model.apply(params, shard.with_positions(positions.array)))

    e3nn.utils.assert_equivariant(
        f, jax.random.key(1), e3nn.IrrepsArray("1o", shard.positions), atol=2e-4, rtol=2e-4
    )
    grads = jax.grad(
        lambda p, pos: model.apply(p, shard.with_positions(pos))[0].sum(), argnums=(0, 1)
    )(params, shard.positions)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_dense_outputs_do_not_depend_on_block_size_or_batch_composition(qm9_sample):
    model = _model("default", "dense")
    alone = dense_shard(qm9_sample, [3], slots=int(qm9_sample.n_atoms[3]), graphs=1)
    crowd = dense_shard(qm9_sample, [7, 3, 9], slots=40, graphs=5)
    params = model.init(jax.random.key(0), alone)
    n = int(qm9_sample.n_atoms[3])
    xa, va = model.apply(params, alone)
    xc, vc = model.apply(params, crowd)
    np.testing.assert_allclose(xc[40 : 40 + n], xa[:n], atol=ATOL)  # molecule 3: block 1
    np.testing.assert_allclose(vc[40 : 40 + n], va[:n], atol=ATOL)


def test_dense_layout_rejects_a_graph_that_is_not_blocks(qm9_sample):
    shard = dense_shard(qm9_sample, [0, 1])
    n = shard.n_atoms
    cut = jax.tree.map(lambda a: a[:-1] if a.shape[0] == n else a, shard)  # one slot short
    with pytest.raises(ValueError, match="not 3 blocks"):
        _model("default", "dense").init(jax.random.key(0), cut)
