"""The one runner: a `Run` (what a task trains, on what, how it is scored) and `fit`.

`pretrain.setup` and `finetune.setup` each build a `Run`; `fit` resumes it from the
latest checkpoint (state, RNG key, data position), runs the jitted step with a progress
bar, logs means of the step metrics, evaluates, and keeps `latest` and `best`
checkpoints. It owns its checkpointer and metric writer and closes them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from molspectra_jax.train import sharding
from molspectra_jax.train.checkpoint import Checkpointer
from molspectra_jax.train.metrics import MetricWriter
from molspectra_jax.train.state import TrainState

STATE_FIELDS = ("step", "params", "opt_state", "key", "batch_stats")


@dataclasses.dataclass
class Run:
    """A task wired for `fit`.

    Attributes:
      name: progress-bar label, e.g. "fine-tune".
      mesh: the device mesh the state and batches live on.
      state: fresh `TrainState`.
      train_step: pure `(state, batch) -> (state, metrics)`; `step_fn` is its jitted form.
      iterators: "train" (shuffled, endless) and evaluation splits (one pass each).
      evaluate: `state -> (score, metrics)` on the validation split; lower is better.
      init_from: `state -> state` run on a fresh start only (pre-trained weights).
      extra_arrays: run constants checkpointed beside the state (e.g. target statistics).
      task: the task's own facts (models, targets, units, prediction function, ...).
    """

    name: str
    mesh: Mesh
    state: TrainState
    train_step: Callable
    iterators: dict
    evaluate: Callable[[TrainState], tuple[float, dict]]
    init_from: Callable[[TrainState], TrainState] | None = None
    extra_arrays: dict = dataclasses.field(default_factory=dict)
    task: Any = None

    @functools.cached_property
    def step_fn(self) -> Callable:
        """`train_step` jitted once for the mesh, donating the state."""
        return sharding.jit_step(self.train_step, self.mesh)


def start(config, workdir: str) -> Mesh:
    """Multi-host initialisation (if configured), the workdir, the device mesh."""
    sharding.initialize_distributed(**config.distributed)
    os.makedirs(workdir, exist_ok=True)
    return sharding.make_mesh()


def checkpoint_arrays(state: TrainState, extra: dict) -> dict:
    """What a checkpoint stores: the state's arrays plus run constants (e.g. target stats)."""
    return {**{k: getattr(state, k) for k in STATE_FIELDS}, **extra}


def restore_best(run: Run, workdir: str) -> dict:
    """The arrays of `<workdir>/checkpoints/best` (params, ..., extra arrays)."""
    state = sharding.replicate(run.state, run.mesh)
    extra = sharding.replicate(run.extra_arrays, run.mesh)
    ckpt = Checkpointer(workdir, 1)
    try:
        return ckpt.restore("best", checkpoint_arrays(state, extra))[0]
    finally:
        ckpt.close()


def fit(run: Run, config, workdir: str) -> tuple[TrainState, dict]:
    """Train `run` to `config.train.num_steps`; returns (state, last validation metrics)."""
    train = config.train
    # Replicated over the mesh (state too, before restoring: a restore template's sharding
    # is the result's); multi-host checkpoints take only global arrays.
    extra = sharding.replicate(run.extra_arrays, run.mesh)
    state = sharding.replicate(run.state, run.mesh)
    iterator = run.iterators["train"]
    ckpt = Checkpointer(workdir, train.max_to_keep)
    writer = MetricWriter(workdir)
    try:
        best = np.inf
        if ckpt.latest_step() is not None:
            arrays, data_state, _ = ckpt.restore("latest", checkpoint_arrays(state, extra))
            state = state.replace(**{k: arrays[k] for k in STATE_FIELDS})
            iterator.restore(data_state)
            best = float(data_state["best"])
            print(f"resumed from step {int(state.step)} (epoch {data_state['epoch']})")
        elif run.init_from is not None:
            state = sharding.replicate(run.init_from(state), run.mesh)  # see sharding.jit_step
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2))

        def save(manager: str, step: int) -> None:
            data_state = {**iterator.state(), "best": best}
            ckpt.save(manager, step, checkpoint_arrays(state, extra), data_state, config.to_dict())

        bar = tqdm(
            total=train.num_steps,
            initial=int(state.step),
            desc=run.name,
            unit="step",
            disable=not train.progress_bar or jax.process_index() != 0,
        )
        history, t0, valid = [], time.time(), {}
        for step in range(int(state.step) + 1, train.num_steps + 1):
            state, metrics = run.step_fn(state, sharding.global_batch(next(iterator), run.mesh))
            history.append(metrics)
            bar.update(1)
            last = step == train.num_steps
            if step % train.log_every == 0 or last:
                means = jax.tree.map(lambda *x: float(np.mean(x)), *jax.device_get(history))
                means["steps_per_s"] = len(history) / (time.time() - t0)
                writer.write(step, means, "train")
                bar.set_postfix(loss=f"{means['loss']:.4f}")
                if not np.isfinite(means["loss"]):
                    bar.write(
                        f"warning: non-finite loss by step {step}; those updates were skipped"
                    )
                history, t0 = [], time.time()
            if step % train.eval_every == 0 or last:
                score, valid = run.evaluate(state)
                writer.write(step, valid, "valid")
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in valid.items()))
                if score < best:
                    best = score
                    save("best", step)
            if step % train.checkpoint_every == 0 or last:
                save("latest", step)
        bar.close()
    finally:
        writer.close()
        ckpt.close()
    return state, valid
