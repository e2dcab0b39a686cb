"""MoleculeDataset (flat arrays + offsets): packing, subsets, atomic npz, checks, splits."""

import os

import numpy as np
import pytest

from molspectra_jax.data.records import (
    DataError,
    MoleculeDataset,
    MoleculeRecord,
    check_molecule,
    from_records,
    split_indices,
)

WATER = MoleculeRecord(
    "water",
    np.array([8, 1, 1]),
    np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]),
    np.array([1.0, 2.0]),
)
METHANE = MoleculeRecord(
    "methane",
    np.array([6, 1, 1, 1, 1]),
    np.array(
        [
            [0.0, 0.0, 0.0],
            [0.629, 0.629, 0.629],
            [-0.629, -0.629, 0.629],
            [-0.629, 0.629, -0.629],
            [0.629, -0.629, -0.629],
        ]
    ),
    np.array([3.0, 4.0]),
)


@pytest.fixture
def small():
    return from_records([WATER, METHANE, WATER], target_names=("a", "b"))


def test_from_records_layout(small):
    assert len(small) == 3
    np.testing.assert_array_equal(small.offsets, [0, 3, 8, 11])
    np.testing.assert_array_equal(small.n_atoms, [3, 5, 3])
    np.testing.assert_array_equal(small.ids, [0, 1, 2])
    assert small.atomic_numbers.dtype == np.int32
    assert small.positions.dtype == np.float32
    z, pos = small.molecule(1)
    np.testing.assert_array_equal(z, METHANE.atomic_numbers)
    np.testing.assert_allclose(pos, METHANE.positions, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(small.target("b"), [2.0, 4.0, 2.0])


def test_from_records_empty_raises():
    with pytest.raises(DataError, match="no molecules"):
        from_records([])


def test_inconsistent_arrays_raise(small):
    with pytest.raises(DataError, match="offsets"):
        MoleculeDataset(
            ids=small.ids,
            atomic_numbers=small.atomic_numbers,
            positions=small.positions,
            offsets=small.offsets[:-1],
            targets=small.targets,
            target_names=small.target_names,
        )
    with pytest.raises(DataError, match="positions"):
        MoleculeDataset(
            ids=small.ids,
            atomic_numbers=small.atomic_numbers,
            positions=small.positions[:-1],
            offsets=small.offsets,
            targets=small.targets,
            target_names=small.target_names,
        )
    with pytest.raises(DataError, match="targets"):
        MoleculeDataset(
            ids=small.ids,
            atomic_numbers=small.atomic_numbers,
            positions=small.positions,
            offsets=small.offsets,
            targets=small.targets,
            target_names=("a",),
        )


def test_subset_preserves_molecules_and_order(qm9_sample):
    indices = np.array([17, 3, 199, 3, 0])
    sub = qm9_sample.subset(indices)
    assert len(sub) == 5
    np.testing.assert_array_equal(sub.ids, qm9_sample.ids[indices])
    np.testing.assert_array_equal(sub.targets, qm9_sample.targets[indices])
    for k, i in enumerate(indices):
        z_sub, pos_sub = sub.molecule(k)
        z, pos = qm9_sample.molecule(i)
        np.testing.assert_array_equal(z_sub, z)
        np.testing.assert_array_equal(pos_sub, pos)
    assert sub.offsets[-1] == qm9_sample.n_atoms[indices].sum()


def test_subset_carries_atom_targets(small):
    forces = np.arange(small.offsets[-1] * 3, dtype=np.float32).reshape(-1, 3)
    with_forces = MoleculeDataset(**{**small.__dict__, "atom_targets": forces})
    sub = with_forces.subset([1])
    np.testing.assert_array_equal(sub.atom_targets, forces[3:8])


def test_select_targets(qm9_sample):
    picked = qm9_sample.select_targets(["gap", "mu"])
    assert picked.target_names == ("gap", "mu")
    np.testing.assert_array_equal(picked.targets[:, 0], qm9_sample.target("gap"))
    np.testing.assert_array_equal(picked.targets[:, 1], qm9_sample.target("mu"))
    none = qm9_sample.select_targets([])
    assert none.targets.shape == (len(qm9_sample), 0)
    with pytest.raises(KeyError, match="unknown target 'nope'"):
        qm9_sample.select_targets(["nope"])


def test_save_load_round_trip(tmp_path, small):
    forces = np.random.default_rng(0).normal(size=(small.offsets[-1], 3)).astype(np.float32)
    dataset = MoleculeDataset(**{**small.__dict__, "atom_targets": forces})
    path = str(tmp_path / "sub" / "set.npz")
    dataset.save(path, source="unit-test", format="7")
    loaded, meta = MoleculeDataset.load(path)
    assert meta == {"source": "unit-test", "format": "7"}
    assert loaded.target_names == ("a", "b")
    for field in ("ids", "atomic_numbers", "positions", "offsets", "targets", "atom_targets"):
        a, b = getattr(dataset, field), getattr(loaded, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b)
    # Without atom targets the field comes back as None, not as an empty array.
    small.save(path)
    assert MoleculeDataset.load(path)[0].atom_targets is None
    assert os.listdir(tmp_path / "sub") == ["set.npz"]  # no temporary files left


def test_check_molecule_messages():
    z, pos = np.array([6, 1, 1, 1, 1]), METHANE.positions
    check_molecule("f.sdf", "3", z, pos)  # fine
    with pytest.raises(DataError, match=r"^f\.sdf, record 3: molecule has no atoms"):
        check_molecule("f.sdf", "3", z[:0], pos[:0])
    with pytest.raises(DataError, match=r"^f\.sdf, record 3: positions shape \(4, 3\)"):
        check_molecule("f.sdf", "3", z, pos[:4])
    bad = pos.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match=r"^f\.sdf, record 3: non-finite"):
        check_molecule("f.sdf", "3", z, bad)
    with pytest.raises(DataError, match=r"^f\.sdf, record 3: unsupported element\(s\) Se, Xe"):
        check_molecule("f.sdf", "3", np.array([6, 34, 54]), pos[:3])
    with pytest.raises(DataError, match=r"unsupported element\(s\) C; the model embeds \[1, 8\]"):
        check_molecule("f.sdf", "3", z, pos, elements=(1, 8))
    with pytest.raises(DataError, match=r"unsupported element\(s\) 92"):
        check_molecule("f.sdf", "3", np.array([92]), pos[:1])
    with pytest.raises(DataError, match=r"^f\.sdf, record 3: 5 atoms exceeds the budget of 4"):
        check_molecule("f.sdf", "3", z, pos, max_atoms=4)


def test_split_indices_qm9_sizes():
    parts = split_indices(130_831, (110_000, 10_000), seed=0)
    assert [len(p) for p in parts] == [110_000, 10_000, 10_831]
    joined = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(joined), np.arange(130_831))  # disjoint and complete
    again = split_indices(130_831, (110_000, 10_000), seed=0)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = split_indices(130_831, (110_000, 10_000), seed=1)
    assert not np.array_equal(parts[2], other[2])


def test_split_indices_too_large():
    with pytest.raises(ValueError, match=r"split sizes \[8, 3\] exceed the 10 molecules"):
        split_indices(10, (8, 3), seed=0)


def test_pcqm4mv2_style_sdf_geometries_get_hydrogens(tmp_path):
    """Stage-1 source "sdf:<file>": PCQM4Mv2's SDF holds heavy atoms only (V2000 blocks)."""
    import ml_collections
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molspectra_jax.data import sources

    path = tmp_path / "pcqm4m-v2-train.sdf"
    with Chem.SDWriter(str(path)) as writer:
        for smiles in ("CC(=O)Nc1ccccc1", "OCC1OC(O)C(O)C1O"):
            mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
            AllChem.EmbedMolecule(mol, randomSeed=0)
            writer.write(Chem.RemoveHs(mol))
    config = ml_collections.ConfigDict(dict(source=f"sdf:{path}", elements=(1, 6, 7, 8)))
    dataset = sources.load(config.source, config)
    assert len(dataset) == 2
    assert list(dataset.n_atoms) == [19, 20]  # C8H9NO and C5H10O5 with explicit H


def test_mapped_rows_read_only_their_rows_and_pickle_as_a_path(tmp_path):
    import pickle

    from molspectra_jax.data.records import MappedRows

    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = str(tmp_path / "x.npy")
    np.save(path, values)
    rows = np.array([7, 2, 9])
    mapped = MappedRows(path, rows)
    assert mapped.shape == (3, 4) and len(mapped) == 3 and mapped.dtype == np.float32
    np.testing.assert_array_equal(mapped[np.array([2, 0])], values[[9, 7]])
    np.testing.assert_array_equal(np.asarray(mapped), values[rows])
    np.testing.assert_array_equal(MappedRows(path)[3:5], values[3:5])
    np.testing.assert_array_equal(mapped[:, 1], values[rows, 1])
    copy = pickle.loads(pickle.dumps(mapped))
    assert copy.path == path and len(pickle.dumps(mapped)) < 1000
    np.testing.assert_array_equal(copy[np.arange(3)], values[rows])
