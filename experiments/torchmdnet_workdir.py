"""A torchmd-net checkpoint's hyper-parameters and weights -> a molspectra-jax workdir
(the library half of `experiments.import_torchmdnet`; no flags, importable anywhere)."""

import json
import os

import jax
import numpy as np

from molspectra_jax.configs import finetune_qm9
from molspectra_jax.elements import ELEMENT_SYMBOLS
from molspectra_jax.files import atomic_open
from molspectra_jax.interop import torchmdnet
from molspectra_jax.train.checkpoint import Checkpointer, CheckpointError


def imported_config(hparams: dict, state: dict, target: str, source: str = ""):
    """(fine-tuning ConfigDict describing the imported model, params, target stats)."""
    model, kind, reduce_op, params, stats = torchmdnet.convert(hparams, state)
    c = finetune_qm9.get_config()
    c.model.update(model)
    c.heads.update(output=kind, reduce_op=reduce_op, dipole=False, spatial_extent=False)
    c.heads.atomref = ()
    c.target = target
    c.targets = (target,)
    c.units = {target: ""}  # torchmd-net does not record its dataset's units
    c.data.elements = tuple(range(1, min(model["max_z"], len(ELEMENT_SYMBOLS))))
    if hparams.get("derivative"):
        c.loss.update(energy_weight=0.2, force_weight=0.8)  # an energy: forces = -dE/dR
    if "noise_head" in params:
        c.loss.noise_weight = 0.1  # the fork's noisy-nodes head, kept
    c.imported_from = os.path.abspath(source) if source else ""
    return c, params, stats


def check_layout(config, params) -> None:
    """The converted tree must be exactly what our model initialises (an importer bug
    otherwise, never a silent partial load)."""
    from molspectra_jax.data.batching import Budget, candidate_edges, collate
    from molspectra_jax.data.records import MoleculeRecord, from_records
    from molspectra_jax.train.finetune import build_model

    record = MoleculeRecord(
        "H2O",
        np.array([8, 1, 1]),
        np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], np.float32),
    )
    dataset = from_records([record])
    edges = candidate_edges(dataset, config.model.cutoff)
    graph = collate(dataset, edges, [np.arange(1)], Budget(1, 2, 4, 8)).graph
    model = build_model(config, tuple(config.targets))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.tree.map(lambda x: x[0], graph))
    expected = jax.tree.map(lambda x: x.shape, shapes["params"])
    got = jax.tree.map(np.shape, params)
    if expected != got:
        raise torchmdnet.UnsupportedCheckpoint(
            f"converted parameters do not match the model: {jax.tree.structure(expected)} vs "
            f"{jax.tree.structure(got)}"
        )


def write_workdir(workdir: str, config, params, stats) -> None:
    """Checkpoint (step 0, `latest`) + config.json; refuses a folder holding a checkpoint."""
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise CheckpointError(f"{workdir} already holds checkpoints: import into a new folder")
    os.makedirs(workdir, exist_ok=True)
    arrays = {
        "params": params,
        "stats": {k: np.asarray(v, np.float32) for k, v in stats.items()},
    }
    checkpointer = Checkpointer(workdir)
    try:
        checkpointer.save("latest", 0, arrays, {}, config.to_dict())
    finally:
        checkpointer.close()
    with atomic_open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=str)
