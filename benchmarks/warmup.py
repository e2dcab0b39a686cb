"""What a benchmark does before its clock starts: fair batches, every program compiled."""

import jax

from molspectra_jax.train import sharding

# The dense layout sorts its size buckets within windows of 16 batches
# (`batching.BUCKET_WINDOW`), so consecutive batches are no fair sample: take every 8th.
BUCKET_STRIDE = 8


def stride(layout: str) -> int:
    """Batches drawn per timed batch: BUCKET_STRIDE for the dense layout, else 1."""
    return BUCKET_STRIDE if layout == "dense" else 1


def sample_batches(iterator, count: int) -> list:
    """`count` host batches of the train iterator, every `stride`-th for bucketed ones."""
    step = BUCKET_STRIDE if getattr(iterator, "buckets", ()) else 1
    return [next(iterator) for _ in range(step * count)][::step]


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
