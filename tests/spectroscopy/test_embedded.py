"""The spectra shipped in the package: loadable, consistent, reproducible; the dense
cache broadened once and memory-mapped."""

import dataclasses
import glob
import json
import os
import pickle

import numpy as np
import pytest

from molspectra_jax.data import sources
from molspectra_jax.spectra import SPECTRA
from molspectra_jax.spectroscopy import components, embedded, store


@pytest.fixture(scope="module")
def shipped():
    return embedded.load_embedded_spectra()


def test_shipped_set_is_consistent(shipped):
    assert len(shipped) >= 100
    assert len(np.unique(shipped.ids)) == len(shipped)
    vib, uv = shipped.arrays["vib"], shipped.arrays["uv"]
    assert shipped.geometry == "vib" and vib["atom_offsets"] is shipped.atom_offsets
    n_atoms = np.diff(shipped.atom_offsets)
    n_modes = np.diff(vib["mode_offsets"])
    assert np.all((n_modes == 3 * n_atoms - 6) | (n_modes == 3 * n_atoms - 5))  # 5: linear
    assert (vib["n_imaginary"] == 0).mean() > 0.95
    assert np.all(np.diff(uv["state_offsets"]) > 0)
    np.testing.assert_array_equal(vib["ids"], shipped.ids)
    np.testing.assert_array_equal(uv["ids"], shipped.ids)
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


def test_regenerating_two_shipped_molecules_reproduces_their_sticks(shipped):
    from molspectra_jax.data.qm9 import load_qm9

    qm9 = load_qm9()
    row_of = {int(i): r for r, i in enumerate(qm9.ids)}
    smallest = np.argsort(np.diff(shipped.atom_offsets), kind="stable")[:2]
    for m in smallest:
        z, pos = qm9.molecule(row_of[int(shipped.ids[m])])  # the generator's input geometry
        results = {  # what the generator's workers compute
            c: components.get(c).record(z, pos, components.get(c).settings_class()())
            for c in ("vib", "uv")
        }
        for component, field, atol, rtol in [
            ("vib", "frequencies", 0.5, 1e-7),
            ("vib", "ir_intensities", 0.05, 1e-2),
            ("vib", "raman_activities", 0.05, 1e-2),
            ("uv", "excitation_energies", 1e-3, 1e-7),
            ("uv", "oscillator_strengths", 1e-4, 1e-7),
        ]:
            values, offsets = shipped.ragged(component, field)
            lo, hi = offsets[m : m + 2]
            ours = results[component][field]
            np.testing.assert_allclose(ours, values[lo:hi], atol=atol, rtol=rtol)


@pytest.mark.parametrize("component", ["vib", "uv"])
def test_reconsolidated_shipped_shard_is_byte_identical(component, tmp_path):
    """The registry's schema writes the shipped format: unpack -> pack gives the same file."""
    path = store.SpectraStore(embedded.embedded_spectra_dir()).shard_path(component, 0)
    original = open(path, "rb").read()
    copy = store.SpectraStore(str(tmp_path))
    open(copy.shard_path(component, 0), "wb").write(original)
    shard = copy.read_shard(component, 0)
    order = shard["ids"].tolist() + shard["failed_ids"].tolist()
    copy.consolidate(component, 0, order, json.loads(str(shard["metadata"])))
    assert open(copy.shard_path(component, 0), "rb").read() == original


def test_dense_spectra_are_broadened_once_then_memory_mapped(shipped, tmp_path):
    uv = {"uv": SPECTRA["uv"]}  # one type keeps the test short; each is broadened alike
    root = embedded.embedded_spectra_dir()
    dense = embedded.dense_spectra(root, shipped, str(tmp_path), uv, chunk=1000, progress=False)
    assert dense["uv"].shape == (len(shipped), SPECTRA["uv"].grid.length)
    rows = np.array([0, 17, len(shipped) - 1, 5])
    want = embedded.broaden_batch(shipped, rows, uv)["uv"]
    np.testing.assert_array_equal(dense["uv"][rows], want)
    (path,) = glob.glob(str(tmp_path / "dense_spectra" / "*" / "uv.npy"))
    written = os.stat(path).st_mtime_ns
    again = embedded.dense_spectra(root, shipped, str(tmp_path), uv, progress=False)
    assert again["uv"].path == path and os.stat(path).st_mtime_ns == written  # reused
    peaks = dataclasses.replace(SPECTRA["uv"].peaks, fwhm=SPECTRA["uv"].peaks.fwhm / 2)
    narrower = {"uv": dataclasses.replace(SPECTRA["uv"], peaks=peaks)}
    other = embedded.dense_spectra(root, shipped, str(tmp_path), narrower, progress=False)
    assert other["uv"].path != path  # another table, another cache
    # A worker process receives the path, not the array.
    sent = pickle.dumps(dense["uv"])
    assert len(sent) < 2000
    np.testing.assert_array_equal(pickle.loads(sent)[rows], dense["uv"][rows])
