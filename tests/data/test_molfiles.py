"""SDF / XYZ / SMILES readers on real files: good molecules read, bad ones named."""

import os
import re
import shutil

import numpy as np
import pytest
import rdkit
from rdkit import Chem
from rdkit.Chem import AllChem

from molspectra_jax.data.molfiles import read_sdf, read_smiles, read_xyz
from molspectra_jax.data.records import DataError

RDKIT_CONTRIB = os.path.join(os.path.dirname(rdkit.__file__), "Contrib")
CDK2 = os.path.join(RDKIT_CONTRIB, "Fastcluster", "testdata", "cdk2.sdf")  # 47 ZINC ligands
EGFR = os.path.join(RDKIT_CONTRIB, "PBF", "testData", "egfr.sdf")

WATER_METHANE_XYZ = """3
water
O 0.000000 0.000000 0.117300
H 0.000000 0.757200 -0.469200
H 0.000000 -0.757200 -0.469200

5
methane
C 0.000000 0.000000 0.000000
H 0.629118 0.629118 0.629118
H -0.629118 -0.629118 0.629118
H -0.629118 0.629118 -0.629118
H 0.629118 -0.629118 -0.629118
"""


def sdf_blocks(path):
    """The raw text of each record of an SDF file (terminator included)."""
    text = open(path).read()
    return [b + "$$$$\n" for b in text.split("$$$$\n") if b.strip()]


def heavy_and_total_atoms(block):
    counts = block.splitlines()[3]
    return int(counts[:3])


# ---------------------------------------------------------------- SDF


def test_read_real_sdf():
    records, skipped = read_sdf(CDK2)
    blocks = sdf_blocks(CDK2)
    assert len(records) == len(blocks) == 47 and skipped == []
    for record, block in zip(records, blocks, strict=True):
        assert record.name == block.splitlines()[0].strip()
        assert len(record.atomic_numbers) == heavy_and_total_atoms(block)
        first_atom = block.splitlines()[4].split()
        np.testing.assert_allclose(record.positions[0], [float(v) for v in first_atom[:3]])
        assert (record.atomic_numbers == 1).any()  # hydrogens kept
        assert record.positions.dtype == np.float32


def _corrupt_copy(tmp_path, bad_record):
    blocks = sdf_blocks(CDK2)
    lines = blocks[bad_record - 1].splitlines(keepends=True)
    lines[3] = "xx yy  0  0  1  0            999 V2000\n"  # the counts line
    blocks[bad_record - 1] = "".join(lines)
    path = tmp_path / "cdk2_corrupt.sdf"
    path.write_text("".join(blocks))
    return str(path)


def test_malformed_sdf_record_raises_naming_file_and_record(tmp_path):
    path = _corrupt_copy(tmp_path, bad_record=5)
    with pytest.raises(DataError, match=re.escape(f"{path}, record 5: RDKit cannot parse")):
        read_sdf(path)


def test_malformed_sdf_record_skipped(tmp_path):
    path = _corrupt_copy(tmp_path, bad_record=5)
    records, skipped = read_sdf(path, on_error="skip")
    good, _ = read_sdf(CDK2)
    assert len(records) == 46
    assert [r.name for r in records] == [r.name for k, r in enumerate(good) if k != 4]
    assert len(skipped) == 1 and f"{path}, record 5" in skipped[0]


def test_sdf_unsupported_element(tmp_path):
    # egfr's first ligand holds S and Br, which a QM9 model (H C N O F) cannot embed.
    with pytest.raises(DataError, match=re.escape(f"{EGFR}, record 1 (")) as info:
        read_sdf(EGFR, elements=(1, 6, 7, 8, 9))
    assert "unsupported element(s) S, Br" in str(info.value)


def test_sdf_oversize_molecules():
    sizes = [heavy_and_total_atoms(b) for b in sdf_blocks(CDK2)]
    first_big = next(k for k, n in enumerate(sizes) if n > 40) + 1
    with pytest.raises(DataError, match=rf"record {first_big} .*exceeds the budget of 40"):
        read_sdf(CDK2, max_atoms=40)
    records, skipped = read_sdf(CDK2, max_atoms=40, on_error="skip")
    assert len(skipped) == sum(n > 40 for n in sizes) > 0
    assert len(records) == sum(n <= 40 for n in sizes)
    assert max(len(r.atomic_numbers) for r in records) <= 40


def test_sdf_without_3d_coordinates(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    mol.SetProp("_Name", "ethanol-2d")
    AllChem.Compute2DCoords(mol)
    path = tmp_path / "flat.sdf"
    path.write_text(Chem.MolToMolBlock(mol) + "$$$$\n")
    with pytest.raises(DataError, match=re.escape(f"{path}, record 1 (ethanol-2d): no 3D")):
        read_sdf(str(path))


def test_sdf_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    with pytest.raises(DataError, match=re.escape(f"{empty}: no SDF records")):
        read_sdf(str(empty))
    missing = tmp_path / "missing.sdf"
    with pytest.raises(DataError, match=re.escape(f"{missing}: cannot read")):
        read_sdf(str(missing))


def test_all_records_bad_is_an_error_even_when_skipping(tmp_path):
    shutil.copy(EGFR, tmp_path / "egfr.sdf")
    with pytest.raises(DataError, match=r"no usable molecules \(365 skipped"):
        read_sdf(str(tmp_path / "egfr.sdf"), elements=(1,), on_error="skip")


def test_on_error_must_be_known():
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        read_sdf(CDK2, on_error="ignore")


# ---------------------------------------------------------------- XYZ


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_multi_frame_xyz(tmp_path):
    path = write(tmp_path, "two.xyz", WATER_METHANE_XYZ)
    (water, methane), skipped = read_xyz(path)
    assert skipped == []
    assert (water.name, methane.name) == ("water", "methane")
    np.testing.assert_array_equal(water.atomic_numbers, [8, 1, 1])
    np.testing.assert_array_equal(methane.atomic_numbers, [6, 1, 1, 1, 1])
    np.testing.assert_allclose(water.positions[1], [0.0, 0.7572, -0.4692], rtol=1e-6)
    oh = np.linalg.norm(water.positions[1:] - water.positions[0], axis=1)
    np.testing.assert_allclose(oh, 0.9578, atol=1e-4)
    ch = np.linalg.norm(methane.positions[1:], axis=1)
    np.testing.assert_allclose(ch, 1.0897, atol=1e-4)


def test_xyz_qm9_style_numbers_and_symbols(tmp_path):
    # QM9's raw .xyz files write 1.2*^-5 (Mathematica); atomic numbers work as symbols too.
    text = "3\n\n8 0.0 0.0 1.173*^-1\nh 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692 0.1\n"
    (water,), _ = read_xyz(write(tmp_path, "w.xyz", text))
    np.testing.assert_array_equal(water.atomic_numbers, [8, 1, 1])
    np.testing.assert_allclose(water.positions[0, 2], 0.1173, rtol=1e-6)
    assert water.name.endswith("w.xyz:1")  # blank comment: named by file and frame


def test_xyz_truncated(tmp_path):
    path = write(tmp_path, "t.xyz", WATER_METHANE_XYZ.rsplit("\n", 3)[0] + "\n")
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 2 (line 7): file ends after 3 of 5")
    ):
        read_xyz(path)
    records, skipped = read_xyz(path, on_error="skip")
    assert [r.name for r in records] == ["water"] and len(skipped) == 1


def test_xyz_bad_count_line(tmp_path):
    text = WATER_METHANE_XYZ.replace("5\nmethane", "five\nmethane")
    path = write(tmp_path, "c.xyz", text)
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 2 (line 7): expected an atom count")
    ):
        read_xyz(path)


def test_xyz_negative_count_does_not_hang(tmp_path):
    path = write(tmp_path, "n.xyz", "-2\ncomment\nH 0 0 0\n")
    with pytest.raises(DataError, match="record 1 \\(line 1\\): expected an atom count, got '-2'"):
        read_xyz(path)


def test_xyz_count_too_small_for_frame(tmp_path):
    # The water frame claims 2 atoms: its third atom line is read as the next count line.
    text = WATER_METHANE_XYZ.replace("3\nwater", "2\nwater", 1)
    path = write(tmp_path, "s.xyz", text)
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 2 (line 5): expected an atom count")
    ):
        read_xyz(path)


def test_xyz_bad_coordinate(tmp_path):
    text = WATER_METHANE_XYZ.replace("H -0.629118 0.629118 -0.629118", "H -0.629118 0.62x -0.6")
    path = write(tmp_path, "b.xyz", text)
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 2 (line 7), line 12: bad atom line")
    ):
        read_xyz(path)
    missing_z = WATER_METHANE_XYZ.replace("O 0.000000 0.000000 0.117300", "O 0.0 0.0")
    with pytest.raises(DataError, match=r"record 1 \(line 1\), line 3: bad atom line 'O 0.0 0.0'"):
        read_xyz(write(tmp_path, "z.xyz", missing_z))
    nan = WATER_METHANE_XYZ.replace("O 0.000000 0.000000 0.117300", "O 0.0 nan 0.1")
    with pytest.raises(DataError, match=r"record 1 \(water\): non-finite coordinates"):
        read_xyz(write(tmp_path, "nan.xyz", nan))


def test_xyz_unknown_and_unsupported_elements(tmp_path):
    unknown = WATER_METHANE_XYZ.replace("C 0.000000", "Qq 0.000000")
    path = write(tmp_path, "u.xyz", unknown)
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 2 (line 7), line 9: bad atom line 'Qq")
    ):
        read_xyz(path)
    selenium = WATER_METHANE_XYZ.replace("O 0.000000", "Se 0.000000")
    path = write(tmp_path, "se.xyz", selenium)
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 1 (water): unsupported element(s) Se")
    ):
        read_xyz(path)
    records, skipped = read_xyz(path, on_error="skip")
    assert [r.name for r in records] == ["methane"] and "Se" in skipped[0]


def test_xyz_oversize(tmp_path):
    path = write(tmp_path, "o.xyz", WATER_METHANE_XYZ)
    with pytest.raises(DataError, match=r"record 2 \(methane\): 5 atoms exceeds the budget of 4"):
        read_xyz(path, max_atoms=4)


def test_xyz_empty_and_missing(tmp_path):
    path = write(tmp_path, "e.xyz", "\n\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: no XYZ frames")):
        read_xyz(path)
    missing = str(tmp_path / "nope.xyz")
    with pytest.raises(DataError, match=re.escape(f"{missing}: cannot read")):
        read_xyz(missing)


# ---------------------------------------------------------------- SMILES


def _bonded_lengths(record, a, b):
    """Distances of every a-b atom pair closer than 1.7 Å (covalent bonds)."""
    z, pos = record.atomic_numbers, record.positions
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    pairs = (z[:, None] == a) & (z[None] == b) & (d > 0.5) & (d < 1.7)
    return d[pairs]


def test_smiles_to_3d():
    (methane, ethanol), skipped = read_smiles(["C", "CCO"], seed=3)
    assert skipped == []
    np.testing.assert_array_equal(methane.atomic_numbers, [6, 1, 1, 1, 1])
    np.testing.assert_array_equal(np.sort(ethanol.atomic_numbers), [1] * 6 + [6, 6, 8])
    ch = np.concatenate([_bonded_lengths(methane, 6, 1), _bonded_lengths(ethanol, 6, 1)])
    assert len(ch) == 4 + 5
    np.testing.assert_allclose(ch, 1.09, atol=0.015)
    np.testing.assert_allclose(_bonded_lengths(ethanol, 6, 6), 1.51, atol=0.03)
    np.testing.assert_allclose(_bonded_lengths(ethanol, 6, 8), 1.42, atol=0.03)
    assert np.ptp(ethanol.positions, axis=0).min() > 0.5  # really 3D
    (again, _), _ = read_smiles(["C", "CCO"], seed=3)
    np.testing.assert_array_equal(again.positions, methane.positions)  # seeded


def test_smiles_file_with_names_and_comments(tmp_path):
    path = write(tmp_path, "m.smi", "# header\nCCO ethanol\n\nc1ccccc1 benzene\n")
    records, _ = read_smiles(path)
    assert [r.name for r in records] == ["ethanol", "benzene"]
    assert len(records[1].atomic_numbers) == 12


def test_malformed_smiles():
    with pytest.raises(DataError, match=r"<SMILES list>, record 2: invalid SMILES 'C1CC\('"):
        read_smiles(["CCO", "C1CC(", "O"])
    records, skipped = read_smiles(["CCO", "C1CC(", "O"], on_error="skip")
    assert len(records) == 2 and len(skipped) == 1 and "record 2" in skipped[0]


def test_malformed_smiles_in_file(tmp_path):
    path = write(tmp_path, "bad.smi", "CCO ethanol\nC(C)(C)(C)(C)C pentavalent\n")
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 2: invalid SMILES 'C(C)(C)(C)(C)C'")
    ):
        read_smiles(path)


def test_smiles_unsupported_element():
    with pytest.raises(
        DataError, match=re.escape("<SMILES list>, record 2 (C[Se]C): unsupported element(s) Se")
    ):
        read_smiles(["CC", "C[Se]C"])
    with pytest.raises(
        DataError, match=r"record 1 \(CCO\): unsupported element\(s\) O; the model embeds \[1, 6\]"
    ):
        read_smiles(["CCO"], elements=(1, 6))


def test_smiles_oversize_and_empty(tmp_path):
    with pytest.raises(DataError, match=r"record 1 \(CCCC\): 14 atoms exceeds the budget of 10"):
        read_smiles(["CCCC"], max_atoms=10)
    with pytest.raises(DataError, match="no SMILES found"):
        read_smiles(write(tmp_path, "empty.smi", "# nothing\n"))
    with pytest.raises(DataError, match="cannot read"):
        read_smiles(str(tmp_path / "missing.smi"))


def test_sdf_implicit_hydrogens_raise_unless_added(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    path = tmp_path / "heavy_only.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(Chem.RemoveHs(mol))
    with pytest.raises(DataError, match=r"heavy_only.sdf, record 1 .*6 implicit hydrogens"):
        read_sdf(str(path))
    records, _ = read_sdf(str(path), add_hydrogens=True)
    assert sorted(records[0].atomic_numbers.tolist()) == [1] * 6 + [6, 6, 8]


def test_xyz_binary_file_is_named(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError, match=re.escape(f"{path}: not a text XYZ file")):
        read_xyz(str(path))


@pytest.mark.parametrize("separator", ["", "\n"])  # methane's count line next, or a blank
def test_xyz_frame_with_too_few_atom_lines_is_blamed_not_the_next(tmp_path, separator):
    # Water declares 3 atoms but has 2 atom lines before the next frame starts.
    text = WATER_METHANE_XYZ.replace("H 0.000000 -0.757200 -0.469200\n\n", separator)
    path = write(tmp_path, "few.xyz", text)
    expected = f"{path}, record 1 (line 1): declares 3 atoms but has 2 atom lines before line 5"
    records, skipped = read_xyz(path, on_error="skip")
    assert [r.name for r in records] == ["methane"] and skipped == [expected]
    with pytest.raises(DataError, match=re.escape(expected)):
        read_xyz(path)


def test_coincident_atoms_are_refused(tmp_path):
    at_origin = "3\nlost\nO 0 0 0\nH 0 0 0\nH 0 0 0\n"
    path = write(tmp_path, "origin.xyz", at_origin + WATER_METHANE_XYZ)
    with pytest.raises(
        DataError, match=re.escape(f"{path}, record 1 (lost): atoms 1 and 2 are 0.000 Å apart")
    ):
        read_xyz(path)
    records, skipped = read_xyz(path, on_error="skip")
    assert [r.name for r in records] == ["water", "methane"] and "3 such pairs" in skipped[0]
    assert [r.number for r in records] == [2, 3]  # record numbers in the file


def test_empty_smiles_is_skipped_like_any_bad_record():
    with pytest.raises(DataError, match=r"<SMILES list>, record 2: empty SMILES ''"):
        read_smiles(["CCO", ""])
    records, skipped = read_smiles(["CCO", "", "O"], on_error="skip")
    assert [r.name for r in records] == ["CCO", "O"] and [r.number for r in records] == [1, 3]
    assert len(skipped) == 1 and "record 2: empty SMILES" in skipped[0]
