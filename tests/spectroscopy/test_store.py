"""Spectra store: ragged packing, shard consolidation (writers: tests/test_files.py)."""

import numpy as np
import pytest

from molspectra_jax.spectroscopy import store as st


def vib_record(n_atoms: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    k = 3 * n_atoms - 6
    return {
        "atomic_numbers": rng.integers(1, 10, n_atoms),
        "positions": rng.normal(size=(n_atoms, 3)),
        "frequencies": rng.uniform(100, 4000, k),
        "ir_intensities": rng.uniform(0, 100, k),
        "raman_activities": rng.uniform(0, 100, k),
        "energy": -rng.uniform(10, 20),
        "n_imaginary": 0,
    }


def test_corrupt_file_error_names_it(tmp_path):
    path = tmp_path / "vib-00000.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="vib-00000.npz"):
        st.read_npz(str(path))


def test_pack_unpack_roundtrip():
    records = [(7, vib_record(3, 0)), (3, vib_record(5, 1))]
    packed = st.pack("vib", records)
    assert packed["atom_offsets"].tolist() == [0, 3, 8]
    assert packed["mode_offsets"].tolist() == [0, 3, 12]
    for (i, a), (j, b) in zip(records, st.unpack("vib", packed), strict=True):
        assert i == j
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown spectra component 'nmr'"):
        st.pack("nmr", records)


def test_consolidate_collects_pending_results_and_failures(tmp_path):
    store = st.SpectraStore(str(tmp_path))
    store.save_result("vib", 1, vib_record(3, 0))
    store.save_failure("vib", 2, "RuntimeError: SCF did not converge")
    with pytest.raises(RuntimeError, match=r"molecules \[3\] not finished"):
        store.consolidate("vib", 0, [1, 2, 3], {"m": 1})
    store.save_result("vib", 3, vib_record(4, 1))
    assert store.done_ids("vib") == {1, 2, 3}
    store.consolidate("vib", 0, [1, 2, 3], {"m": 1})
    assert store.pending_ids("vib") == set() and store.done_ids("vib") == {1, 2, 3}
    shard = store.read_shard("vib", 0)
    assert shard["ids"].tolist() == [1, 3] and shard["failed_ids"].tolist() == [2]
    assert "SCF did not converge" in str(shard["failed_messages"][0])
    before = open(store.shard_path("vib", 0), "rb").read()
    store.consolidate("vib", 0, [1, 2, 3], {"m": 1})  # idempotent, from the shard alone
    assert open(store.shard_path("vib", 0), "rb").read() == before
    loaded = store.load("vib")
    assert loaded["ids"].tolist() == [1, 3] and loaded["metadata"] == {"m": 1}


def test_damaged_byte_in_a_shard_is_a_value_error_naming_it(tmp_path):
    """A zeroed byte anywhere in a shard reads back intact or raises ValueError naming the
    file, never a bare zlib.error (damaged compressed data) or header error."""
    store = st.SpectraStore(str(tmp_path / "store"))
    for i in range(3):
        store.save_result("vib", i, vib_record(6, i))
    store.consolidate("vib", 0, [0, 1, 2], {"m": 1})
    data = open(store.shard_path("vib", 0), "rb").read()
    path = tmp_path / "vib-00000.npz"
    causes = set()
    for position in range(0, len(data), 5):
        if data[position] == 0:
            continue
        path.write_bytes(data[:position] + b"\0" + data[position + 1 :])
        try:
            st.read_npz(str(path))
        except ValueError as e:
            assert str(path) in str(e) and "unreadable spectra file" in str(e)
            causes.add(type(e.__cause__).__name__)
    assert {"error", "BadZipFile"} <= causes  # zlib.error among them


def test_consolidate_never_drops_finished_molecules(tmp_path):
    store = st.SpectraStore(str(tmp_path))
    for i in (1, 2, 3):
        store.save_result("vib", i, vib_record(3, i))
    store.consolidate("vib", 0, [1, 2, 3], {"m": 1})
    before = open(store.shard_path("vib", 0), "rb").read()
    with pytest.raises(ValueError, match=r"vib-00000.npz: holds finished molecules \[3\]"):
        store.consolidate("vib", 0, [1, 2], {"m": 1})
    assert open(store.shard_path("vib", 0), "rb").read() == before
