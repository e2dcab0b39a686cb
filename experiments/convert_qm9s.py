"""Convert the QM9S release (Zou et al. 2023) once into memory-mapped arrays.

  python -m experiments.convert_qm9s --release qm9s/ --out qm9s_converted/
  python -m experiments.pretrain --config configs/pretrain_qm9s.py \\
      --config.data.spectra=qm9s:qm9s_converted/ ...

`--release` holds `ir_boraden.csv`, `raman_boraden.csv`, `uv_boraden.csv` and the
per-molecule files `qm9s_csv.zip` (or unpacked `qm9s_csv/`), which map QM9S numbers to
QM9 indices. The 8 GB CSVs are streamed; expect tens of minutes.
"""

import argparse
import sys

from molspectra_jax.data import qm9s
from molspectra_jax.data.records import DataError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--release", required=True, help="folder with the QM9S release files")
    p.add_argument("--out", required=True, help="folder for the converted arrays")
    p.add_argument("--chunk-rows", type=int, default=2000, help="CSV rows read at a time")
    args = p.parse_args(argv)
    try:
        report = qm9s.convert_qm9s(args.release, args.out, args.chunk_rows, progress=True)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{report['molecules']} molecules with all three spectra -> {args.out}")
    for kind, ids in report["missing"].items():
        if ids:
            print(f"  absent from {qm9s.FILES[kind]}: {len(ids)} (QM9S numbers {ids[:5]})")
    if report["no_molecule_file"]:
        ids = report["no_molecule_file"]
        print(f"  spectra without a molecule file: {len(ids)} (QM9S numbers {ids[:5]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
