"""Compute IR, Raman and UV-Vis sticks for many molecules, resumably.

  python -m experiments.generate_spectra --source qm9 --limit 2000 --out spectra/
  python -m experiments.generate_spectra --source smiles --input mols.smi --out my_spectra/
  python -m experiments.generate_spectra --source qm9 --limit 100000 --out big/ \\
      --dask_scheduler tcp://scheduler:8786

Re-running the same command resumes, a larger --limit grows the store, and a run that would
make other spectra than `<out>/store.json` records is refused. Flags are absl's, spelled
with underscores: --shard_size, --dask_scheduler, --on_error.
"""

import sys

from absl import app, flags

from molspectra_jax import files
from molspectra_jax.data import sources
from molspectra_jax.data.records import DataError
from molspectra_jax.spectroscopy import components, generate, identity

_SOURCE = flags.DEFINE_enum("source", "qm9", sources.SOURCES, "Molecule source.")
_INPUT = flags.DEFINE_string("input", None, "SDF/XYZ/SMILES file (for --source sdf|xyz|smiles).")
_LIMIT = flags.DEFINE_integer("limit", None, "First N molecules of the source.")
_SEED = flags.DEFINE_integer("seed", sources.EMBEDDED_SEED, "QM9 order seed.")
_OUT = flags.DEFINE_string("out", None, "Store folder (created; resumed if present).")
_COMPONENTS = flags.DEFINE_list("components", list(components.names()), "Store components.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 100, "Molecules per shard.")
_WORKERS = flags.DEFINE_integer("workers", None, "Local processes (default: cores).")
_DASK = flags.DEFINE_string("dask_scheduler", None, "Run on this Dask scheduler instead.")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "No progress bar.")
_ON_ERROR = flags.DEFINE_enum("on_error", "raise", ["raise", "skip"], "Bad records: stop/skip.")
flags.mark_flag_as_required("out")


def run(source, out: str, *, components, shard_size, workers, dask_scheduler, progress) -> int:
    """Compute the sticks of a `sources.make_source` source into the store `out`."""
    settings = generate.GenerationSettings(
        components=tuple(c.strip() for c in components if c.strip()), shard_size=shard_size
    )
    print(f"{len(source.ids)} molecules from {source.label}; components {settings.components}")
    summary = generate.generate(
        source.ids,
        source.get,
        out,
        settings,
        source=source.identity,
        names=source.names,
        workers=workers,
        dask_scheduler=dask_scheduler,
        progress=progress,
    )
    print(summary.report(len(settings.components), source.skipped))
    return 0


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        source = sources.make_source(
            _SOURCE.value, _INPUT.value, _LIMIT.value, _SEED.value, _ON_ERROR.value
        )
        return run(
            source,
            _OUT.value,
            components=_COMPONENTS.value,
            shard_size=_SHARD_SIZE.value,
            workers=_WORKERS.value,
            dask_scheduler=_DASK.value,
            progress=not _NO_PROGRESS.value,
        )
    except (DataError, identity.StoreConflict, files.FolderInUse) as e:  # bad input, another run
        print(f"error: {e}", file=sys.stderr)
        return 1


def cli():
    """The console script `molspectra-generate-spectra`."""
    app.run(main)


if __name__ == "__main__":
    cli()
