"""ET encoder physics: rotation/inversion, translation, permutation and padding invariance."""

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from molspectra_jax.data.batching import Budget, candidate_edges, collate
from molspectra_jax.graph import Graph
from molspectra_jax.models import ENCODERS, build_encoder
from molspectra_jax.models.encoder import EquivariantTransformer, as_irreps, inverse_sqrt_spd

ATOL = 2e-4  # float32 through 3 layers of attention


def _encoder(vector_norm="whitened"):
    return EquivariantTransformer(
        hidden=32, num_layers=3, num_heads=4, num_rbf=16, vector_norm=vector_norm
    )


def _shard(dataset, rows, budget) -> Graph:
    edges = candidate_edges(dataset, 6.0)
    batch = collate(dataset, edges, [np.asarray(rows)], budget)
    return jax.tree.map(lambda x: jnp.asarray(x[0]), batch.graph)


@functools.lru_cache
def _jitted_apply(model):
    return jax.jit(model.apply)


def _apply(model, params, shard: Graph, positions=None):
    graph = shard if positions is None else shard.with_positions(positions)
    return _jitted_apply(model)(params, graph)


@pytest.fixture(scope="module")
def setup(qm9_sample):
    budget = Budget(1, graphs=5, atoms=120, edges=3000)
    shard = _shard(qm9_sample, [0, 1, 2, 3], budget)
    return qm9_sample, shard


@pytest.mark.parametrize("vector_norm", ["none", "rms", "whitened"])
def test_rotation_inversion_equivariance(setup, vector_norm):
    _, shard = setup
    model = _encoder(vector_norm)
    params = _init(model, shard)

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return as_irreps(*_apply(model, params, shard, positions.array))

    e3nn.utils.assert_equivariant(
        f, jax.random.key(1), e3nn.IrrepsArray("1o", shard.positions), atol=ATOL, rtol=ATOL
    )


def test_translation_invariance(setup):
    _, shard = setup
    model = _encoder()
    params = _init(model, shard)
    x0, v0 = _apply(model, params, shard)
    x1, v1 = _apply(model, params, shard, shard.positions + jnp.array([3.0, -7.0, 11.0]))
    # Shifted float32 coordinates round differently (ulp ~1e-6 Å at 11 Å): looser atol.
    np.testing.assert_allclose(x0, x1, atol=1e-3)
    np.testing.assert_allclose(v0, v1, atol=1e-3)


def test_permutation_equivariance(setup):
    dataset, _ = setup
    model = _encoder()
    one = dataset.subset([5])
    z, pos = one.molecule(0)
    perm = np.random.default_rng(0).permutation(len(z))
    permuted = type(one)(
        ids=one.ids,
        atomic_numbers=z[perm],
        positions=pos[perm],
        offsets=one.offsets,
        targets=one.targets,
        target_names=one.target_names,
    )
    budget = Budget(1, graphs=2, atoms=40, edges=1000)
    a, b = _shard(one, [0], budget), _shard(permuted, [0], budget)
    params = _init(model, a)
    xa, va = _apply(model, params, a)
    xb, vb = _apply(model, params, b)
    n = len(z)
    np.testing.assert_allclose(xa[:n][perm], xb[:n], atol=ATOL)
    np.testing.assert_allclose(va[:n][perm], vb[:n], atol=ATOL)


def test_padding_and_batch_composition_do_not_change_outputs(setup):
    dataset, _ = setup
    model = _encoder()
    small = _shard(dataset, [7], Budget(1, graphs=2, atoms=30, edges=900))
    big = _shard(dataset, [3, 9, 7, 11], Budget(1, graphs=9, atoms=200, edges=5000))
    params = _init(model, small)
    n = int(dataset.n_atoms[7])
    start = int(dataset.n_atoms[[3, 9]].sum())  # molecule 7 is third in `big`
    xs, vs = _apply(model, params, small)
    xb, vb = _apply(model, params, big)
    np.testing.assert_allclose(xs[:n], xb[start : start + n], atol=ATOL)
    np.testing.assert_allclose(vs[:n], vb[start : start + n], atol=ATOL)
    assert not np.any(xb[int(big.atom_mask.sum()) :])  # padding atoms stay zero


def test_gradients_finite_with_padding(setup):
    _, shard = setup
    model = _encoder()
    params = _init(model, shard)
    grads = jax.grad(lambda p, pos: _apply(model, p, shard, pos)[0].sum(), argnums=(0, 1))(
        params, shard.positions
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_registered_encoder_keeps_the_contract(setup, name):
    """The contract of `molspectra_jax.models`: built from `hidden` and `cutoff` alone,
    Graph -> (scalars [N, F], vectors [N, 3, F]), equivariant, zero on padding atoms."""
    _, shard = setup
    model = build_encoder(ml_collections.ConfigDict(dict(name=name, hidden=16, cutoff=5.0)))
    params = _init(model, shard)
    x, vec = _apply(model, params, shard)
    n = shard.atomic_numbers.shape[0]
    assert x.shape == (n, 16) and vec.shape == (n, 3, 16)
    padding = ~np.asarray(shard.atom_mask)
    assert not np.any(x[padding]) and not np.any(vec[padding])

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return as_irreps(*_apply(model, params, shard, positions.array))

    e3nn.utils.assert_equivariant(
        f, jax.random.key(1), e3nn.IrrepsArray("1o", shard.positions), atol=ATOL, rtol=ATOL
    )


def test_inverse_sqrt_spd_matches_eigendecomposition():
    a = np.random.default_rng(0).normal(size=(6, 3, 3)).astype(np.float32)
    spd = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(3, dtype=np.float32)
    w, v = np.linalg.eigh(spd.astype(np.float64))
    expected = v @ (w[..., None] ** -0.5 * v.transpose(0, 2, 1))
    np.testing.assert_allclose(inverse_sqrt_spd(jnp.asarray(spd)), expected, rtol=1e-3, atol=1e-3)


def _init(model, shard: Graph):
    return jax.jit(model.init)(jax.random.key(0), shard)
