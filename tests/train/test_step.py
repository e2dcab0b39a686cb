"""The fine-tuning step: compiles once, fits a fixed batch, skips non-finite updates."""

import jax
import numpy as np

from molspectra_jax.data.batching import Budget, collate
from molspectra_jax.train import finetune
from molspectra_jax.train.sharding import jit_step, make_mesh


def test_step_compiles_once_across_batches(tiny, make_state):
    traces = []

    def counted(state, batch):
        traces.append(1)  # runs only when jax traces (compiles) the step
        return tiny.train_step(state, batch)

    fn = jit_step(counted, tiny.mesh)
    state = make_state(tiny)
    iterator = tiny.iterators["train"]
    iterator.restore({"epoch": 0, "cursor": 0})
    seen = set()
    for _ in range(12):  # > one epoch of 200 molecules: new molecules, new packings
        batch = next(iterator)
        seen.update(batch.molecule_index[batch.graph.graph_mask].tolist())
        state, metrics = fn(state, batch)
    assert len(traces) == 1 and fn._cache_size() == 1  # one trace, one executable
    assert len(seen) == len(tiny.task.splits["train"])
    assert int(state.step) == 12 and np.isfinite(metrics["loss"])


def test_overfits_a_fixed_batch_of_32_real_molecules(tiny, make_state):
    train = tiny.iterators["train"]  # residual targets, as production feeds them
    batch = collate(train.dataset, train.edges, [np.arange(32)], Budget(1, 33, 1000, 20000))
    state = make_state(tiny, learning_rate=3e-3, num_steps=300)
    fn = jax.jit(tiny.train_step, donate_argnums=0)
    losses = []
    for _ in range(300):
        state, metrics = fn(state, batch)
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:3]), np.mean(losses[-10:])
    assert last < first / 20, (first, last)


def test_noisy_nodes_loss_is_reported_and_finite(make_state, tiny_config):
    run = finetune.setup(tiny_config(noise_weight=0.1), make_mesh())
    state = make_state(run)
    batch = next(run.iterators["train"])
    _, metrics = jax.jit(run.train_step)(state, batch)
    assert np.isfinite(metrics["denoising_loss"]) and metrics["loss"] > metrics["property_loss"]
