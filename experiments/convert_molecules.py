"""Convert a large SDF (PCQM4Mv2's `pcqm4m-v2-train.sdf`, 3.4M molecules) once into a
memory-mapped molecule store that pre-training opens in seconds.

  python -m experiments.convert_molecules --input pcqm4m-v2-train.sdf --out data/pcqm4mv2
  python -m experiments.pretrain --config configs/pretrain_qm9s.py \\
      --config.data.source=molstore:data/pcqm4mv2 ...

Heavy-atom records get RDKit's hydrogens (`AddHs(addCoords=True)`), as stage 1 reads SDF
files; records that cannot be modelled are skipped, counted and listed in
`<out>/skipped.txt`. A killed conversion resumes where it stopped when rerun with the
same flags. Flags are absl's, spelled with underscores: --chunk_size.
"""

import os
import sys

from absl import app, flags

from molspectra_jax import files
from molspectra_jax.data import molstore
from molspectra_jax.data.records import DataError

_INPUT = flags.DEFINE_string("input", None, "The SDF file.")
_OUT = flags.DEFINE_string("out", None, "Folder for the store (created).")
_CHUNK = flags.DEFINE_integer("chunk_size", 10_000, "Records per part (the unit of resuming).")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Parsing processes (0: inline).")
_LIMIT = flags.DEFINE_integer("limit", None, "Convert only the first N records.")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "No progress bar (logs, CI).")
flags.mark_flags_as_required(["input", "out"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CHUNK.value < 1 or _WORKERS.value < 0:
        print("error: --chunk_size must be >= 1 and --workers >= 0", file=sys.stderr)
        return 1
    try:
        summary = molstore.convert_sdf(
            _INPUT.value,
            _OUT.value,
            chunk_size=_CHUNK.value,
            workers=_WORKERS.value,
            limit=_LIMIT.value,
            progress=not _NO_PROGRESS.value,
        )
    except (DataError, files.FolderInUse) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    resumed = f", {summary.chunks_resumed} from a previous run" if summary.chunks_resumed else ""
    print(
        f"{summary.molecules} molecules -> {_OUT.value} ({summary.skipped} records skipped, "
        f"listed in {os.path.join(_OUT.value, 'skipped.txt')}; {summary.chunks_parsed} chunks "
        f"parsed{resumed}; {summary.seconds:.0f} s)"
    )
    print(f"pre-train on it with --config.data.source=molstore:{_OUT.value}")
    return 0


def cli():
    """The console script `molspectra-convert-molecules`."""
    app.run(main)


if __name__ == "__main__":
    cli()
