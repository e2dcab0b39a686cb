"""Predict with a trained or imported model: one CSV row per molecule.

  python -m experiments.predict --workdir W --input mols.sdf --out preds.csv [--on_error skip]

Columns: `name` (the record's name), then one per target in its units (`model.units`).
Input: .sdf (3D), .xyz (single or multi-frame), .smi (SMILES [name]; 3D from RDKit),
.csv (a `smiles` column) or .extxyz (frames, read with ASE). Bad records
stop with an error naming the file and the record, or are skipped and counted with
`--on_error skip`.
"""

import sys

from absl import app, flags, logging

from molspectra_jax.data.records import DataError
from molspectra_jax.files import write_csv
from molspectra_jax.inference import load
from molspectra_jax.train.checkpoint import CheckpointError

_WORKDIR = flags.DEFINE_string("workdir", None, "Fine-tuning or imported workdir.")
_INPUT = flags.DEFINE_string("input", None, "Molecules: .sdf, .xyz, .smi, .csv or .extxyz.")
_OUT = flags.DEFINE_string("out", None, "CSV to write.")
_ON_ERROR = flags.DEFINE_enum("on_error", "raise", ["raise", "skip"], "Bad records: stop or skip.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Molecules per batch.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        model = load(_WORKDIR.value, batch_size=_BATCH.value)
        result = model.predict(_INPUT.value, on_error=_ON_ERROR.value)
    except (CheckpointError, DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    rows = (
        [name] + [repr(float(result[t][i])) for t in model.targets]
        for i, name in enumerate(result["name"])
    )
    write_csv(_OUT.value, ["name", *model.targets], rows)  # units: model.units (README)
    print(f"wrote {len(result['name'])} predictions to {_OUT.value}")


def cli():
    """The console script `molspectra-predict`."""
    flags.mark_flags_as_required(["workdir", "input", "out"])
    app.run(main)


if __name__ == "__main__":
    cli()
