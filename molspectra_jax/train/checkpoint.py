"""Orbax checkpoints: latest (resumable) and best-by-validation, each carrying its config.

A checkpoint holds the TrainState arrays (step, params, opt_state, key), extra arrays
(e.g. target statistics), the data iterator position and the run's config. Orbax
writes into a temporary folder and renames it when complete, so a run killed mid-save
leaves the previous checkpoint intact (the partial folder is ignored and cleaned up).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from molspectra_jax.train import sharding


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the model."""


def _manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
    )
    handlers = {
        "arrays": ocp.StandardCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=handlers
    )


def check_finite(tree: Any, what: str, max_abs: float = np.inf) -> None:
    """Raise before a NaN/Inf (or a value beyond `max_abs`: a diverged run) reaches disk.

    Host-side: the state is replicated.
    """
    bad, big = [], []
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            continue
        if not np.isfinite(x).all():
            bad.append(jax.tree_util.keystr(path))
        elif x.size and np.abs(x).max() > max_abs:
            big.append(f"{jax.tree_util.keystr(path)} (max |x| {np.abs(x).max():.3g})")
    if bad:
        raise FloatingPointError(f"refusing to checkpoint {what}: non-finite values in {bad[:5]}")
    if big:
        raise FloatingPointError(
            f"refusing to checkpoint {what}: parameters beyond train.max_param_abs={max_abs:g} "
            f"(diverged): {big[:5]}"
        )


class Checkpointer:
    """`<workdir>/checkpoints/{latest,best}`: save, restore latest, restore best."""

    def __init__(self, workdir: str, max_to_keep: int = 2):
        root = os.path.join(workdir, "checkpoints")
        self.latest = _manager(os.path.join(root, "latest"), max_to_keep)
        self.best = _manager(os.path.join(root, "best"), 1)

    def save(
        self,
        manager: str,
        step: int,
        arrays: dict,
        data_state: dict,
        config: dict,
        max_param_abs: float = np.inf,
    ) -> None:
        """Write step `step`; refuses non-finite arrays and params beyond `max_param_abs`."""
        others = {k: v for k, v in arrays.items() if k != "params"}
        check_finite(others, f"step {step}")
        check_finite(arrays.get("params", {}), f"step {step}", max_param_abs)
        mgr = getattr(self, manager)
        mgr.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
        )
        mgr.wait_until_finished()

    def latest_step(self, manager: str = "latest") -> int | None:
        return getattr(self, manager).latest_step()

    def restore(self, manager: str, abstract_arrays: dict, step: int | None = None):
        """(arrays, data_state, config) of `step`, shaped like the template.

        Without `step`, the newest readable one: an unreadable newer step (a torn or
        corrupted write) is skipped with a warning naming it, and the next older kept
        step is tried.
        """
        mgr = getattr(self, manager)
        steps = [step] if step is not None else sorted(mgr.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {mgr.directory}")
        errors = []
        for candidate in steps:
            try:
                restored = _restore(
                    mgr,
                    candidate,
                    arrays=ocp.args.StandardRestore(abstract_arrays),
                    data=ocp.args.JsonRestore(),
                    config=ocp.args.JsonRestore(),
                )
            except CheckpointError as e:
                errors.append(str(e))
                continue
            for error in errors:
                print(f"warning: skipped an unreadable checkpoint: {error}; using step {candidate}")
            return restored.arrays, restored.data, restored.config
        raise CheckpointError("; ".join(errors))

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def read_checkpoint_arrays(directory: str, step: int | None = None) -> tuple[dict, dict]:
    """(arrays, config) of a checkpoint folder without a model template (hand-off).

    Arrays come back replicated over this run's devices, whatever topology wrote them
    (e.g. pre-trained on a multi-host pod, fine-tuned on one GPU).
    """
    mgr = _manager(directory, 1)
    try:
        step = _resolve_step(mgr, step)
        replicated = sharding.replicated(sharding.make_mesh())
        try:
            metadata = mgr.item_metadata(step)["arrays"]
            template = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated), metadata
            )
        except Exception as e:  # orbax raises many types; name the folder and the cause
            raise CheckpointError(
                f"cannot read checkpoint {mgr.directory}/{step}: {type(e).__name__}: {e}"
            ) from e
        restored = _restore(
            mgr, step, arrays=ocp.args.StandardRestore(template), config=ocp.args.JsonRestore()
        )
    finally:
        mgr.close()
    return restored.arrays, restored.config


def _restore(mgr: ocp.CheckpointManager, step: int | None, **items):
    """Restore `items` of `step` (default newest); every failure names folder and step."""
    step = _resolve_step(mgr, step)
    try:
        return mgr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types; name the folder and the cause
        raise CheckpointError(
            f"cannot restore checkpoint {mgr.directory}/{step}: {type(e).__name__}: {e}"
        ) from e


def _resolve_step(mgr: ocp.CheckpointManager, step: int | None) -> int:
    """`step`, or the newest one; CheckpointError naming the folder if there is none."""
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {mgr.directory}")
    return step
