"""Train-step throughput on this machine: molecules/s, atoms/s, compile time, padding.

  python -m benchmarks.train_step --configs small,paper --steps 20 --out bench.json
  python -m benchmarks.train_step --step pretrain     # denoise + MPR + contrast step
  python -m benchmarks.train_step --dtypes float32,bfloat16  # bf16 dense layers
  python -m benchmarks.train_step --layouts sparse,dense     # the ET's two pair layouts
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m benchmarks.train_step ...

`small` is configs/finetune_qm9.py:cpu, `paper` the paper-sized encoder (256 hidden,
8 layers); `--batch_size` overrides both. Two timings, after the first (compiling) call:
step-only (`molecules_per_s`, batches built and transferred before the clock starts) and
end to end (`loop_molecules_per_s`, batches assembled and transferred by the training
loop's prefetch thread while the steps run). `flops_per_step` is XLA's count for the
compiled step, `achieved_flops_per_s` that over the step-only time (divide by the
device's peak for the model FLOP utilization). Each run also reports its losses over
the timed steps (same seed and batches for every `--dtypes` value: bf16's effect on a
short run). Report ratios from one run on one machine.
"""

import json
import platform
import time

import jax
import numpy as np
from absl import app, flags, logging

from benchmarks.warmup import compile_every_shape, sample_batches, stride
from molspectra_jax.configs import finetune_qm9, pretrain_qm9s
from molspectra_jax.data.batching import padding_fraction
from molspectra_jax.data.prefetch import Prefetcher
from molspectra_jax.train import finetune, pretrain, sharding

_CONFIGS = flags.DEFINE_list("configs", ["small", "paper"], "small and/or paper.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after the compiling one.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Override the config's batch size (0 = keep).")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
_STEP = flags.DEFINE_enum("step", "finetune", ["finetune", "pretrain"], "Which train step.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "model.dtype values: float32, bfloat16.")
_LAYOUTS = flags.DEFINE_list("layouts", ["sparse"], "model.layout values: sparse, dense.")


def build_run(
    step: str, name: str, batch_size: int, steps: int, dtype: str = "float32", layout="sparse"
):
    """(config, Run) of the fine-tuning or the stage-2 pre-training step, built by `setup`."""
    task = pretrain if step == "pretrain" else finetune
    base = pretrain_qm9s if step == "pretrain" else finetune_qm9
    config = base.get_config("cpu" if name == "small" else None)
    config.model.dtype = dtype
    config.model.layout = layout
    if batch_size:
        config.data.batch_size = batch_size
    if step == "finetune":
        config.data.n_train = config.data.batch_size * (steps + 2) * stride(layout)
        config.data.n_test = 64
    config.data.n_valid = 64
    return config, task.setup(config, sharding.make_mesh())


def step_flops(step_fn, state, batch) -> float | None:
    """XLA's FLOP count of one compiled step (`cost_analysis`), None if it gives none."""
    cost = step_fn.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = (cost or {}).get("flops")
    return None if flops is None else float(flops)


def measure(name: str, steps: int, batch_size: int, dtype: str, layout: str) -> dict:
    config, run = build_run(_STEP.value, name, batch_size, steps, dtype, layout)
    mesh, step_fn = run.mesh, run.step_fn
    state = sharding.replicate(run.state, mesh)
    host = sample_batches(run.iterators["train"], steps + 1)
    batches = [sharding.global_batch(b, mesh) for b in host]

    t0 = time.perf_counter()  # compile_s: lowering and compilation (reused by the call)
    flops = step_flops(step_fn, state, batches[0])
    state, metrics = step_fn(state, batches[0])
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    state = compile_every_shape(run, state, batches[1:])  # the dense layout's buckets
    losses = [metrics["loss"]]  # the same seed and batches for every dtype
    t0 = time.perf_counter()
    for batch in batches[1:]:
        state, metrics = step_fn(state, batch)
        losses.append(metrics["loss"])
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
    losses = [float(x) for x in jax.device_get(losses)]

    # End to end, as `loop.fit` runs: batches assembled and transferred by the prefetch
    # thread while the step runs.
    feed = Prefetcher(
        run.iterators["train"],
        config.data.prefetch,
        transform=lambda b: sharding.global_batch(b, mesh),
    )
    t0, loop_molecules = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(feed)
        loop_molecules += int(np.asarray(batch.graph.graph_mask).sum())
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    loop_s = time.perf_counter() - t0
    feed.close()
    molecules = np.mean([b.graph.graph_mask.sum() for b in host[1:]])
    atoms = np.mean([b.graph.atom_mask.sum() for b in host[1:]])
    padding = {
        k: float(np.mean([padding_fraction(b)[k] for b in host])) for k in ("atoms", "edges")
    }
    return {
        "config": name,
        "dtype": dtype,
        "layout": layout,
        "programs": step_fn._cache_size(),
        "hidden": config.model.hidden,
        "layers": config.model.num_layers,
        "batch_size": config.data.batch_size,
        "devices": jax.device_count(),
        "compile_s": round(compile_s, 2),
        "step_ms": round(1e3 * step_s, 2),
        "molecules_per_s": round(float(molecules / step_s), 1),
        "loop_molecules_per_s": round(loop_molecules / loop_s, 1),
        "flops_per_step": flops,
        "achieved_flops_per_s": None if flops is None else round(flops / step_s),
        "atoms_per_s": round(float(atoms / step_s), 1),
        "padding_fraction": padding,
        "loss_first_step": round(losses[0], 5),
        "loss_last_step": round(losses[-1], 5),
        "loss_mean_last_half": round(float(np.mean(losses[len(losses) // 2 :])), 5),
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    results = {
        "machine": f"{platform.node()} {jax.devices()[0].device_kind} x{jax.device_count()}",
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "runs": [
            measure(name, _STEPS.value, _BATCH.value, dtype, layout)
            for name in _CONFIGS.value
            for dtype in _DTYPES.value
            for layout in _LAYOUTS.value
        ],
    }
    print(json.dumps(results, indent=2))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
