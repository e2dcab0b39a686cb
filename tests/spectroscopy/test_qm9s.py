"""QM9S release reader on small files written in exactly the release layout.

Spectra CSVs: a header of grid values (first cell blank), then `QM9S number, v1, v2, ...`
per molecule. Molecule files (`qm9s_csv.zip` or `qm9s_csv/`): one pandas-written CSV per
molecule whose line 0 is `QM9S number, QM9 number, SMILES, atoms`, then properties and
coordinates. QM9S numbers are 0-based and are not QM9 indices.
"""

import dataclasses
import zipfile

import ml_collections
import numpy as np
import pandas as pd
import pytest

from molspectra_jax.data import qm9s, sources
from molspectra_jax.data.qm9 import load_qm9
from molspectra_jax.data.records import DataError
from molspectra_jax.experiments import convert_qm9s


def write_release_csv(path, grid, ids, values):
    with open(path, "w") as f:
        f.write("," + ",".join(repr(float(g)) for g in grid) + "\n")
        for i, row in zip(ids, values, strict=True):
            f.write(f"{i}," + ",".join(f"{v:.6e}" for v in row) + "\n")


def fake_spectra(ids, width, kind):
    return np.array([[i * 1000 + j + (kind == "raman") * 0.5 for j in range(width)] for i in ids])


def molecule_file_text(qm9s_id, qm9_id, positions):
    """A molecule file as the release writes it: pandas, with header and index column."""
    n = len(positions)
    rows = [[qm9s_id, qm9_id, "C", n], [-1100.25], [0.1] * n, [0.0, 0.0, 1.2]]
    rows += [[0.0] * 6, [0.0] * 10, [30.0, 0.0, 30.0, 0.0, 0.0, 30.0], [0.0] * 10]
    rows += [[7.5 + k for k in range(10)], [0.5] * 10]
    rows += [list(p) for p in positions]
    width = max(len(r) for r in rows)
    return pd.DataFrame([r + [None] * (width - len(r)) for r in rows]).to_csv()


@pytest.fixture(scope="module")
def qm9():
    return load_qm9(verbose=False)


def write_molecule_files(release, qm9, qm9s_to_qm9, layout):
    """One file per QM9S number with its QM9 molecule's real atom count and coordinates."""
    texts = {}
    for qm9s_id, qm9_id in qm9s_to_qm9.items():
        row = int(np.searchsorted(qm9.ids, qm9_id))
        positions = qm9.positions[qm9.offsets[row] : qm9.offsets[row + 1]]
        texts[f"{qm9s_id}.csv"] = molecule_file_text(qm9s_id, qm9_id, positions)
    if layout == "zip":
        with zipfile.ZipFile(release / "qm9s_csv.zip", "w") as z:
            for name, text in texts.items():
                z.writestr(f"qm9s_csv/{name}", text)
    else:
        (release / "qm9s_csv").mkdir()
        for name, text in texts.items():
            (release / "qm9s_csv" / name).write_text(text)


# QM9S numbers 0..5 -> QM9 indices; QM9S 6 has spectra but no molecule file.
QM9S_TO_QM9 = {0: 1, 1: 2, 2: 5, 3: 27, 4: 1000, 5: 133885}


@pytest.fixture
def release(request, tmp_path, qm9):
    """The release in `tmp_path`; molecule files zipped unless parametrized "folder"."""
    ids = np.arange(7)
    orders = {
        "ir": ids,
        "raman": ids[::-1],  # another row order: rows must be matched by id
        "uv": np.array([0, 1, 2, 4, 5, 6]),  # the one-molecule gap (3 is missing)
    }
    for kind, order in orders.items():
        grid = qm9s.GRIDS[kind]
        write_release_csv(
            tmp_path / qm9s.FILES[kind], grid, order, fake_spectra(order, len(grid), kind)
        )
    write_molecule_files(tmp_path, qm9, QM9S_TO_QM9, getattr(request, "param", "zip"))
    return tmp_path


@pytest.mark.parametrize(
    "release, chunk_rows", [("zip", 2), ("folder", 1000)], indirect=["release"]
)
def test_convert_joins_by_id_and_reports_the_gap(release, tmp_path, chunk_rows):
    out = tmp_path / f"converted{chunk_rows}"
    report = qm9s.convert_qm9s(str(release), str(out), chunk_rows=chunk_rows)
    assert report["molecules"] == 5
    assert report["missing"] == {"uv": [3], "ir": [], "raman": []}
    assert report["no_molecule_file"] == [6]
    spectra = qm9s.load_qm9s(str(out))
    assert spectra.ids.tolist() == [0, 1, 2, 4, 5]
    assert spectra.qm9_ids.tolist() == [QM9S_TO_QM9[i] for i in (0, 1, 2, 4, 5)]
    assert spectra.uv.shape == (5, 701) and spectra.ir.shape == spectra.raman.shape == (5, 3501)
    assert spectra.ir.dtype == np.float32
    for row, mol_id in enumerate(spectra.ids):
        for kind in qm9s.KINDS:
            width = len(qm9s.GRIDS[kind])
            np.testing.assert_allclose(
                getattr(spectra, kind)[row], fake_spectra([mol_id], width, kind)[0], rtol=1e-6
            )


def test_join_maps_qm9s_numbers_to_qm9_molecules(release, tmp_path, qm9):
    qm9s.convert_qm9s(str(release), str(tmp_path / "c"))
    spectra = qm9s.load_qm9s(str(tmp_path / "c"))
    dataset = qm9.subset(np.searchsorted(qm9.ids, [133885, 5, 2, 1, 77]))
    dataset_rows, spectra_rows = qm9s.join_with_qm9(spectra, dataset)
    assert dataset.ids[dataset_rows].tolist() == [1, 2, 5, 133885]  # 1000: not in dataset
    assert spectra.ids[spectra_rows].tolist() == [0, 1, 2, 5]  # 77: no spectra
    assert spectra.ir[spectra_rows][:, 0].tolist() == [0.0, 1000.0, 2000.0, 5000.0]


def test_molecule_files_numbered_differently_from_qm9_are_refused(tmp_path, qm9):
    for kind in qm9s.KINDS:
        grid = qm9s.GRIDS[kind]
        spectra = fake_spectra([0, 1], len(grid), kind)
        write_release_csv(tmp_path / qm9s.FILES[kind], grid, [0, 1], spectra)
    write_molecule_files(tmp_path, qm9, {0: 1, 1: 2}, "folder")  # CH4 (5 atoms), NH3 (4)
    qm9s.convert_qm9s(str(tmp_path), str(tmp_path / "c"))
    spectra = qm9s.load_qm9s(str(tmp_path / "c"))
    assert qm9s.join_with_qm9(spectra, qm9)[0].tolist() == [0, 1]
    # Numbered another way (here: water, QM9 3, labelled 2), NH3's spectra would meet water.
    renumbered = dataclasses.replace(qm9.subset([0, 2]), ids=np.array([1, 2]))
    with pytest.raises(DataError, match=r"1 of 2 .* \(QM9 2: 3 atoms in QM9, 4 in QM9S 1\)"):
        qm9s.join_with_qm9(spectra, renumbered)


@pytest.mark.parametrize(
    "lines",
    [
        [",0,1,2,3\n", "0,17,18,CC#N,6\n"],  # pandas header + index column
        ["17,18,CC#N,6\n", "-1100.2\n"],  # bare line 0
        ["17,18,CC#N,6,,,,\n", ""],  # padded with empty fields
        [",number,qm9,smiles,atoms\n", "0,17,18,CC#N,6\n"],  # a header with names
    ],
)
def test_molecule_header_layouts(lines):
    assert qm9s.parse_molecule_header(lines, "m.csv") == (17, 18, "CC#N", 6)


def test_bad_molecule_file_and_missing_files_are_named(release, tmp_path):
    with pytest.raises(DataError, match="x.csv: no 'QM9S number, QM9 number, SMILES, atoms'"):
        qm9s.parse_molecule_header([",0,1\n", "0,-1100.2,3\n"], "x.csv")
    bare = tmp_path / "bare"
    bare.mkdir()
    for kind in qm9s.KINDS:
        (bare / qm9s.FILES[kind]).write_text((release / qm9s.FILES[kind]).read_text())
    with pytest.raises(FileNotFoundError, match="neither qm9s_csv.zip nor qm9s_csv found"):
        qm9s.convert_qm9s(str(bare), str(tmp_path / "out"))
    archive = (release / "qm9s_csv.zip").read_bytes()
    (bare / "qm9s_csv.zip").write_bytes(archive[: len(archive) // 2])  # a cut download
    with pytest.raises(DataError, match="qm9s_csv.zip: not a readable zip archive"):
        qm9s.convert_qm9s(str(bare), str(tmp_path / "out"))


def test_wrong_grid_and_missing_spectra_file_are_named(release, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for kind in qm9s.KINDS:
        grid = qm9s.GRIDS[kind][:-1] if kind == "raman" else qm9s.GRIDS[kind]
        write_release_csv(bad / qm9s.FILES[kind], grid, [1], fake_spectra([1], len(grid), kind))
    with pytest.raises(ValueError, match="raman_boraden.csv: grid .* is not the QM9S raman grid"):
        qm9s.convert_qm9s(str(bad), str(tmp_path / "out"))
    (release / "uv_boraden.csv").unlink()
    with pytest.raises(FileNotFoundError, match="uv_boraden.csv not found"):
        qm9s.convert_qm9s(str(release), str(tmp_path / "out"))


def test_command_converts_and_reports(release, tmp_path, capsys):
    assert convert_qm9s.run(str(release), str(tmp_path / "c")) == 0
    out = capsys.readouterr().out
    assert "5 molecules with all three spectra" in out
    assert "absent from uv_boraden.csv: 1 (QM9S numbers [3])" in out
    assert convert_qm9s.run(str(tmp_path / "nothing"), "x") == 1
    assert "nothing/uv_boraden.csv not found" in capsys.readouterr().err


def test_pretraining_reads_the_converted_release_with_qm9_geometries(release, tmp_path, qm9):
    qm9s.convert_qm9s(str(release), str(tmp_path / "c"))
    config = ml_collections.ConfigDict(
        dict(spectra=f"qm9s:{tmp_path / 'c'}", cache_dir="", geometry="qm9")
    )
    molecules = sources.load(config.spectra, config)
    spectra = molecules.spectra
    assert molecules.ids.tolist() == [1, 2, 5, 1000, 133885]  # QM9S 0, 1, 2, 4, 5
    assert spectra["ir"][:, 0].tolist() == [0.0, 1000.0, 2000.0, 4000.0, 5000.0]
    assert spectra["uv"].shape == (5, 701) and spectra["raman"].dtype == np.float32
    for row, qm9_id in enumerate(molecules.ids):
        z, pos = molecules.molecule(row)
        z_ref, pos_ref = qm9.molecule(int(np.searchsorted(qm9.ids, qm9_id)))
        np.testing.assert_array_equal(z, z_ref)
        np.testing.assert_array_equal(pos, pos_ref)


def test_short_or_long_spectrum_row_is_named(release, tmp_path):
    """A short row became 3498 NaNs in the converted spectra; a long one a pandas
    ParserError naming no file."""
    path = release / qm9s.FILES["ir"]
    lines = path.read_text().splitlines(keepends=True)
    short = lines[:3] + [",".join(lines[3].split(",")[:4]) + "\n"] + lines[4:]  # QM9S 2
    path.write_text("".join(short))
    with pytest.raises(
        DataError,
        match=r"ir_boraden.csv, data row 3 \(QM9S number 2\): 3498 of 3501 spectrum values missing",
    ):
        qm9s.convert_qm9s(str(release), str(tmp_path / "c"))
    long = lines[:4] + [lines[4].rstrip("\n") + ",1.0\n"] + lines[5:]  # QM9S 3
    path.write_text("".join(long))
    with pytest.raises(DataError, match=r"ir_boraden.csv: malformed CSV .*saw 3503"):
        qm9s.convert_qm9s(str(release), str(tmp_path / "c"))
    assert not (tmp_path / "c" / "report.json").exists()


def test_join_error_names_the_converted_folder(tmp_path, qm9):
    for kind in qm9s.KINDS:
        grid = qm9s.GRIDS[kind]
        spectra = fake_spectra([0, 1], len(grid), kind)
        write_release_csv(tmp_path / qm9s.FILES[kind], grid, [0, 1], spectra)
    (tmp_path / "qm9s_csv").mkdir()
    methane = qm9.molecule(0)[1]  # QM9 1, five atoms
    for qm9s_id, qm9_id in ((0, 1), (1, 2)):  # QM9 2 is NH3 (four atoms), written with five
        text = molecule_file_text(qm9s_id, qm9_id, methane)
        (tmp_path / "qm9s_csv" / f"{qm9s_id}.csv").write_text(text)
    qm9s.convert_qm9s(str(tmp_path), str(tmp_path / "c"))
    config = ml_collections.ConfigDict(dict(cache_dir="", geometry="qm9"))
    with pytest.raises(
        DataError, match=rf"qm9s:{tmp_path / 'c'}: 1 of 2 .*QM9 2: 4 atoms in QM9, 5 in QM9S 1"
    ):
        sources.load(f"qm9s:{tmp_path / 'c'}", config)
