"""What `experiments.pretrain` and `experiments.finetune` share: the `--config` and
`--workdir` flags, one-line errors, and the call `train_and_evaluate(config, workdir)`."""

import sys
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from molspectra_jax.data.records import DataError
from molspectra_jax.train.checkpoint import CheckpointError
from molspectra_jax.train.loop import RunError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, checkpoints.")
# Errors whose message says what is wrong and what to do: printed alone, no traceback.
_EXPLAINED = (CheckpointError, DataError, RunError, FloatingPointError)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a config override naming a field that does not exist (an
    AttributeError deep in ml_collections) reported as one line."""
    try:
        return flags.FLAGS(argv)
    except AttributeError as e:
        field = str(e).strip("\"'")
        overrides = " ".join(a for a in argv if a.startswith("--config."))
        sys.exit(f"error: the config has no field {field!r} (overrides: {overrides})")
    except flags.Error as e:
        sys.exit(f"error: {e}\nPass --help for the flags.")


def run(train_and_evaluate: Callable) -> None:
    """Parse the flags, then `train_and_evaluate(config, workdir)`."""
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        try:
            train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        except _EXPLAINED as e:
            sys.exit(f"error: {e}")

    app.run(main, flags_parser=_parse_flags)
