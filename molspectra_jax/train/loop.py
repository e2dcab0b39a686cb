"""The training loop shared by pre-training and fine-tuning.

Resume from the latest checkpoint (state, RNG key, data position), run the jitted step
with a progress bar, log means of the step metrics, evaluate, keep `latest` and `best`
checkpoints. What is trained and how it is scored comes in as functions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from molspectra_jax.train import sharding
from molspectra_jax.train.checkpoint import Checkpointer
from molspectra_jax.train.metrics import MetricWriter
from molspectra_jax.train.state import TrainState

STATE_FIELDS = ("step", "params", "opt_state", "key", "batch_stats")


def checkpoint_arrays(state: TrainState, extra: dict) -> dict:
    """What a checkpoint stores: the state's arrays plus run constants (e.g. target stats)."""
    return {**{k: getattr(state, k) for k in STATE_FIELDS}, **extra}


def fit(
    *,
    state: TrainState,
    step_fn: Callable,
    train_iterator,
    mesh,
    config,
    workdir: str,
    desc: str,
    extra_arrays: dict | None = None,
    init_fn: Callable[[TrainState], TrainState] | None = None,
    evaluate_fn: Callable[[TrainState], tuple[float, dict]] | None = None,
) -> tuple[TrainState, Checkpointer, MetricWriter]:
    """Train `state` to `config.train.num_steps`; returns (state, checkpointer, writer).

    `init_fn` runs only on a fresh start (e.g. loading a pre-trained encoder), never on
    resume. `evaluate_fn(state) -> (score, metrics)`: lower score is better; the best
    state is kept in `checkpoints/best`.
    """
    train = config.train
    # Replicated over the mesh (state too, before restoring: a restore template's sharding
    # is the result's); multi-host checkpoints take only global arrays.
    extra = sharding.replicate(extra_arrays or {}, mesh)
    ckpt = Checkpointer(workdir, train.max_to_keep)
    best = np.inf
    state = sharding.replicate(state, mesh)
    if ckpt.latest_step() is not None:
        arrays, data_state, _ = ckpt.restore("latest", checkpoint_arrays(state, extra))
        state = state.replace(**{k: arrays[k] for k in STATE_FIELDS})
        train_iterator.restore(data_state)
        best = float(data_state["best"])
        print(f"resumed from step {int(state.step)} (epoch {data_state['epoch']})")
    elif init_fn is not None:
        state = sharding.replicate(init_fn(state), mesh)  # see sharding.jit_step

    writer = MetricWriter(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    def save(manager: str, step: int) -> None:
        data_state = {**train_iterator.state(), "best": best}
        ckpt.save(manager, step, checkpoint_arrays(state, extra), data_state, config.to_dict())

    bar = tqdm(
        total=train.num_steps, initial=int(state.step), desc=desc, unit="step",
        disable=not train.progress_bar or jax.process_index() != 0,
    )  # fmt: skip
    history, t0 = [], time.time()
    for step in range(int(state.step) + 1, train.num_steps + 1):
        state, metrics = step_fn(state, sharding.global_batch(next(train_iterator), mesh))
        history.append(metrics)
        bar.update(1)
        last = step == train.num_steps
        if step % train.log_every == 0 or last:
            means = jax.tree.map(lambda *x: float(np.mean(x)), *jax.device_get(history))
            means["steps_per_s"] = len(history) / (time.time() - t0)
            writer.write(step, means, "train")
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            if not np.isfinite(means["loss"]):
                bar.write(f"warning: non-finite loss by step {step}; those updates were skipped")
            history, t0 = [], time.time()
        if evaluate_fn is not None and (step % train.eval_every == 0 or last):
            score, metrics = evaluate_fn(state)
            writer.write(step, metrics, "valid")
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            if score < best:
                best = score
                save("best", step)
        if step % train.checkpoint_every == 0 or last:
            save("latest", step)
    bar.close()
    return state, ckpt, writer
