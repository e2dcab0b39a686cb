"""The fine-tuning step: compiles once, fits a fixed batch, skips non-finite updates."""

import jax
import numpy as np

from molspectra_jax.data.batching import BatchIterator, Budget, collate
from molspectra_jax.train.sharding import jit_step, make_mesh


def test_step_compiles_once_across_batches(tiny, make_state, step_fn):
    traces = []

    def counted(state, batch):
        traces.append(1)  # runs only when jax traces (compiles) the step
        return step_fn(tiny)(state, batch)

    fn = jit_step(counted, make_mesh())
    state = make_state(tiny)
    iterator = BatchIterator(tiny.dataset, tiny.edges, tiny.budget, seed=3)
    seen = set()
    for _ in range(12):  # > one epoch of 200 molecules: new molecules, new packings
        batch = next(iterator)
        seen.update(batch.molecule_index[batch.graph_mask].tolist())
        state, metrics = fn(state, batch)
    assert len(traces) == 1 and fn._cache_size() == 1  # one trace, one executable
    assert len(seen) == len(tiny.dataset)
    assert int(state.step) == 12 and np.isfinite(metrics["loss"])


def test_overfits_a_fixed_batch_of_32_real_molecules(tiny, make_state, step_fn):
    budget = Budget(1, graphs=33, atoms=1000, edges=20000)
    batch = collate(tiny.dataset, tiny.edges, [np.arange(32)], budget)
    state = make_state(tiny, learning_rate=3e-3, num_steps=300)
    fn = jax.jit(step_fn(tiny), donate_argnums=0)
    losses = []
    for _ in range(300):
        state, metrics = fn(state, batch)
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:3]), np.mean(losses[-10:])
    assert last < first / 20, (first, last)


def test_noisy_nodes_loss_is_reported_and_finite(tiny, make_state, step_fn):
    model = tiny.model.clone(noise_head=True)
    state = make_state(tiny, model=model)
    batch = next(BatchIterator(tiny.dataset, tiny.edges, tiny.budget, seed=0))
    _, metrics = jax.jit(step_fn(tiny, noise_weight=0.1, model=model))(state, batch)
    assert np.isfinite(metrics["denoising_loss"]) and metrics["loss"] > metrics["property_loss"]
