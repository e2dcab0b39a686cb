"""Train-step throughput on this machine: molecules/s, atoms/s, compile time, padding.

  python -m benchmarks.train_step --configs small,paper --steps 20 --out bench.json
  python -m benchmarks.train_step --step pretrain     # denoise + MPR + contrast step
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m benchmarks.train_step ...

`small` is configs/finetune_qm9.py:cpu, `paper` the paper-sized encoder (256 hidden,
8 layers); `--batch_size` overrides both. Timings exclude the first (compiling) call and
host batch assembly (batches are built before the clock starts); report ratios from one
run on one machine.
"""

import functools
import json
import platform
import time

import jax
import numpy as np
from absl import app, flags, logging

from configs import finetune_qm9, pretrain_qm9s
from molspectra_jax.data.batching import padding_fraction
from molspectra_jax.models import build_encoder
from molspectra_jax.models.pretrain_model import PretrainModel
from molspectra_jax.models.specformer import build_specformer
from molspectra_jax.train import pretrain, sharding
from molspectra_jax.train.finetune import setup
from molspectra_jax.train.pretrain_step import pretrain_step

_CONFIGS = flags.DEFINE_list("configs", ["small", "paper"], "small and/or paper.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after the compiling one.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Override the config's batch size (0 = keep).")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
_STEP = flags.DEFINE_enum("step", "finetune", ["finetune", "pretrain"], "Which train step.")


def finetune_setup(name: str, batch_size: int, steps: int):
    """(config, jitted step, fresh state, train iterator) of the fine-tuning step."""
    config = finetune_qm9.get_config("cpu" if name == "small" else None)
    if batch_size:
        config.data.batch_size = batch_size
    config.data.n_train = config.data.batch_size * (steps + 2)
    config.data.n_valid = config.data.n_test = 64
    run = setup(config, sharding.make_mesh())
    return config, run.step_fn, run.state, run.iterators["train"]


def pretrain_setup(name: str, batch_size: int, steps: int):
    """The same for the stage-2 pre-training step on the shipped spectra."""
    config = pretrain_qm9s.get_config("cpu" if name == "small" else None)
    if batch_size:
        config.data.batch_size = batch_size
    config.data.n_valid = 64
    iterator, _ = pretrain.load_data(config)
    model = PretrainModel(build_encoder(config.model))
    specformer = build_specformer(config.specformer)
    state = pretrain.init_state(config, model, specformer, next(iterator), jax.random.PRNGKey(0))
    mesh = sharding.make_mesh()
    step = functools.partial(pretrain_step, model=model, specformer=specformer,
                             loss_config=config.loss, mesh=mesh)  # fmt: skip
    return config, sharding.jit_step(step, mesh), state, iterator


def measure(name: str, steps: int, batch_size: int) -> dict:
    build = pretrain_setup if _STEP.value == "pretrain" else finetune_setup
    config, step_fn, state, iterator = build(name, batch_size, steps)
    mesh = sharding.make_mesh()
    state = jax.device_put(state, sharding.replicated(mesh))
    host = [next(iterator) for _ in range(steps + 1)]
    batches = [sharding.global_batch(b, mesh) for b in host]

    t0 = time.perf_counter()
    state, metrics = step_fn(state, batches[0])
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch in batches[1:]:
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
    molecules = np.mean([b.graph_mask.sum() for b in host[1:]])
    atoms = np.mean([b.atom_mask.sum() for b in host[1:]])
    padding = {
        k: float(np.mean([padding_fraction(b)[k] for b in host])) for k in ("atoms", "edges")
    }
    return {
        "config": name,
        "hidden": config.model.hidden,
        "layers": config.model.num_layers,
        "batch_size": config.data.batch_size,
        "devices": jax.device_count(),
        "compile_s": round(compile_s, 2),
        "step_ms": round(1e3 * step_s, 2),
        "molecules_per_s": round(float(molecules / step_s), 1),
        "atoms_per_s": round(float(atoms / step_s), 1),
        "padding_fraction": padding,
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    results = {
        "machine": f"{platform.node()} {jax.devices()[0].device_kind} x{jax.device_count()}",
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "runs": [measure(name, _STEPS.value, _BATCH.value) for name in _CONFIGS.value],
    }
    print(json.dumps(results, indent=2))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
