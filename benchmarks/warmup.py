"""Compile every program a run will need before a benchmark's clock starts."""

import jax

from molspectra_jax.train import sharding


def compile_every_shape(run, state, device_batches, draws: int = 500):
    """Step once on each batch shape among `device_batches`, then on new shapes drawn from
    the train iterator until every size bucket (dense layout; sparse: one) has compiled.
    Returns the state after those steps. The iterator moves on (the loop reads from it)."""
    shapes = {}
    for batch in device_batches:
        shapes.setdefault(batch.graph.positions.shape, batch)
    wanted = max(len(getattr(run.iterators["train"], "buckets", ())), 1)
    for _ in range(draws):
        if len(shapes) >= wanted:
            break
        extra = next(run.iterators["train"])
        if extra.graph.positions.shape not in shapes:
            shapes[extra.graph.positions.shape] = sharding.global_batch(extra, run.mesh)
    for batch in shapes.values():
        state, metrics = run.step_fn(state, batch)
    jax.block_until_ready(metrics)
    return state
