"""Fine-tune on QM9 properties.

  python -m experiments.finetune --config configs/finetune_qm9.py --config.target=gap \
      --workdir workdirs/gap
"""

from absl import app, flags, logging
from ml_collections import config_flags

from molspectra_jax.train.finetune import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
