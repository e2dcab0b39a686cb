"""Validate generated spectra: GFN2 vs QM9 B3LYP frequencies, TDA-ris vs exact TDA.

python -m experiments.validate_spectra --spectra molspectra_jax/assets/spectra --tda 3
"""

import json

import numpy as np
from absl import app, flags

from molspectra_jax.data import qm9, sources
from molspectra_jax.spectroscopy import embedded, store, validation

_SPECTRA = flags.DEFINE_string("spectra", embedded.embedded_spectra_dir(), "Store folder.")
_TDA = flags.DEFINE_integer("tda", 0, "QM9 molecules for TDA-ris vs exact TDA.")
_STATES = flags.DEFINE_integer("states", 6, "Excited states per molecule.")


def run(spectra: str, tda: int = 0, states: int = 6) -> int:
    """Print the frequency comparison of store `spectra` and, for `tda` molecules, TDA-ris."""
    vib = store.SpectraStore(spectra).load("vib")
    reference = qm9.harmonic_frequencies(vib["ids"].tolist())
    result = validation.frequency_comparison(
        vib["ids"], vib["frequencies"], vib["mode_offsets"], reference
    )
    print("GFN2-xTB vs QM9 B3LYP harmonic frequencies:", json.dumps(result))

    if tda:
        source = sources.qm9_source(limit=tda)
        errors = []
        for p in range(tda):
            ris, exact = validation.tda_ris_vs_exact(*source.get(p), n_states=states)
            errors.append(np.abs(ris - exact))
            print(f"QM9 {source.ids[p]}: ris {np.round(ris, 3)} exact {np.round(exact, 3)}")
        errors = np.concatenate(errors)
        print(
            f"TDA-ris vs exact TDA: MAD {errors.mean():.3f} eV, max {errors.max():.3f} eV "
            f"({tda} molecules x {states} states)"
        )
    return 0


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run(_SPECTRA.value, _TDA.value, _STATES.value)


def cli():
    """The console script `molspectra-validate-spectra`."""
    app.run(main)


if __name__ == "__main__":
    cli()
