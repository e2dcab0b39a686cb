"""Energy + force fine-tuning (MD17): forces are -dE/dR and transform like vectors."""

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import finetune_md17, test
from molspectra_jax.data import md17
from molspectra_jax.data.batching import Budget, candidate_edges, collate
from molspectra_jax.models.property_model import TargetStats
from molspectra_jax.train.finetune import build_model, init_params
from molspectra_jax.train.sharding import make_mesh
from molspectra_jax.train.step import energy_and_forces, finetune_loss, train_step

FRAMES = [0, 700, 1400, 1999]


@pytest.fixture(scope="module")
def setup():
    config = finetune_md17.get_config()
    config.model = test.get_config().model
    config.model.update(hidden=32, num_layers=2, vector_norm="none")
    dataset = md17.load_md17(md17.shipped_md17_path()).subset(FRAMES)
    edges = candidate_edges(dataset, config.model.cutoff + config.data.skin)
    batch = collate(dataset, edges, [np.arange(len(FRAMES))], Budget(1, 6, 40, 400))
    model, molecule_level = build_model(config, ("energy",))
    params = init_params(model, batch, jax.random.PRNGKey(0))
    # Mean 0, std 1: energies stay O(1), so float32 finite differences resolve them.
    stats = TargetStats(jnp.zeros(1), jnp.ones(1), jnp.zeros((config.model.max_z, 1)))
    fn = jax.jit(functools.partial(energy_and_forces, model=model, stats=stats,
                                   molecule_level=molecule_level, mesh=make_mesh()))  # fmt: skip
    return config, dataset, batch, params, stats, model, molecule_level, fn


def test_forces_are_minus_the_energy_gradient(setup):
    _, _, batch, params, *_, fn = setup
    energy, forces, _ = fn(params, batch, batch.positions)
    eps = 2e-3  # Å
    for atom, axis in [(0, 0), (2, 1), (7, 2), (9 + 4, 0), (27 + 8, 1)]:
        step = np.zeros(batch.positions.shape, np.float32)
        step[0, atom, axis] = eps
        graph = batch.graph_index[0, atom]
        plus = fn(params, batch, batch.positions + step)[0][0, graph, 0]
        minus = fn(params, batch, batch.positions - step)[0][0, graph, 0]
        numeric = -(plus - minus) / (2 * eps)
        np.testing.assert_allclose(forces[0, atom, axis], numeric, rtol=2e-2, atol=2e-3)
    assert np.all(np.asarray(forces)[~batch.atom_mask] == 0.0)


def test_forces_rotate_with_the_molecule_and_ignore_translation(setup):
    _, _, batch, params, *_, fn = setup
    energy, forces, _ = fn(params, batch, batch.positions)
    rotation = np.asarray(e3nn.rand_matrix(jax.random.key(3), ()))
    moved = batch.positions @ rotation.T + np.array([1.5, -2.0, 0.7], np.float32)
    energy_m, forces_m, _ = fn(params, batch, moved.astype(np.float32))
    real = batch.atom_mask[0]
    np.testing.assert_allclose(energy_m[0, :4], energy[0, :4], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        forces_m[0][real], (forces[0] @ rotation.T)[real], rtol=1e-3, atol=1e-4
    )


def test_forces_follow_a_permutation_of_the_atoms(setup):
    _, dataset, _, params, *_, fn = setup
    order = np.array([4, 0, 8, 2, 6, 1, 3, 7, 5])  # within frame 0
    base = collate(dataset.subset([0]), candidate_edges(dataset.subset([0]), 6.0),
                   [np.arange(1)], Budget(1, 2, 12, 120))  # fmt: skip
    permuted = base._replace(
        atomic_numbers=base.atomic_numbers.copy(), positions=base.positions.copy()
    )
    permuted.atomic_numbers[0, :9] = base.atomic_numbers[0, order]
    permuted.positions[0, :9] = base.positions[0, order]
    inverse = np.argsort(order)
    s, r = base.senders[0], base.receivers[0]
    real = base.edge_mask[0]
    permuted.senders[0, real] = inverse[s[real]]
    permuted.receivers[0, real] = inverse[r[real]]
    energy, forces, _ = fn(params, base, base.positions)
    energy_p, forces_p, _ = fn(params, permuted, permuted.positions)
    np.testing.assert_allclose(energy_p[0, 0], energy[0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forces_p[0, :9], forces[0, order], rtol=1e-4, atol=1e-5)


def test_force_training_fits_a_batch_and_refuses_noisy_nodes(setup):
    config, dataset, batch, params, stats, model, molecule_level, _ = setup
    from molspectra_jax.train.optim import make_optimizer
    from molspectra_jax.train.state import TrainState

    mean, std = dataset.targets.mean(0), dataset.targets.std(0)
    stats = TargetStats(jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32),
                        stats.atomref)  # fmt: skip
    common = dict(model=model, stats=stats, molecule_level=molecule_level, loss_kind="mse",
                  noise_sigma=0.005, mesh=make_mesh())  # fmt: skip
    config.optim.update(learning_rate=3e-3, warmup_steps=5)
    state = TrainState.create(params, make_optimizer(config.optim, 150), jax.random.PRNGKey(1))
    step = jax.jit(functools.partial(train_step, noise_weight=0.0, energy_weight=0.2,
                                     force_weight=0.8, **common))  # fmt: skip
    history = []
    for _ in range(150):
        state, metrics = step(state, batch)
        history.append((float(metrics["force_loss"]), float(metrics["property_loss"])))
    first, last = np.mean(history[:3], axis=0), np.mean(history[-5:], axis=0)
    assert last[0] < first[0] / 5, (first, last)
    with pytest.raises(ValueError, match="noisy nodes .* cannot train with forces"):
        finetune_loss(params, batch, jax.random.PRNGKey(0), noise_weight=0.1,
                      energy_weight=0.2, force_weight=0.8, **common)  # fmt: skip
