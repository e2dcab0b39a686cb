"""Pre-train the encoder (stage 1: denoising; stage 2: + spectra).

python -m experiments.pretrain --config configs/pretrain_qm9s.py --workdir workdirs/pt
"""

from absl import app, flags, logging
from ml_collections import config_flags

from molspectra_jax.train.pretrain import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
