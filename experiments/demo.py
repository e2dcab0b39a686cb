"""The README's main job: pre-train on the shipped spectra, then fine-tune on QM9.

  python -m experiments.demo [--workdir workdirs/demo]

Ends with a table of test MAE per QM9 target (paper units). Re-running resumes both
stages from their checkpoints.
"""

import os

from absl import app, flags, logging

from molspectra_jax.configs import demo
from molspectra_jax.train import finetune, pretrain

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Run folder (two sub-folders).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    pretrain_dir = os.path.join(_WORKDIR.value, "pretrain")
    pretrain.train_and_evaluate(demo.get_config("pretrain"), pretrain_dir)
    config = demo.get_config()
    config.init_from = pretrain_dir
    finetune.train_and_evaluate(config, os.path.join(_WORKDIR.value, "finetune"))


def cli():
    """The console script `molspectra-demo`."""
    app.run(main)


if __name__ == "__main__":
    cli()
