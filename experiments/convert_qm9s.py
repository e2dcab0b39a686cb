"""Convert the QM9S release (Zou et al. 2023) once into memory-mapped arrays.

  python -m experiments.convert_qm9s --release qm9s/ --out qm9s_converted/
  python -m experiments.pretrain --config configs/pretrain_qm9s.py \\
      --config.data.spectra=qm9s:qm9s_converted/ ...

`--release` holds `ir_boraden.csv`, `raman_boraden.csv`, `uv_boraden.csv` and the
per-molecule files `qm9s_csv.zip` (or unpacked `qm9s_csv/`), which map QM9S numbers to
QM9 indices. The 8 GB CSVs are streamed; expect tens of minutes. Flags are absl's,
spelled with underscores: --chunk_rows.
"""

import sys

from absl import app, flags

from molspectra_jax.data import qm9s
from molspectra_jax.data.records import DataError

_RELEASE = flags.DEFINE_string("release", None, "Folder with the QM9S release files.")
_OUT = flags.DEFINE_string("out", None, "Folder for the converted arrays.")
_CHUNK_ROWS = flags.DEFINE_integer("chunk_rows", 2000, "CSV rows read at a time.")
flags.mark_flags_as_required(["release", "out"])


def run(release: str, out: str, chunk_rows: int = 2000) -> int:
    """Convert, print the report; 1 with "error: ..." on stderr if the release is unusable."""
    try:
        report = qm9s.convert_qm9s(release, out, chunk_rows, progress=True)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{report['molecules']} molecules with all three spectra -> {out}")
    for kind, ids in report["missing"].items():
        if ids:
            print(f"  absent from {qm9s.FILES[kind]}: {len(ids)} (QM9S numbers {ids[:5]})")
    if report["no_molecule_file"]:
        ids = report["no_molecule_file"]
        print(f"  spectra without a molecule file: {len(ids)} (QM9S numbers {ids[:5]})")
    return 0


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run(_RELEASE.value, _OUT.value, _CHUNK_ROWS.value)


def cli():
    """The console script `molspectra-convert-qm9s`."""
    app.run(main)


if __name__ == "__main__":
    cli()
