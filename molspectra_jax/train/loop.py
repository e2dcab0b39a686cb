"""The one runner: a `Run` (what a task trains, on what, how it is scored) and `fit`.

`pretrain.setup` and `finetune.setup` each build a `Run`; `fit` resumes it from the
latest readable checkpoint (state, RNG key, data position), runs the jitted step with a
progress bar, logs means of the step metrics, evaluates, and keeps `latest` and `best`
checkpoints. It owns its checkpointer and metric writer and closes them.

A run knows what it is: resuming compares the checkpoint's config and run constants
(target statistics) with this run's and refuses a change of what is trained or how; a
run whose gradients stay non-finite for `optim.max_bad_steps` steps stops at once, and
diverged parameters never reach a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from molspectra_jax import files
from molspectra_jax.data.prefetch import Prefetcher
from molspectra_jax.data.workers import ParallelBatches
from molspectra_jax.train import sharding
from molspectra_jax.train.checkpoint import Checkpointer, CheckpointError
from molspectra_jax.train.metrics import MetricWriter
from molspectra_jax.train.optim import ema_params, reset_bad_steps
from molspectra_jax.train.state import TrainState

STATE_FIELDS = ("step", "params", "opt_state", "key", "batch_stats")
# Config fields a resumed run may change: how long and how it reports, where it runs.
RESUMABLE = (
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.max_to_keep",
    "train.progress_bar",
    "train.allow_changes",
    "distributed.",
    "data.cache_dir",
    "data.prefetch",
    "data.workers",  # batches are the same for any worker count
    "init_from",  # used on a fresh start only
)
_MISSING = "<absent>"
# Fields added after 0.1.0, with the value that does what a run without them did: a
# checkpoint that lacks one resumes when the run keeps that value.
ADDED_FIELDS = {
    "data.units": "",
    "optim.schedule": "cosine",
    "optim.restart_period": 100_000,
    "optim.restart_mult": 2,
    "optim.plateau_factor": 0.8,
    "optim.plateau_patience": 30,
    "optim.plateau_window": 100,
    "optim.min_lr": 1e-7,
    "optim.ema_decay": 0.0,
    "train.early_stopping": 0,
    "data.with_spectra": False,
    "data.spectra": "embedded",
    "spectra_aux.mpr": 0.0,
    "spectra_aux.contrast": 0.0,
    "spectra_aux.temperature": 0.07,
    "spectra_aux.symmetric": False,
}
# Sections added later that are read only when a field above is switched on (SpecFormer
# in fine-tuning: spectra_aux weights > 0): missing from a checkpoint, any value resumes.
ADDED_SECTIONS = ("specformer.",)
_ADVICE = (
    "Lower optim.learning_rate or set optim.clip_norm, then re-run: it resumes from that "
    "checkpoint (add --config.train.allow_changes=optim to change this run's optimizer)"
)


class RunError(RuntimeError):
    """A run cannot go on as asked: it diverged, its workdir is taken, or resuming would
    silently change it into another run. The message says why and what to do."""


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
      facts: what the run derived from its config and data (fine-tuning: the targets and
        their units), saved in every checkpoint's config under these top-level keys.
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
    facts: dict = dataclasses.field(default_factory=dict)
    task: Any = None

    @functools.cached_property
    def step_fn(self) -> Callable:
        """`train_step` jitted once for the mesh, donating the state."""
        return sharding.jit_step(self.train_step, self.mesh)


def start(config, workdir: str) -> Mesh:
    """Check the loop settings, initialise multi-host (if configured), make the workdir
    and the device mesh. Runs before anything is compiled."""
    for field in ("num_steps", "log_every", "eval_every", "checkpoint_every", "max_to_keep"):
        if not isinstance(config.train[field], int) or config.train[field] < 1:
            raise ValueError(f"train.{field}={config.train[field]!r} must be an integer >= 1")
    sharding.initialize_distributed(**config.distributed)
    os.makedirs(workdir, exist_ok=True)
    return sharding.make_mesh()


def checkpoint_arrays(state: TrainState, extra: dict) -> dict:
    """What a checkpoint stores: the state's arrays plus run constants (e.g. target stats)."""
    return {**{k: getattr(state, k) for k in STATE_FIELDS}, **extra}


def restore_best(run: Run, workdir: str) -> tuple[dict, str]:
    """(arrays, which) of the best-validation checkpoint, or of `latest` (saying so) when
    `best` is missing or unreadable."""
    state = sharding.replicate(run.state, run.mesh)
    template = checkpoint_arrays(state, sharding.replicate(run.extra_arrays, run.mesh))
    ckpt = Checkpointer(workdir, 1)
    try:
        try:
            return ckpt.restore("best", template)[0], "best"
        except CheckpointError as e:
            print(f"warning: {e}; reporting the latest checkpoint instead")
            return ckpt.restore("latest", template)[0], "latest (best unreadable)"
    finally:
        ckpt.close()


def config_changes(saved: dict, current: dict) -> dict[str, tuple]:
    """{"section.field": (saved value, current value)} of every field that differs."""

    def flat(tree, prefix=""):
        out = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(saved), flat(json.loads(json.dumps(current)))  # tuples -> lists, as saved
    keys = sorted(set(a) | set(b))
    return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in keys if a.get(k) != b.get(k)}


def check_resumable(saved: dict, config, directory: str, facts: dict | None = None) -> None:
    """Refuse to resume a run whose data, split, model, loss or optimizer changed (or
    whose derived `facts` did; a checkpoint from before they were saved has none)."""
    allowed = [a.strip() for a in config.train.allow_changes.split(",") if a.strip()]
    facts = facts or {}
    changes = config_changes({**facts, **saved}, {**config.to_dict(), **facts})
    changes = {
        k: (a, b)
        for k, (a, b) in changes.items()
        if not (a == _MISSING and (ADDED_FIELDS.get(k, a) == b or k.startswith(ADDED_SECTIONS)))
    }
    refused = {
        k: v for k, v in changes.items() if not any(k.startswith(p) for p in (*RESUMABLE, *allowed))
    }
    if refused:
        diff = "; ".join(
            f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in refused.items()
        )
        raise RunError(
            f"{directory} holds another run: {diff}. Use a new --workdir, or the checkpoint's "
            f"values, or accept the change with --config.train.allow_changes={','.join(refused)}"
        )
    for k, (a, b) in changes.items():
        print(f"resuming with {k} changed: {a!r} -> {b!r}")


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Process 0 holds `<workdir>/.lock` for the block: a second run on the same workdir
    stops at once with a `RunError` naming the first (`files.exclusive_folder`)."""
    if jax.process_index() != 0:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(files.exclusive_folder(workdir))
        except files.FolderInUse as e:
            raise RunError(f"{e}; wait for it to finish or use another --workdir") from None
        yield


def _restore_latest(run: Run, ckpt: Checkpointer, state: TrainState, extra: dict, config):
    """(state, data_state) of the newest readable `latest` step, after checking that it
    is this run (config and run constants); `state` and `extra` are the templates."""
    arrays, data_state, saved_config = ckpt.restore("latest", checkpoint_arrays(state, extra))
    check_resumable(saved_config, config, ckpt.latest.directory, run.facts)
    for name, current in run.extra_arrays.items():
        for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(arrays[name]), jax.tree.leaves(current), strict=True
        ):
            if not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=0):
                raise RunError(
                    f"{ckpt.latest.directory}: run constant {name}{jax.tree_util.keystr(path)} "
                    "differs from this run's (the data changed since the checkpoint); use a "
                    "new --workdir"
                )
    state = state.replace(**{k: arrays[k] for k in STATE_FIELDS})
    # A resumed run starts with a fresh count of non-finite steps.
    state = state.replace(opt_state=reset_bad_steps(state.opt_state))
    return state, data_state


def fit(run: Run, config, workdir: str) -> tuple[TrainState, dict]:
    """Train `run` to `config.train.num_steps`; returns (state, last validation metrics).

    The caller holds the workdir's `workdir_lock` (the tasks' `train_and_evaluate` do).
    """
    train = config.train
    # Replicated over the mesh (state too, before restoring: a restore template's sharding
    # is the result's); multi-host checkpoints take only global arrays.
    extra = sharding.replicate(run.extra_arrays, run.mesh)
    state = sharding.replicate(run.state, run.mesh)
    iterator = run.iterators["train"]
    ckpt = Checkpointer(workdir, train.max_to_keep)
    writer = feed = None
    collated = iterator
    # What evaluation scores and `best` keeps: the weights, or their EMA (optim.ema_decay).
    if config.optim.get("ema_decay", 0.0) > 0:
        scored = lambda s: s.replace(params=ema_params(s.opt_state))  # noqa: E731
    else:
        scored = lambda s: s  # noqa: E731
    patience = config.train.get("early_stopping", 0)
    try:
        best, best_step, stopped, resumed_from, last_saved = np.inf, 0, 0, None, None
        if ckpt.latest_step() is not None:
            state, data_state = _restore_latest(run, ckpt, state, extra, config)
            iterator.restore(data_state)
            best, resumed_from = float(data_state["best"]), int(state.step)
            # (a checkpoint from before early stopping: patience counts from here)
            best_step = data_state.get("best_step", resumed_from)
            stopped = data_state.get("stopped", 0)
            last_saved = resumed_from
            print(f"resumed from step {resumed_from} (epoch {data_state['epoch']})")
        elif run.init_from is not None:
            state = sharding.replicate(run.init_from(state), run.mesh)  # see sharding.jit_step
        writer = MetricWriter(workdir, resumed_from=resumed_from)
        writer.hyperparameters(config_changes({}, config.to_dict()))
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2))

        # Batches assembled (by `data.workers` processes, or in the prefetch thread) and
        # sent to the devices while the step runs; `feed.state()` is the position of the
        # batch last consumed, the one a checkpoint records.
        if config.data.workers:
            collated = ParallelBatches(iterator, config.data.workers)
        feed = Prefetcher(
            collated,
            config.data.prefetch,
            transform=lambda batch: sharding.global_batch(batch, run.mesh),
        )

        def save(manager: str, step: int) -> None:
            data_state = {**feed.state(), "best": best, "best_step": best_step, "stopped": stopped}
            arrays = checkpoint_arrays(scored(state) if manager == "best" else state, extra)
            try:
                saved = {**config.to_dict(), **run.facts}
                ckpt.save(manager, step, arrays, data_state, saved, train.max_param_abs)
            except FloatingPointError as e:
                saved = "none yet" if last_saved is None else f"step {last_saved}, intact"
                raise RunError(f"stopping: {e}. Last checkpoint: {saved}. {_ADVICE}") from e

        bar = tqdm(
            total=train.num_steps,
            initial=int(state.step),
            desc=run.name,
            unit="step",
            disable=not train.progress_bar or jax.process_index() != 0,
        )
        history, t0, valid, previous = [], time.time(), {}, None
        if stopped:
            print(f"stopped early at step {stopped} (train.early_stopping): nothing to resume")
        for step in range(int(state.step) + 1, (stopped or train.num_steps) + 1):
            state, metrics = run.step_fn(state, next(feed))
            # The previous step's count, read while this one runs: the device stays busy.
            _check_divergence(previous, step - 1, config.optim.max_bad_steps, last_saved)
            previous = metrics
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
                _check_divergence(metrics, step, config.optim.max_bad_steps, last_saved)
                score, valid = run.evaluate(scored(state))
                writer.write(step, valid, "valid")
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in valid.items()))
                if score < best:
                    best, best_step = score, step
                    save("best", step)
                elif patience and step - best_step >= patience * train.eval_every:
                    stopped = step
                    bar.write(
                        f"stopping early at step {step}: no better validation score since "
                        f"step {best_step} ({patience} evaluations, train.early_stopping)"
                    )
            if step % train.checkpoint_every == 0 or last or stopped:
                _check_divergence(metrics, step, config.optim.max_bad_steps, last_saved)
                save("latest", step)
                last_saved = step
            if stopped:
                break
        _check_divergence(previous, int(state.step), config.optim.max_bad_steps, last_saved)
        bar.close()
    finally:
        if feed is not None:
            feed.close()
        if collated is not iterator:
            collated.close()
        if writer is not None:
            writer.close()
        ckpt.close()
    return state, valid


def _check_divergence(metrics, step: int, max_bad_steps: int, last_saved) -> None:
    """Stop the run once `max_bad_steps` consecutive steps had non-finite gradients."""
    if metrics is None:
        return
    bad = int(metrics["bad_steps"])
    if bad < max_bad_steps:
        return
    saved = "none yet" if last_saved is None else f"step {last_saved}, intact"
    raise RunError(
        f"stopping at step {step}: {bad} consecutive steps with non-finite gradients (loss "
        f"{float(metrics['loss']):.4g}); their updates were skipped, so the parameters are "
        f"those of step {step - bad}. Last checkpoint: {saved}. {_ADVICE}"
    )
