"""What `experiments.pretrain` and `experiments.finetune` share: the `--config` and
`--workdir` flags, one-line errors, and the call `train_and_evaluate(config, workdir)`."""

import os
import sys
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from molspectra_jax.data.records import DataError
from molspectra_jax.train.checkpoint import CheckpointError
from molspectra_jax.train.loop import RunError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), or a packaged config's name (finetune_md17:cpu)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, checkpoints.")
# Errors whose message says what is wrong and what to do: printed alone, no traceback.
_EXPLAINED = (CheckpointError, DataError, RunError, FloatingPointError)


def config_file(value: str) -> str:
    """A `--config` value ("file.py" or "file.py:variant") with a file that does not exist
    here read as a packaged config's name: `finetune_md17:cpu` or `configs/finetune_md17.py`
    outside a clone -> the installed `molspectra_jax/configs/finetune_md17.py:cpu`."""
    path, colon, variant = value.partition(":")
    if os.path.exists(path):
        return value
    from molspectra_jax import configs

    name = os.path.splitext(os.path.basename(path))[0]
    packaged = os.path.join(os.path.dirname(configs.__file__), f"{name}.py")
    return packaged + colon + variant if os.path.exists(packaged) else value


def _packaged_configs(argv: list[str]) -> list[str]:
    """`argv` with every --config value through `config_file`."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + config_file(arg.removeprefix("--config="))
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = config_file(out[i + 1])
    return out


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with `--config` also naming a packaged config (`config_file`), and a
    config override naming a field that does not exist (an AttributeError deep in
    ml_collections) reported as one line."""
    argv = _packaged_configs(argv)
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
