"""Redraw a fine-tuning workdir's figures: learning curves and test parity plots.

  python -m experiments.figures --workdir workdirs/gap

Writes `<workdir>/figures/learning_curves.png` (from `metrics.jsonl`, also mid-run)
and `parity.png` (from `test_predictions.npz`, written when fine-tuning ends).
"""

import sys

from absl import app, flags

from molspectra_jax import figures

_WORKDIR = flags.DEFINE_string("workdir", None, "A fine-tuning workdir.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        written = figures.draw(_WORKDIR.value)
    except FileNotFoundError as e:
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
