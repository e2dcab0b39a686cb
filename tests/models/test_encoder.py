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
from molspectra_jax.models.encoder import EquivariantTransformer, as_irreps

ATOL = 2e-4  # float32 through 3 layers of attention


def _encoder(norms="out"):
    """ET with the fork's QM9 norms ("fork"), its final vector norm only ("out") or none."""
    return EquivariantTransformer(
        hidden=32,
        num_layers=3,
        num_heads=4,
        num_rbf=16,
        layernorm_on_vec="none" if norms == "none" else "whitened",
        layer_norms=norms == "fork",
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


@pytest.mark.parametrize("norms", ["none", "out"])
def test_rotation_inversion_equivariance(setup, norms):
    _, shard = setup
    model = _encoder(norms)
    params = _init(model, shard)

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return as_irreps(*_apply(model, params, shard, positions.array))

    e3nn.utils.assert_equivariant(
        f, jax.random.key(1), e3nn.IrrepsArray("1o", shard.positions), atol=ATOL, rtol=ATOL
    )


def test_per_layer_norms_are_equivariant_in_float64_and_invariant_in_float32(setup):
    """The fork's QM9 setting whitens the residual stream after every layer: directions of
    tiny variance (planar molecules' out-of-plane components) are amplified each time, so
    float32 round-off grows to ~1e-2 in those vector components (the fork's features are
    float32 too). The math is equivariant (float64); the scalars are, in float32."""
    _, shard = setup
    model = _encoder("fork")
    params = _init(model, shard)
    x, _ = _apply(model, params, shard)
    rotation = e3nn.rand_matrix(jax.random.key(3), ())
    x_rotated, _ = _apply(model, params, shard, shard.positions @ rotation.T)
    np.testing.assert_allclose(x, x_rotated, atol=ATOL)
    with jax.enable_x64(True):
        to64 = functools.partial(jax.tree.map, lambda a: np.asarray(a, np.float64))
        shard64 = shard.with_positions(jnp.asarray(shard.positions, jnp.float64))

        def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
            return as_irreps(*model.apply(to64(params), shard64.with_positions(positions.array)))

        e3nn.utils.assert_equivariant(
            f, jax.random.key(1), e3nn.IrrepsArray("1o", shard64.positions), atol=1e-7, rtol=1e-7
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


def _init(model, shard: Graph):
    return jax.jit(model.init)(jax.random.key(0), shard)


# TorchMD-Net's options other than the defaults: each keeps the physics.
OPTION_SETS = {
    "gauss_trainable": dict(rbf="gauss", trainable_rbf=True, activation="ssp"),
    "keys_only_lower": dict(distance_influence="keys", cutoff_lower=0.8, attn_activation="tanh"),
    "values_no_loops": dict(distance_influence="values", self_loops=False, vector_cutoff=True),
    "uncapped": dict(max_num_neighbors=0, distance_influence="none", activation="mish"),
}
# (A neighbour cap that binds is not rotation-invariant where distances tie to float32
# round-off, in the reference as here: it has its own test below.)


@pytest.mark.parametrize("options", sorted(OPTION_SETS))
def test_torchmdnet_options_keep_equivariance_and_padding(setup, options):
    dataset, shard = setup
    model = EquivariantTransformer(
        hidden=16, num_layers=2, num_heads=2, num_rbf=8, **OPTION_SETS[options]
    )
    params = _init(model, shard)

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return as_irreps(*_apply(model, params, shard, positions.array))

    e3nn.utils.assert_equivariant(
        f, jax.random.key(2), e3nn.IrrepsArray("1o", shard.positions), atol=ATOL, rtol=ATOL
    )
    alone = _shard(dataset, [2], Budget(1, graphs=2, atoms=40, edges=1000))
    start = int(dataset.n_atoms[:2].sum())
    n = int(dataset.n_atoms[2])
    x, _ = _apply(model, params, shard)
    xa, _ = _apply(model, params, alone)
    np.testing.assert_allclose(x[start : start + n], xa[:n], atol=ATOL)


def test_max_num_neighbors_keeps_the_nearest(setup):
    """The cap gives what the model computes on a graph holding only each atom's k nearest."""
    dataset, _ = setup
    k = 5
    capped = EquivariantTransformer(
        hidden=16, num_layers=2, num_heads=2, num_rbf=8, max_num_neighbors=k
    )
    free = capped.clone(max_num_neighbors=0)
    shard = _shard(dataset, [4], Budget(1, graphs=2, atoms=40, edges=1000))
    pos, s, r = np.asarray(shard.positions), np.asarray(shard.senders), np.asarray(shard.receivers)
    real = np.asarray(shard.edge_mask) & (np.linalg.norm(pos[s] - pos[r], axis=-1) < 5.0)
    keep = np.zeros_like(real)
    for i in np.unique(r[real]):
        mine = np.nonzero(real & (r == i))[0]
        d = np.linalg.norm(pos[s[mine]] - pos[i], axis=-1)
        keep[mine[np.argsort(d)[:k]]] = True
    pruned = shard._replace(edge_mask=jnp.asarray(keep))
    params = _init(capped, shard)
    np.testing.assert_allclose(
        _apply(capped, params, shard)[0], _apply(free, params, pruned)[0], atol=1e-5
    )
    assert not np.allclose(_apply(free, params, shard)[0], _apply(capped, params, shard)[0])


def test_whitened_norm_with_the_fork_regularizer_matches_the_fork_formula():
    """Ours vs the fork's EquivariantLayerNorm math (float64 SVD of C + 1e-5 diag(1, 2, 3),
    1/sqrt(s + 1e-5)) on anisotropic vectors."""
    from molspectra_jax.models.encoder import EquivariantLayerNorm

    rng = np.random.default_rng(0)
    vec = rng.normal(size=(5, 3, 32)) * np.array([1.0, 0.5, 0.1])[None, :, None]
    vec = np.einsum("ij,njf->nif", np.linalg.qr(rng.normal(size=(3, 3)))[0], vec)
    centred = vec - vec.mean(-1, keepdims=True)
    cov = centred @ centred.transpose(0, 2, 1) / 32 + 1e-5 * np.diag([1.0, 2.0, 3.0])
    _, s, vt = np.linalg.svd(cov)
    v = vt.transpose(0, 2, 1)
    expected = (v / np.sqrt(s + 1e-5)[:, None, :]) @ vt @ centred
    norm = EquivariantLayerNorm("fork")
    params = norm.init(jax.random.key(0), jnp.asarray(vec, jnp.float32))
    out = norm.apply(params, jnp.asarray(vec, jnp.float32))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params_and_the_physics_to_its_precision(setup):
    """bf16 dense layers: the same parameters (float32), float32 outputs within bf16's
    ~1% of the float32 model, equivariant and padding-free to that precision."""
    _, shard = setup
    kwargs = dict(hidden=32, num_layers=3, num_heads=4, num_rbf=16, layernorm_on_vec="whitened")
    full = EquivariantTransformer(**kwargs)
    half = EquivariantTransformer(**kwargs, dtype="bfloat16")
    params = _init(full, shard)
    assert jax.tree.structure(params) == jax.tree.structure(_init(half, shard))
    assert {x.dtype for x in jax.tree.leaves(_init(half, shard))} == {jnp.dtype(jnp.float32)}
    (x32, v32), (x16, v16) = _apply(full, params, shard), _apply(half, params, shard)
    assert x16.dtype == v16.dtype == jnp.float32
    assert np.linalg.norm(x16 - x32) < 0.02 * np.linalg.norm(x32)
    assert np.linalg.norm(v16 - v32) < 0.05 * np.linalg.norm(v32)
    assert not np.any(np.asarray(x16)[~np.asarray(shard.atom_mask)])

    def f(positions: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return as_irreps(*_apply(half, params, shard, positions.array))

    e3nn.utils.assert_equivariant(
        f, jax.random.key(3), e3nn.IrrepsArray("1o", shard.positions), atol=0.1, rtol=0.05
    )
    with pytest.raises(ValueError, match="unknown dtype 'float16'; choose from"):
        _init(EquivariantTransformer(**kwargs, dtype="float16"), shard)
