"""Compute IR, Raman and UV-Vis sticks for many molecules, resumably.

  python -m experiments.generate_spectra --source qm9 --limit 2000 --out spectra/
  python -m experiments.generate_spectra --source smiles --input mols.smi --out my_spectra/
  python -m experiments.generate_spectra --source qm9 --limit 100000 --out big/ \\
      --dask-scheduler tcp://scheduler:8786

Re-running the same command resumes: finished molecules are skipped.
"""

import argparse
import json
import os
import sys

from molspectra_jax.data import sources
from molspectra_jax.spectroscopy import generate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source", choices=sources.SOURCES, default="qm9")
    p.add_argument("--input", help="SDF/XYZ/SMILES file (for --source sdf|xyz|smiles)")
    p.add_argument("--limit", type=int, default=None, help="first N molecules of the source")
    p.add_argument("--seed", type=int, default=sources.EMBEDDED_SEED, help="QM9 order seed")
    p.add_argument("--out", required=True, help="store folder (created; resumed if present)")
    p.add_argument("--components", default="vib,uv", help="comma list of: vib, uv")
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="local processes (default: cores)")
    p.add_argument("--dask-scheduler", default=None, help="run on this Dask scheduler instead")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    source = sources.make_source(args.source, args.input, args.limit, args.seed)
    settings = generate.GenerationSettings(
        components=tuple(c.strip() for c in args.components.split(",") if c.strip()),
        shard_size=args.shard_size,
    )
    os.makedirs(args.out, exist_ok=True)
    if source.names is not None:
        with open(os.path.join(args.out, "names.json"), "w") as f:
            json.dump(dict(zip(map(int, source.ids), source.names, strict=True)), f)
    print(f"{len(source.ids)} molecules from {source.label}; components {settings.components}")
    summary = generate.generate(
        source.ids,
        source.get,
        args.out,
        settings,
        source=source.label,
        workers=args.workers,
        dask_scheduler=args.dask_scheduler,
        progress=not args.no_progress,
    )
    rate = 3600 * summary.computed / len(settings.components) / max(summary.seconds, 1e-9)
    print(
        f"computed {summary.computed}, skipped {summary.skipped} (already done), "
        f"failed {len(summary.failures)} in {summary.seconds:.0f} s ({rate:.0f} molecules/hour)"
    )
    for component, mol_id, message in summary.failures:
        print(f"  FAILED {component} molecule {mol_id}: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
