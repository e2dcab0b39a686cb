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


def check_finite(tree: Any, what: str) -> None:
    """Raise before a NaN/Inf ever reaches disk (host-side: state is replicated)."""
    bad = [
        jax.tree_util.keystr(path)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(np.asarray(x)).all()
    ]
    if bad:
        raise FloatingPointError(f"refusing to checkpoint {what}: non-finite values in {bad[:5]}")


class Checkpointer:
    """`<workdir>/checkpoints/{latest,best}`: save, restore latest, restore best."""

    def __init__(self, workdir: str, max_to_keep: int = 2):
        root = os.path.join(workdir, "checkpoints")
        self.latest = _manager(os.path.join(root, "latest"), max_to_keep)
        self.best = _manager(os.path.join(root, "best"), 1)

    def save(self, manager: str, step: int, arrays: dict, data_state: dict, config: dict) -> None:
        check_finite(arrays, f"step {step}")
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
        """(arrays, data_state, config) of `step` (default newest), shaped like the template."""
        restored = _restore(
            getattr(self, manager),
            step,
            arrays=ocp.args.StandardRestore(abstract_arrays),
            data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
        )
        return restored.arrays, restored.data, restored.config

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
