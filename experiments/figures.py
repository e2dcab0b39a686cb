"""Redraw a workdir's figures.

  python -m experiments.figures --workdir workdirs/gap       # fine-tuning
  python -m experiments.figures --workdir workdirs/stage2    # stage-2 pre-training

Fine-tuning: `<workdir>/figures/learning_curves.png` (from `metrics.jsonl`, also
mid-run) and `parity.png` (from `test_predictions.npz`, written when fine-tuning ends).
Stage-2 pre-training (the paper's Figure A2): `attention.png` (SpecFormer attention
maps of three heads) and `tsne.png` (held-out spectrum embeddings coloured by gap).
"""

import json
import os
import sys

from absl import app, flags, logging

from molspectra_jax import figures, pretraining_figures
from molspectra_jax.train.checkpoint import CheckpointError

_WORKDIR = flags.DEFINE_string("workdir", None, "A fine-tuning or stage-2 pre-training workdir.")


def is_stage2(workdir: str) -> bool:
    """Whether `workdir` is a stage-2 pre-training run (its config.json says so)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return json.load(f).get("stage") == 2


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        if is_stage2(_WORKDIR.value):
            written = pretraining_figures.draw(_WORKDIR.value)
        else:
            written = figures.draw(_WORKDIR.value)
    except (FileNotFoundError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    if not written:
        sys.exit(f"error: {_WORKDIR.value}: nothing to draw yet (no MAE logged)")
    for path in written:
        print(f"wrote {path}")


def cli():
    """The console script `molspectra-figures`."""
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    cli()
