"""The spectra shipped in the package: loadable, consistent, reproducible."""

import numpy as np
import pytest

from molspectra_jax.data import sources
from molspectra_jax.spectroscopy import electronic, embedded, store, vibrational


@pytest.fixture(scope="module")
def shipped():
    return embedded.load_embedded_spectra()


def test_shipped_set_is_consistent(shipped):
    assert len(shipped) >= 100
    assert len(np.unique(shipped.ids)) == len(shipped)
    n_atoms = np.diff(shipped.atom_offsets)
    n_modes = np.diff(shipped.mode_offsets)
    assert np.all((n_modes == 3 * n_atoms - 6) | (n_modes == 3 * n_atoms - 5))  # 5: linear
    assert (shipped.n_imaginary == 0).mean() > 0.95
    assert np.all(np.diff(shipped.state_offsets) > 0)
    assert shipped.metadata["vib"]["versions"]["tblite"]
    assert shipped.metadata["uv"]["settings"]["xc"] == "b3lyp"


def test_shipped_set_is_the_seeded_qm9_prefix(shipped):
    """At least 2,000 molecules: the first N of the seeded QM9 order, failures listed."""
    from molspectra_jax.data.qm9 import load_qm9

    stores = store.SpectraStore(embedded.embedded_spectra_dir())
    failed = np.union1d(stores.load("vib")["failed_ids"], stores.load("uv")["failed_ids"])
    covered = np.union1d(shipped.ids, failed)
    assert len(shipped) >= 2000
    assert len(np.intersect1d(shipped.ids, failed)) == 0
    prefix = sources.qm9_order(load_qm9(verbose=False).ids)[: len(covered)]
    np.testing.assert_array_equal(np.sort(prefix), covered)


def test_broaden_batch_gives_qm9s_shaped_float32_spectra(shipped):
    batch = embedded.broaden_batch(shipped, np.array([0, 5, 2]))
    assert batch["uv"].shape == (3, 701)
    assert batch["ir"].shape == batch["raman"].shape == (3, 3501)
    for spectrum in batch.values():
        assert spectrum.dtype == np.float32 and np.all(np.isfinite(spectrum))
        assert np.all(spectrum >= 0) and np.all(spectrum.max(axis=1) > 0)


def test_regenerating_three_shipped_molecules_reproduces_their_sticks(shipped):
    from molspectra_jax.data.qm9 import load_qm9

    qm9 = load_qm9()
    row_of = {int(i): r for r, i in enumerate(qm9.ids)}
    smallest = np.argsort(np.diff(shipped.atom_offsets), kind="stable")[:3]
    for m in smallest:
        z, pos = qm9.molecule(row_of[int(shipped.ids[m])])  # the generator's input geometry
        vib = vibrational.vibrational_spectrum(z, pos)
        lo, hi = shipped.mode_offsets[m : m + 2]
        np.testing.assert_allclose(vib.frequencies, shipped.frequencies[lo:hi], atol=0.5)
        np.testing.assert_allclose(
            vib.ir_intensities, shipped.ir_intensities[lo:hi], atol=0.05, rtol=1e-2
        )
        np.testing.assert_allclose(
            vib.raman_activities, shipped.raman_activities[lo:hi], atol=0.05, rtol=1e-2
        )
        uv = electronic.electronic_spectrum(z, pos)
        lo, hi = shipped.state_offsets[m : m + 2]
        np.testing.assert_allclose(
            uv.excitation_energies, shipped.excitation_energies[lo:hi], atol=1e-3
        )
        np.testing.assert_allclose(
            uv.oscillator_strengths, shipped.oscillator_strengths[lo:hi], atol=1e-4
        )
