"""QM9 from qm9pack: contents, paper units, the on-disk cache, the standard split."""

import os
import shutil

import ml_collections
import numpy as np
import pytest

from molspectra_jax.data import qm9, sources
from molspectra_jax.data.qm9 import (
    FORMAT_VERSION,
    HARTREE_TO_MEV,
    QM9_SPLIT_SIZES,
    TARGET_NAMES,
    TARGET_UNITS,
    load_qm9,
)
from molspectra_jax.data.records import DataError, split_indices

CACHE_NAME = f"qm9_v{FORMAT_VERSION}.npz"

# dsgdb9nsd_000001.xyz (methane) of the QM9 release, raw units (Ramakrishnan et al. 2014).
METHANE_RAW = {
    "mu": 0.0,  # D
    "alpha": 13.21,  # a0^3
    "homo": -0.3877,  # Ha
    "lumo": 0.1171,
    "gap": 0.5048,
    "r2": 35.3641,  # a0^2
    "zpve": 0.044749,  # Ha
    "u0": -40.47893,
    "u": -40.476062,
    "h": -40.475117,
    "g": -40.498597,
    "cv": 6.469,  # cal/mol/K
}
HARTREE_TARGETS = ("homo", "lumo", "gap", "zpve", "u0", "u", "h", "g")


@pytest.fixture(scope="module")
def dataset():
    return load_qm9(verbose=False)


@pytest.fixture
def cache_copy(tmp_path, dataset):
    """A tmp cache dir holding a copy of the real cache (written by the `dataset` load)."""
    shutil.copy(os.path.join(qm9.default_cache_dir(), CACHE_NAME), tmp_path / CACHE_NAME)
    return tmp_path


def test_size_ids_and_elements(dataset):
    assert len(dataset) == 130_831
    assert dataset.target_names == TARGET_NAMES
    assert dataset.targets.shape == (130_831, 12)
    assert len(np.unique(dataset.ids)) == len(dataset)
    assert dataset.ids[0] == 1 and dataset.ids[-1] == 133_885  # 1-based QM9 index
    assert set(np.unique(dataset.atomic_numbers)) == {1, 6, 7, 8, 9}
    assert dataset.n_atoms.min() >= 3 and dataset.n_atoms.max() == 29
    assert np.all(np.isfinite(dataset.positions)) and np.all(np.isfinite(dataset.targets))


def test_methane(dataset):
    assert dataset.ids[0] == 1
    z, pos = dataset.molecule(0)
    np.testing.assert_array_equal(z, [6, 1, 1, 1, 1])
    ch = np.linalg.norm(pos[1:] - pos[0], axis=1)
    np.testing.assert_allclose(ch, 1.0919, atol=1e-3)  # B3LYP C-H bond, Å
    np.testing.assert_allclose(dataset.target("gap")[0], 0.5048 * 27211.386245988, rtol=1e-12)
    assert 13_700 < dataset.target("gap")[0] < 13_750  # meV, not Hartree or eV


def test_units_of_every_column(dataset):
    assert HARTREE_TO_MEV == 27211.386245988
    expected_units = {"mu": "D", "alpha": "a0^3", "r2": "a0^2", "cv": "cal/mol/K"}
    expected_units.update({name: "meV" for name in HARTREE_TARGETS})
    assert TARGET_UNITS == expected_units
    for name, raw in METHANE_RAW.items():
        factor = HARTREE_TO_MEV if name in HARTREE_TARGETS else 1.0
        np.testing.assert_allclose(dataset.target(name)[0], raw * factor, rtol=1e-12, atol=1e-12)


def test_columns_match_raw_csv(dataset):
    """Every converted column is qm9pack's raw column times its factor (first CSV rows)."""
    import pandas as pd

    raw = pd.read_csv(os.path.join(qm9._qm9pack_data_dir(), "qm9_part1.csv"), nrows=20)
    np.testing.assert_array_equal(dataset.ids[:20], raw["Index"])
    for name, column, factor, _ in qm9.TARGETS:
        np.testing.assert_allclose(
            dataset.target(name)[:20], raw[column].to_numpy() * factor, rtol=1e-12, err_msg=name
        )


def test_cache_is_reused(cache_copy, dataset, monkeypatch):
    def no_parse(data_dir):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(qm9, "parse_qm9pack_csvs", no_parse)
    again = load_qm9(str(cache_copy), verbose=False)
    np.testing.assert_array_equal(again.ids, dataset.ids)
    np.testing.assert_array_equal(again.positions, dataset.positions)
    np.testing.assert_array_equal(again.targets, dataset.targets)


def test_cache_dir_from_environment(cache_copy, monkeypatch):
    monkeypatch.setenv("MOLSPECTRA_CACHE", str(cache_copy))
    assert qm9.default_cache_dir() == str(cache_copy)
    monkeypatch.setattr(qm9, "parse_qm9pack_csvs", lambda d: pytest.fail("cache not used"))
    assert len(load_qm9(verbose=False)) == 130_831


def test_cache_rebuilt_when_fingerprint_changes(cache_copy, qm9_sample, monkeypatch):
    calls = []

    def fake_parse(data_dir):
        calls.append(data_dir)
        return qm9_sample

    monkeypatch.setattr(qm9, "parse_qm9pack_csvs", fake_parse)
    monkeypatch.setattr(qm9, "_source_fingerprint", lambda: "qm9pack==9.9.9;sizes=[1]")
    rebuilt = load_qm9(str(cache_copy), verbose=False)
    assert len(calls) == 1 and len(rebuilt) == len(qm9_sample)
    _, meta = qm9.MoleculeDataset.load(str(cache_copy / CACHE_NAME))
    assert meta == {"source": "qm9pack==9.9.9;sizes=[1]", "format": FORMAT_VERSION}
    # Same fingerprint again: the rebuilt file is reused, not parsed a second time.
    assert len(load_qm9(str(cache_copy), verbose=False)) == len(qm9_sample)
    assert len(calls) == 1
    assert sorted(os.listdir(cache_copy)) == [CACHE_NAME]


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped"])
def test_cache_rebuilt_when_damaged(cache_copy, qm9_sample, monkeypatch, capsys, damage):
    path = cache_copy / CACHE_NAME
    data = path.read_bytes()
    if damage == "empty":
        data = b""
    elif damage == "truncated":  # e.g. a copy cut short: still starts with the zip magic
        data = data[: len(data) // 2]
    else:  # bytes flipped inside the first array
        data = data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:]
    path.write_bytes(data)
    monkeypatch.setattr(qm9, "parse_qm9pack_csvs", lambda d: qm9_sample)
    rebuilt = load_qm9(str(cache_copy), verbose=True)
    assert len(rebuilt) == len(qm9_sample)
    assert "unreadable" in capsys.readouterr().out
    reloaded, meta = qm9.MoleculeDataset.load(str(path))
    assert meta["source"] == qm9._source_fingerprint()
    np.testing.assert_array_equal(reloaded.ids, qm9_sample.ids)


def test_garbage_cache_rebuilt_by_real_parse(cache_copy, dataset):
    """The one real CSV parse of the session (~6 s): equals the cached dataset exactly."""
    (cache_copy / CACHE_NAME).write_bytes(os.urandom(4096))
    rebuilt = load_qm9(str(cache_copy), verbose=False)
    for field in ("ids", "atomic_numbers", "positions", "offsets", "targets"):
        np.testing.assert_array_equal(getattr(rebuilt, field), getattr(dataset, field))
    assert rebuilt.target_names == dataset.target_names
    _, meta = qm9.MoleculeDataset.load(str(cache_copy / CACHE_NAME))
    assert meta["source"] == qm9._source_fingerprint()


def test_missing_qm9pack_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(qm9.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install qm9pack"):
        load_qm9(str(tmp_path), verbose=False)


def test_standard_split(dataset):
    train, valid, test = split_indices(len(dataset), QM9_SPLIT_SIZES, seed=0)
    assert (len(train), len(valid), len(test)) == (110_000, 10_000, 10_831)
    assert not (set(train) & set(valid) or set(train) & set(test) or set(valid) & set(test))


def _data_config(n_train, n_valid, n_test, seed=0, source="qm9"):
    config = ml_collections.ConfigDict()
    config.source = source
    config.split_seed = seed
    config.n_train, config.n_valid, config.n_test = n_train, n_valid, n_test
    return config


def test_split_dataset_prefixes_of_the_full_split(dataset):
    full = sources.finetuning_splits(dataset, _data_config(-1, -1, -1))
    assert [len(full[s]) for s in sources.SPLITS] == [110_000, 10_000, 10_831]
    all_ids = np.concatenate([full[s].ids for s in sources.SPLITS])
    assert len(np.unique(all_ids)) == len(dataset)

    small = sources.finetuning_splits(dataset, _data_config(1000, 100, 50))
    assert [len(small[s]) for s in sources.SPLITS] == [1000, 100, 50]
    for s in sources.SPLITS:
        np.testing.assert_array_equal(small[s].ids, full[s].ids[: len(small[s])])
        np.testing.assert_array_equal(small[s].targets, full[s].targets[: len(small[s])])

    again = sources.finetuning_splits(dataset, _data_config(1000, 100, 50))
    np.testing.assert_array_equal(again["train"].ids, small["train"].ids)
    other = sources.finetuning_splits(dataset, _data_config(1000, 100, 50, seed=1))
    assert not np.array_equal(other["test"].ids, small["test"].ids)


def test_split_dataset_small_source_and_empty_split(qm9_sample):
    sdf = dict(source="sdf:molecules.sdf")
    parts = sources.finetuning_splits(qm9_sample, _data_config(-1, -1, -1, **sdf))
    assert [len(parts[s]) for s in sources.SPLITS] == [167, 15, 18]  # 110:10:rest of 200
    with pytest.raises(DataError, match="the valid split is empty"):
        sources.finetuning_splits(qm9_sample, _data_config(-1, 0, -1, **sdf))


def test_parse_targets():
    assert sources.parse_targets("gap", "qm9") == ("gap",)
    assert sources.parse_targets("homo, lumo", "qm9") == ("homo", "lumo")
    assert sources.parse_targets("all", "qm9") == TARGET_NAMES
    with pytest.raises(ValueError, match=r"unknown target\(s\) \['gpa'\]"):
        sources.parse_targets("gap,gpa", "qm9")
