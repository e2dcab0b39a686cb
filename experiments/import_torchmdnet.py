"""Import a torchmd-net checkpoint (upstream 3.x or the MolSpectra / Coord fork).

  python -m experiments.import_torchmdnet --checkpoint model.ckpt --workdir out/ [--target gap]

Writes a workdir that `molspectra_jax.load`, `experiments.predict` and fine-tuning
(`--config.init_from=out/`) read: config (the translated hyper-parameters), encoder,
output head, standardization (mean/std) and Atomref prior. Needs torch to read the
`.ckpt` (`pip install "molspectra-jax[torchmdnet]"`); nothing else does.
"""

import sys

import jax
import numpy as np
from absl import app, flags, logging

from molspectra_jax.configs import finetune_qm9
from molspectra_jax.interop import torchmdnet
from molspectra_jax.train.checkpoint import CheckpointError

from .torchmdnet_workdir import check_layout, imported_config, write_workdir

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "torchmd-net .ckpt file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder to write (must not hold a checkpoint).")
_TARGET = flags.DEFINE_string("target", "", "Name of the predicted quantity (default y).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        hparams, state = torchmdnet.read_checkpoint(_CHECKPOINT.value)
        target = _TARGET.value or ("energy" if hparams.get("derivative") else "y")
        config, params, stats = imported_config(hparams, state, target, _CHECKPOINT.value)
        check_layout(config, params)
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


def cli():
    """The console script `molspectra-import-torchmdnet`."""
    flags.mark_flags_as_required(["checkpoint", "workdir"])
    app.run(main)


if __name__ == "__main__":
    cli()
