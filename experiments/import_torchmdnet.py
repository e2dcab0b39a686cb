"""Import a torchmd-net checkpoint (upstream 3.x or the MolSpectra / Coord fork).

  python -m experiments.import_torchmdnet --checkpoint model.ckpt --workdir out/ [--target gap]

Writes a workdir that `molspectra_jax.load`, `experiments.predict` and fine-tuning
(`--config.init_from=out/`) read: config (the translated hyper-parameters), encoder,
output head, standardization (mean/std) and Atomref prior. Needs torch to read the
`.ckpt` (`pip install "molspectra-jax[torchmdnet]"`); nothing else does.
"""

import json
import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from configs import finetune_qm9
from molspectra_jax.elements import ELEMENT_SYMBOLS
from molspectra_jax.files import atomic_open
from molspectra_jax.interop import torchmdnet
from molspectra_jax.train.checkpoint import Checkpointer, CheckpointError

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "torchmd-net .ckpt file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder to write (must not hold a checkpoint).")
_TARGET = flags.DEFINE_string("target", "", "Name of the predicted quantity (default y).")


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


def _check_layout(config, params) -> None:
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        hparams, state = torchmdnet.read_checkpoint(_CHECKPOINT.value)
        target = _TARGET.value or ("energy" if hparams.get("derivative") else "y")
        config, params, stats = imported_config(hparams, state, target, _CHECKPOINT.value)
        _check_layout(config, params)
        write_workdir(_WORKDIR.value, config, params, stats)
    except (torchmdnet.UnsupportedCheckpoint, CheckpointError, ImportError) as e:
        sys.exit(f"error: {_CHECKPOINT.value}: {e}")
    n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    default, workdir = finetune_qm9.get_config().model, _WORKDIR.value
    overrides = " ".join(
        f"--config.model.{k}={v}" for k, v in config.model.items() if default.get(k) != v
    )
    print(f"imported {n:,} parameters ({config.heads.output} head, {target!r}) into {workdir}")
    print(
        f"predict:   python -m experiments.predict --workdir {workdir} --input mols.sdf --out p.csv"
    )
    print(
        "fine-tune: python -m experiments.finetune --config configs/finetune_qm9.py "
        f"--config.init_from={workdir} {overrides} --workdir <new folder>"
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["checkpoint", "workdir"])
    app.run(main)
