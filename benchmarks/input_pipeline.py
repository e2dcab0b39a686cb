"""Host input-pipeline throughput on this machine: batch assembly alone, and the training
loop's feed (batch assembly + transfer + a trivial jitted step), without and with the
prefetch thread the loop uses.

  python -m benchmarks.input_pipeline --batch_size 128 --batches 200 --out pipeline.json

QM9 through the fine-tuning data path (`finetune.setup`'s iterators: candidate edges
precomputed, static budgets). The last line of output is one JSON object.
"""

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from configs import finetune_qm9
from molspectra_jax.data import pipeline, sources
from molspectra_jax.data.prefetch import Prefetcher
from molspectra_jax.train import sharding

_BATCH = flags.DEFINE_integer("batch_size", 128, "Molecules per batch.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches.")
_N_TRAIN = flags.DEFINE_integer("n_train", 110_000, "Training molecules (QM9 split prefix).")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")


@jax.jit
def trivial_step(total, batch):
    """The cheapest step that consumes every batch array: the pipeline is the bottleneck."""
    graph = batch.graph
    return total + jnp.sum(graph.positions) + jnp.sum(graph.edge_mask) + jnp.sum(batch.targets)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = finetune_qm9.get_config()
    config.data.update(batch_size=_BATCH.value, n_train=_N_TRAIN.value, n_valid=100, n_test=100)
    t0 = time.perf_counter()
    splits = sources.finetuning_splits(sources.load("qm9", config.data), config.data)
    iterator = pipeline.make_iterators(
        {"train": splits["train"].select_targets(("gap",))},
        config.data,
        config.model.cutoff,
        1,
        label="qm9",
    )["train"]
    setup_s = time.perf_counter() - t0
    n = _BATCHES.value

    t0 = time.perf_counter()
    molecules = sum(int(next(iterator).graph.graph_mask.sum()) for _ in range(n))
    host = molecules / (time.perf_counter() - t0)

    mesh = sharding.make_mesh()
    total = trivial_step(jnp.zeros(()), sharding.global_batch(next(iterator), mesh))
    jax.block_until_ready(total)
    t0, molecules = time.perf_counter(), 0
    for _ in range(n):
        batch = next(iterator)
        molecules += int(batch.graph.graph_mask.sum())
        total = trivial_step(total, sharding.global_batch(batch, mesh))
    jax.block_until_ready(total)
    loop = molecules / (time.perf_counter() - t0)

    # The training loop's own feed: assembly and transfer in the prefetch thread.
    feed = Prefetcher(iterator, 2, transform=lambda b: sharding.global_batch(b, mesh))
    t0, molecules = time.perf_counter(), 0
    for _ in range(n):
        batch = next(feed)
        molecules += int(np.asarray(batch.graph.graph_mask).sum())
        total = trivial_step(total, batch)
    jax.block_until_ready(total)
    prefetched = molecules / (time.perf_counter() - t0)
    feed.close()

    result = {
        "machine": f"{platform.node()} {jax.devices()[0].device_kind}",
        "date": time.strftime("%Y-%m-%d"),
        "batch_size": _BATCH.value,
        "train_molecules": len(splits["train"]),
        "setup_s": round(setup_s, 2),
        "host_molecules_per_s": round(host),
        "loop_molecules_per_s": round(prefetched),
        "loop_no_prefetch_molecules_per_s": round(loop),
    }
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
