"""What `experiments.pretrain` and `experiments.finetune` share: the `--config` and
`--workdir` flags and the call `train_and_evaluate(config, workdir)` of their task."""

from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, checkpoints.")


def run(train_and_evaluate: Callable) -> None:
    """Parse the flags, then `train_and_evaluate(config, workdir)`."""
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)

    app.run(main)
