"""Energy + force fine-tuning (MD17): forces are -dE/dR and transform like vectors."""

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from molspectra_jax.configs import finetune_md17, test
from molspectra_jax.data import md17
from molspectra_jax.data.batching import Budget, candidate_edges, candidate_radius, collate
from molspectra_jax.train import finetune
from molspectra_jax.train.finetune import build_model
from molspectra_jax.train.finetune_step import energy_and_forces, finetune_loss
from molspectra_jax.train.optim import make_optimizer
from molspectra_jax.train.sharding import make_mesh
from molspectra_jax.train.state import TrainState, init_variables

FRAMES = [0, 700, 1400, 1999]


@pytest.fixture(scope="module")
def setup():
    config = finetune_md17.get_config()
    config.model = test.get_config().model
    config.model.update(hidden=32, num_layers=2, layernorm_on_vec="none", layer_norms=False)
    dataset = md17.load_md17(md17.shipped_md17_path()).subset(FRAMES)
    edges = candidate_edges(dataset, candidate_radius(config.model.cutoff, config.data.skin, 0.0))
    batch = collate(dataset, edges, [np.arange(len(FRAMES))], Budget(1, 6, 40, 400))
    model = build_model(config, ("energy",))
    params, _ = init_variables(model, batch, jax.random.PRNGKey(0))
    # std 1: energies stay O(1), so float32 finite differences resolve them.
    energy_forces = functools.partial(
        energy_and_forces, model=model, std=jnp.ones(1), mesh=make_mesh()
    )

    @jax.jit
    def fn(params, batch, positions):
        return energy_forces(params, batch.graph.with_positions(positions))

    return config, dataset, batch, params, fn


def test_forces_are_minus_the_energy_gradient(setup):
    _, _, batch, params, fn = setup
    g = batch.graph
    energy, forces, _ = fn(params, batch, g.positions)
    eps = 2e-3  # Å
    for atom, axis in [(0, 0), (2, 1), (7, 2), (9 + 4, 0), (27 + 8, 1)]:
        step = np.zeros(g.positions.shape, np.float32)
        step[0, atom, axis] = eps
        graph = g.graph_index[0, atom]
        plus = fn(params, batch, g.positions + step)[0][0, graph, 0]
        minus = fn(params, batch, g.positions - step)[0][0, graph, 0]
        numeric = -(plus - minus) / (2 * eps)
        np.testing.assert_allclose(forces[0, atom, axis], numeric, rtol=2e-2, atol=2e-3)
    assert np.all(np.asarray(forces)[~g.atom_mask] == 0.0)


def test_forces_rotate_with_the_molecule_and_ignore_translation(setup):
    _, _, batch, params, fn = setup
    g = batch.graph
    energy, forces, _ = fn(params, batch, g.positions)
    rotation = np.asarray(e3nn.rand_matrix(jax.random.key(3), ()))
    moved = g.positions @ rotation.T + np.array([1.5, -2.0, 0.7], np.float32)
    energy_m, forces_m, _ = fn(params, batch, moved.astype(np.float32))
    real = g.atom_mask[0]
    np.testing.assert_allclose(energy_m[0, :4], energy[0, :4], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        forces_m[0][real], (forces[0] @ rotation.T)[real], rtol=1e-3, atol=1e-4
    )


def test_forces_follow_a_permutation_of_the_atoms(setup):
    _, dataset, _, params, fn = setup
    order = np.array([4, 0, 8, 2, 6, 1, 3, 7, 5])  # within frame 0
    frame = dataset.subset([0])
    base = collate(frame, candidate_edges(frame, 6.0), [np.arange(1)], Budget(1, 2, 12, 120))
    g = base.graph
    p = g._replace(atomic_numbers=g.atomic_numbers.copy(), positions=g.positions.copy())
    p.atomic_numbers[0, :9] = g.atomic_numbers[0, order]
    p.positions[0, :9] = g.positions[0, order]
    inverse = np.argsort(order)
    s, r = g.senders[0], g.receivers[0]
    real = g.edge_mask[0]
    p.senders[0, real] = inverse[s[real]]
    p.receivers[0, real] = inverse[r[real]]
    permuted = base._replace(graph=p)
    energy, forces, _ = fn(params, base, g.positions)
    energy_p, forces_p, _ = fn(params, permuted, p.positions)
    np.testing.assert_allclose(energy_p[0, 0], energy[0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forces_p[0, :9], forces[0, order], rtol=1e-4, atol=1e-5)


def test_force_training_fits_a_batch_and_refuses_noisy_nodes(setup):
    """Through `finetune.setup`, as production runs it: residual energies (mean removed on
    the host), 0.2 * energy + 0.8 * force loss in units of the energy std."""
    config = setup[0].copy_and_resolve_references()
    config.data.update(n_train=4, n_valid=2, batch_size=4)
    config.optim.update(learning_rate=3e-3, warmup_steps=5)
    run = finetune.setup(config, make_mesh())
    train = run.iterators["train"]
    batch = collate(train.dataset, train.edges, [np.arange(4)], Budget(1, 6, 40, 400))
    tx = make_optimizer(config.optim, 150)
    state = TrainState.create(run.state.params, tx, jax.random.PRNGKey(1))
    step = jax.jit(run.train_step)
    history = []
    for _ in range(150):
        state, metrics = step(state, batch)
        history.append((float(metrics["force_loss"]), float(metrics["property_loss"])))
    first, last = np.mean(history[:3], axis=0), np.mean(history[-5:], axis=0)
    assert last[0] < first[0] / 5, (first, last)
    with pytest.raises(ValueError, match="noisy nodes .* cannot train with forces"):
        finetune_loss(
            run.state.params,
            batch,
            jax.random.PRNGKey(0),
            model=run.task.model,
            std=jnp.asarray(run.task.stats.std, jnp.float32),
            loss_kind="mse",
            noise_sigma=0.005,
            noise_weight=0.1,
            energy_weight=0.2,
            force_weight=0.8,
            mesh=run.mesh,
        )
