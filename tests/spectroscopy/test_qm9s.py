"""QM9S release reader on small files written in exactly the release layout."""

import numpy as np
import pytest

from molspectra_jax.data import qm9s
from molspectra_jax.data.records import MoleculeDataset


def write_release_csv(path, grid, ids, values):
    """Header = grid values (first cell blank), then `id, v1, v2, ...` per molecule."""
    with open(path, "w") as f:
        f.write("," + ",".join(repr(float(g)) for g in grid) + "\n")
        for i, row in zip(ids, values, strict=True):
            f.write(f"{i}," + ",".join(f"{v:.6e}" for v in row) + "\n")


def fake_spectra(ids, width, kind):
    return np.array([[i * 1000 + j + (kind == "raman") * 0.5 for j in range(width)] for i in ids])


@pytest.fixture
def release(tmp_path):
    ids = np.array([1, 2, 3, 4, 5, 6])
    orders = {
        "ir": ids,
        "raman": ids[::-1],  # another row order: rows must be matched by id
        "uv": np.array([1, 2, 3, 5, 6]),  # the one-molecule gap (4 is missing)
    }
    for kind, order in orders.items():
        grid = qm9s.GRIDS[kind]
        write_release_csv(
            tmp_path / qm9s.FILES[kind], grid, order, fake_spectra(order, len(grid), kind)
        )
    return tmp_path


@pytest.mark.parametrize("chunk_rows", [2, 1000])
def test_convert_joins_by_id_and_reports_the_gap(release, tmp_path, chunk_rows):
    out = tmp_path / f"converted{chunk_rows}"
    report = qm9s.convert_qm9s(str(release), str(out), chunk_rows=chunk_rows)
    assert report["molecules"] == 5
    assert report["missing"] == {"uv": [4], "ir": [], "raman": []}
    spectra = qm9s.load_qm9s(str(out))
    assert spectra.ids.tolist() == [1, 2, 3, 5, 6]
    assert spectra.uv.shape == (5, 701) and spectra.ir.shape == spectra.raman.shape == (5, 3501)
    assert spectra.ir.dtype == np.float32
    for row, mol_id in enumerate(spectra.ids):
        np.testing.assert_allclose(
            spectra.ir[row], fake_spectra([mol_id], 3501, "ir")[0], rtol=1e-6
        )
        np.testing.assert_allclose(
            spectra.raman[row], fake_spectra([mol_id], 3501, "raman")[0], rtol=1e-6
        )
        np.testing.assert_allclose(spectra.uv[row], fake_spectra([mol_id], 701, "uv")[0], rtol=1e-6)


def test_join_with_qm9_geometries_by_id(release, tmp_path):
    qm9s.convert_qm9s(str(release), str(tmp_path / "c"))
    spectra = qm9s.load_qm9s(str(tmp_path / "c"))
    n = 4  # QM9 ids 6, 5, 4, 7 (no spectra for 7; no uv for 4)
    dataset = MoleculeDataset(
        ids=np.array([6, 5, 4, 7]),
        atomic_numbers=np.ones(n, np.int32),
        positions=np.zeros((n, 3), np.float32),
        offsets=np.arange(n + 1),
        targets=np.zeros((n, 0)),
    )
    dataset_rows, spectra_rows = qm9s.join_with_qm9(spectra, dataset)
    assert dataset.ids[dataset_rows].tolist() == spectra.ids[spectra_rows].tolist() == [5, 6]


def test_wrong_grid_and_missing_file_are_named(release, tmp_path):
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
