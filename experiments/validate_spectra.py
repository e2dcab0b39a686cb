"""Validate generated spectra: GFN2 vs QM9 B3LYP frequencies, TDA-ris vs exact TDA.

python -m experiments.validate_spectra --spectra molspectra_jax/assets/spectra --tda 3
"""

import argparse
import json
import sys

import numpy as np

from molspectra_jax.data import sources
from molspectra_jax.spectroscopy import embedded, store, validation


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spectra", default=embedded.embedded_spectra_dir(), help="store folder")
    p.add_argument("--tda", type=int, default=0, help="QM9 molecules for TDA-ris vs exact TDA")
    p.add_argument("--states", type=int, default=6)
    args = p.parse_args(argv)

    vib = store.SpectraStore(args.spectra).load("vib")
    reference = validation.qm9_harmonic_frequencies(set(vib["ids"].tolist()))
    result = validation.frequency_comparison(
        vib["ids"], vib["frequencies"], vib["mode_offsets"], reference
    )
    print("GFN2-xTB vs QM9 B3LYP harmonic frequencies:", json.dumps(result))

    if args.tda:
        source = sources.qm9_source(limit=args.tda)
        errors = []
        for p_ in range(args.tda):
            ris, exact = validation.tda_ris_vs_exact(*source.get(p_), n_states=args.states)
            errors.append(np.abs(ris - exact))
            print(f"QM9 {source.ids[p_]}: ris {np.round(ris, 3)} exact {np.round(exact, 3)}")
        errors = np.concatenate(errors)
        print(
            f"TDA-ris vs exact TDA: MAD {errors.mean():.3f} eV, max {errors.max():.3f} eV "
            f"({args.tda} molecules x {args.states} states)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
