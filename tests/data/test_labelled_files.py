"""A user's own labelled molecules: CSV (SMILES + property columns), SDF with numeric
tags, extended XYZ with energies and forces (ASE). Targets and units come from the file
("name [unit]") or `data.units`; bad input names the file, the record and the problem."""

import csv

import ml_collections
import numpy as np
import pytest

from molspectra_jax.data import md17, sources
from molspectra_jax.data.molfiles import read_csv, read_extxyz, read_sdf
from molspectra_jax.data.records import DataError, split_unit

ROWS = [
    ("ethanol", "CCO", "-0.77", "20.2"),
    ("benzene", "c1ccccc1", "-1.64", "0.0"),
    ("acetic acid", "CC(=O)O", "1.22", "37.3"),
    ("pyridine", "c1ccncc1", "1.1", ""),  # no tpsa: left out of a tpsa run
    ("acetone", "CC(C)=O", "0.58", "17.1"),
]


def write_csv(path, rows=ROWS, header=("name", "SMILES", "logS [mol/L]", "tpsa")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def data_config(**overrides):
    c = ml_collections.ConfigDict({"elements": (1, 6, 7, 8), "units": ""})
    c.update(overrides)
    return c


def test_split_unit():
    assert split_unit("logS [mol/L]") == ("logS", "mol/L")
    assert split_unit(" tpsa ") == ("tpsa", "")
    assert split_unit("a [b] [c]") == ("a [b]", "c")


def test_csv_columns_become_targets_with_the_headers_units(tmp_path):
    path = write_csv(tmp_path / "mols.csv")
    records, skipped = read_csv(path, elements=(1, 6, 7, 8))
    assert [r.name for r in records] == [r[0] for r in ROWS] and not skipped
    assert records[0].properties == {"logS [mol/L]": -0.77, "tpsa": 20.2}
    assert "tpsa" not in records[3].properties  # the empty cell: no value, not 0
    assert records[1].positions.shape == (12, 3)  # benzene with its hydrogens, in 3D
    dataset = sources.load(f"csv:{path}", data_config())
    assert dataset.target_names == ("logS", "tpsa")
    assert dataset.target_units == {"logS": "mol/L"}
    np.testing.assert_array_equal(dataset.ids, [1, 2, 3, 4, 5])
    assert np.isnan(dataset.target("tpsa")[3])
    complete = sources.complete(dataset.select_targets(["tpsa"]), "mols.csv")
    np.testing.assert_array_equal(complete.ids, [1, 2, 3, 5])
    units = sources.target_units(f"csv:{path}", dataset, data_config(units="tpsa=Å^2"))
    assert units == {"logS": "mol/L", "tpsa": "Å^2", "forces": ""}


def test_bad_csv_input_names_file_record_and_problem(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [("x", "CCO", "1.0", "1"), ("y", "CC", "high", "1")])
    with pytest.raises(DataError, match=r"bad.csv, record 2 \(line 3\): column 'logS \[mol/L\]'"):
        read_csv(bad)
    text = write_csv(tmp_path / "text.csv", [("x", "CCO", "C2H6O", "1")])  # a formula column
    assert read_csv(text)[0][0].properties == {"tpsa": 1.0}
    short = write_csv(tmp_path / "short.csv", [("x", "CCO", "1")])
    with pytest.raises(DataError, match=r"record 1 \(line 2\): 3 cells for 4 columns"):
        read_csv(short)
    nosmiles = write_csv(tmp_path / "no.csv", [("x", "1")], header=("name", "value"))
    with pytest.raises(DataError, match="no SMILES column 'smiles'"):
        read_csv(nosmiles)
    invalid = write_csv(tmp_path / "inv.csv", [("x", "C1CC", "1", "2"), *ROWS[:1]])
    with pytest.raises(DataError, match=r"inv.csv, record 1 \(line 2\): invalid SMILES"):
        read_csv(invalid)
    records, skipped = read_csv(invalid, on_error="skip")
    assert len(records) == 1 and records[0].number == 2 and "invalid SMILES" in skipped[0]
    with pytest.raises(ValueError, match="not name=unit"):
        sources.parse_units("logS")


def test_sdf_numeric_tags_become_targets(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    path = str(tmp_path / "tagged.sdf")
    writer = Chem.SDWriter(path)
    for i, smiles in enumerate(["CCO", "CC(=O)O", "c1ccncc1"]):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        mol.SetProp("_Name", smiles)
        mol.SetProp("gap [eV]", str(5.0 + i))
        mol.SetProp("vendor", "acme")  # text: not a property
        writer.write(mol)
    writer.close()
    records, _ = read_sdf(path)
    assert records[2].properties == {"gap [eV]": 7.0}
    dataset = sources.load(f"sdf:{path}", data_config())
    assert dataset.target_names == ("gap",) and dataset.target_units == {"gap": "eV"}
    np.testing.assert_array_equal(dataset.target("gap"), [5.0, 6.0, 7.0])


def write_extxyz(path, frames=40, energy=True, pbc=False):
    """MD17 ethanol frames (kcal/mol -> eV) as extended XYZ, written by ASE."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    data = md17.load_md17(md17.shipped_md17_path())
    kcal = 0.0433641042
    images = []
    for m in range(frames):
        z, r = data.molecule(m)
        atoms = Atoms(numbers=z, positions=r, pbc=pbc, cell=[20.0] * 3 if pbc else None)
        atoms.info["temperature"] = 300.0 + m
        f = data.atom_targets[data.offsets[m] : data.offsets[m + 1]] * kcal
        results = {"forces": f}
        if energy:
            results["energy"] = float(data.targets[m, 0]) * kcal
        atoms.calc = SinglePointCalculator(atoms, **results)
        images.append(atoms)
    write(path, images, format="extxyz")
    return str(path)


def test_extxyz_energies_and_forces_in_ase_units(tmp_path):
    path = write_extxyz(tmp_path / "ethanol.extxyz")
    records, _ = read_extxyz(path, elements=(1, 6, 8))
    assert len(records) == 40 and records[0].forces.shape == (9, 3)
    assert set(records[0].properties) == {"energy", "temperature"}
    dataset = sources.load(f"extxyz:{path}", data_config(elements=(1, 6, 8)))
    assert dataset.target_names == ("energy", "temperature")
    assert dataset.atom_targets.shape == (360, 3)
    units = sources.target_units(f"extxyz:{path}", dataset, data_config())
    assert units["energy"] == "eV" and units["forces"] == "eV/Å" and units["temperature"] == ""
    reference = md17.load_md17(md17.shipped_md17_path())
    np.testing.assert_allclose(dataset.target("energy"), reference.targets[:40, 0] * 0.0433641042)


def test_bad_extxyz_input(tmp_path):
    periodic = write_extxyz(tmp_path / "pbc.extxyz", frames=2, pbc=True)
    with pytest.raises(DataError, match=r"pbc.extxyz, record 1: periodic"):
        read_extxyz(periodic)
    broken = tmp_path / "broken.extxyz"
    broken.write_text("3\nProperties=species:S:1:pos:R:3\nC 0 0 0\nH 1 0\n")
    with pytest.raises(DataError, match="broken.extxyz: not a readable extended XYZ"):
        read_extxyz(str(broken))


def test_units_label_values_and_never_relabel_a_registered_source(tmp_path):
    path = write_extxyz(tmp_path / "frames.extxyz", frames=3)
    dataset = sources.load(f"extxyz:{path}", data_config(elements=(1, 6, 8)))
    units = sources.target_units(f"extxyz:{path}", dataset, data_config(units="energy=kcal/mol"))
    assert units["energy"] == "kcal/mol" and units["forces"] == "kcal/mol/Å"
    qm9_like = dataset.select_targets(())
    with pytest.raises(ValueError, match=r"cannot relabel \['energy'\]"):
        sources.target_units("md17", qm9_like, data_config(units="energy=eV"))
    with pytest.raises(ValueError, match="contain '.'"):
        sources.parse_targets("log.S", "csv:x.csv", available=("log.S",))
