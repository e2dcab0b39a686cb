"""Checks of the generated spectra against references: QM9's B3LYP harmonic frequencies
(GFN2 frequency error and best scale factor; the QM9 reader's `harmonic_frequencies`
gives them) and PySCF's exact TDA (TDA-ris error)."""

from __future__ import annotations

import numpy as np

from molspectra_jax.spectroscopy import electronic


def frequency_comparison(
    ids: np.ndarray,
    frequencies: np.ndarray,
    mode_offsets: np.ndarray,
    reference: dict[int, np.ndarray],
) -> dict:
    """MAE of GFN2 vs reference frequencies, before and after the best single scale factor.

    Modes are matched by sorting both lists (same count 3N-6 required; others skipped).
    The factor minimises sum (s f_gfn2 - f_ref)^2, i.e. s = <f, f_ref> / <f, f>.
    """
    ours, theirs, used = [], [], 0
    for m, mol_id in enumerate(ids):
        f = np.sort(frequencies[mode_offsets[m] : mode_offsets[m + 1]])
        ref = reference.get(int(mol_id))
        if ref is None or len(ref) != len(f):
            continue
        ours.append(f)
        theirs.append(np.sort(ref))
        used += 1
    if not used:
        raise ValueError("no molecule has reference frequencies with a matching mode count")
    f, ref = np.concatenate(ours), np.concatenate(theirs)
    scale = float(f @ ref / (f @ f))
    return {
        "molecules": used,
        "modes": int(len(f)),
        "mae": float(np.abs(f - ref).mean()),
        "scale": scale,
        "mae_scaled": float(np.abs(scale * f - ref).mean()),
    }


def tda_ris_vs_exact(
    atomic_numbers: np.ndarray,
    positions: np.ndarray,
    n_states: int = 6,
    settings: electronic.ElectronicSettings = electronic.ElectronicSettings(),  # noqa: B008
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest `n_states` excitation energies (eV) from TDA-ris and from PySCF's exact TDA,
    both on the same B3LYP ground state."""
    mol = electronic.build_molecule(atomic_numbers, positions, settings.basis)
    mf = electronic.ground_state(mol, settings)
    ris, _ = electronic.tda_ris(mf, settings.theta, n_states=n_states)
    td = mf.TDA()
    td.nstates = n_states
    td.kernel()
    return ris, td.e * electronic.HARTREE_TO_EV
