"""Host input-pipeline throughput and a PCQM4Mv2-sized start, on this machine.

  python -m benchmarks.input_pipeline --batch_size 128 --batches 200 --workers 0,1,2,4 \\
      --synthetic 3400000 --out pipeline.json

QM9 (the fine-tuning data path, `pipeline.make_iterators`): batch assembly alone for
each worker count (0 = in this thread), and the training loop's feed (assembly +
transfer + a trivial jitted step) through the prefetch thread the loop uses.

Synthetic (`--synthetic N`, 0 skips it): N molecules, QM9's repeated with jittered
coordinates, written through the molecule store's converter (once; reused if the folder
holds it), then a fresh process pre-trains stage 1 on it (`pretrain.setup`, small model)
and reports its time to the first finished step (process start included) and its peak
RSS. The last line of output is one JSON object.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from molspectra_jax.configs import finetune_qm9, pretrain_qm9s
from molspectra_jax.data import molstore, pipeline, sources
from molspectra_jax.data.prefetch import Prefetcher
from molspectra_jax.data.qm9 import load_qm9
from molspectra_jax.data.records import concat_ranges
from molspectra_jax.data.workers import ParallelBatches
from molspectra_jax.train import sharding

_BATCH = flags.DEFINE_integer("batch_size", 128, "Molecules per batch.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches.")
_N_TRAIN = flags.DEFINE_integer("n_train", 110_000, "Training molecules (QM9 split prefix).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2", "4"], "Worker counts to time.")
_SYNTHETIC = flags.DEFINE_integer("synthetic", 3_400_000, "Synthetic molecules (0: skip).")
_SYNTHETIC_DIR = flags.DEFINE_string(
    "synthetic_dir", "/tmp/molspectra_synthetic", "Store folder for the synthetic set."
)
_STEPS = flags.DEFINE_integer("steps", 30, "Stage-1 steps on the synthetic set.")
_FIRST_STEP_OF = flags.DEFINE_string("first_step_of", "", "(internal) child: time a store.")
_STARTED = flags.DEFINE_float("started", 0.0, "(internal) child: the parent's launch time.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")

JITTER = 0.05  # Å, per coordinate, on the synthetic copies


@jax.jit
def trivial_step(total, batch):
    """The cheapest step that consumes every batch array: the pipeline is the bottleneck."""
    graph = batch.graph
    return total + jnp.sum(graph.positions) + jnp.sum(graph.edge_mask) + jnp.sum(batch.targets)


def qm9_iterator():
    config = finetune_qm9.get_config()
    config.data.update(batch_size=_BATCH.value, n_train=_N_TRAIN.value, n_valid=100, n_test=100)
    splits = sources.finetuning_splits(sources.load("qm9", config.data), config.data)
    train = {"train": splits["train"].select_targets(("gap",))}
    return pipeline.make_iterators(train, config.data, config.model.cutoff, 1, label="qm9")["train"]


def molecules_of(batch) -> int:
    return int(np.asarray(batch.graph.graph_mask).sum())


def qm9_section() -> dict:
    t0 = time.perf_counter()
    iterator = qm9_iterator()
    out = {"train_molecules": len(iterator), "setup_s": round(time.perf_counter() - t0, 2)}
    n, mesh = _BATCHES.value, sharding.make_mesh()
    for workers in map(int, _WORKERS.value):
        source = ParallelBatches(iterator, workers) if workers else iterator
        next(source)  # workers started
        t0 = time.perf_counter()
        molecules = sum(molecules_of(next(source)) for _ in range(n))
        out[f"host_{workers}_workers"] = round(molecules / (time.perf_counter() - t0))

        # The training loop's own feed: transfer in the prefetch thread, a trivial step.
        feed = Prefetcher(source, 2, transform=lambda b: sharding.global_batch(b, mesh))
        total = jax.block_until_ready(trivial_step(jnp.zeros(()), next(feed)))
        t0, molecules = time.perf_counter(), 0
        for _ in range(n):
            batch = next(feed)
            molecules += molecules_of(batch)
            total = trivial_step(total, batch)
        jax.block_until_ready(total)
        out[f"loop_{workers}_workers"] = round(molecules / (time.perf_counter() - t0))
        feed.close()
        if workers:
            source.close()
    # molecules/s; the headline is the best worker count's.
    out["loop_molecules_per_s"] = max(v for k, v in out.items() if k.startswith("loop_"))
    return out


def synthetic_chunk(payload) -> dict:
    """Chunk k of the synthetic set: molecules k*size.. as QM9 rows p mod M, jittered."""
    qm9, k, size, total = payload
    ids = np.arange(k * size, min((k + 1) * size, total))
    rows = ids % len(qm9)
    n_atoms = qm9.n_atoms[rows]
    atoms = concat_ranges(qm9.offsets[rows], n_atoms)
    noise = np.random.default_rng([0, k]).normal(scale=JITTER, size=(len(atoms), 3))
    return {
        "ids": ids,
        "atomic_numbers": qm9.atomic_numbers[atoms],
        "positions": qm9.positions[atoms] + noise.astype(np.float32),
        "n_atoms": n_atoms,
        "skipped": np.zeros(0, str),
    }


def write_synthetic(root: str, total: int, size: int = 100_000) -> dict:
    qm9 = load_qm9().select_targets(())
    identity = {"source": "QM9 repeated, jittered", "jitter": JITTER, "molecules": total}
    chunks = ((k, (qm9, k, size, total)) for k in range(-(-total // size)))
    t0 = time.perf_counter()
    summary = molstore.convert(root, identity, chunks, synthetic_chunk, progress=False)
    info = molstore.read_info(root)
    size = sum(os.path.getsize(os.path.join(root, f"{a}.npy")) for a in molstore.ARRAYS)
    return {
        "molecules": info["molecules"],
        "atoms": info["atoms"],
        "store_gb": round(size / 1e9, 2),
        "conversion_s": round(time.perf_counter() - t0, 1) if summary.chunks_parsed else None,
    }


def first_step(root: str, started: float, steps: int) -> dict:
    """(Child process) stage-1 pre-training on the store: first step time, peak RSS."""
    from molspectra_jax.train import pretrain

    config = pretrain_qm9s.get_config("cpu")
    config.stage = 1
    config.data.update(source=f"molstore:{root}", batch_size=_BATCH.value, n_valid=1000)
    run = pretrain.setup(config, sharding.make_mesh())
    state = sharding.replicate(run.state, run.mesh)
    feed = Prefetcher(run.iterators["train"], 2, lambda b: sharding.global_batch(b, run.mesh))
    state, metrics = run.step_fn(state, next(feed))
    jax.block_until_ready(metrics)
    first = time.time() - started
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = run.step_fn(state, next(feed))
    jax.block_until_ready(metrics)
    feed.close()
    return {
        "first_step_s": round(first, 1),
        "steps_per_s": round(steps / (time.perf_counter() - t0), 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "loss": round(float(metrics["loss"]), 4),
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _FIRST_STEP_OF.value:
        print(json.dumps(first_step(_FIRST_STEP_OF.value, _STARTED.value, _STEPS.value)))
        return
    result = {
        "machine": f"{platform.node()} {jax.devices()[0].device_kind}",
        "date": time.strftime("%Y-%m-%d"),
        "batch_size": _BATCH.value,
        **qm9_section(),
    }
    if _SYNTHETIC.value:
        synthetic = write_synthetic(_SYNTHETIC_DIR.value, _SYNTHETIC.value)
        command = [sys.executable, "-m", "benchmarks.input_pipeline"]
        command += ["--first_step_of", _SYNTHETIC_DIR.value, "--started", repr(time.time())]
        command += ["--steps", str(_STEPS.value), "--batch_size", str(_BATCH.value)]
        child = subprocess.run(command, capture_output=True, text=True, check=True)
        synthetic.update(json.loads(child.stdout.strip().splitlines()[-1]))
        result["synthetic"] = synthetic
        result.update(peak_rss_gb=synthetic["peak_rss_gb"], first_step_s=synthetic["first_step_s"])
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
