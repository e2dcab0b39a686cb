"""MD17 npz reader on the shipped real ethanol frames and on broken files."""

import ml_collections
import numpy as np
import pytest

from molspectra_jax.data import md17, sources
from molspectra_jax.data.records import DataError


@pytest.fixture(scope="module")
def raw():
    with np.load(md17.shipped_md17_path()) as f:
        return {k: f[k] for k in f.files}


def test_shipped_ethanol_loads_frame_by_frame_in_release_units(raw):
    dataset = md17.load_md17(md17.shipped_md17_path())
    assert len(dataset) == 2000 and dataset.target_names == ("energy",)
    assert raw["z"].tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]  # C2H5OH
    for frame in (0, 1234, 1999):
        z, pos = dataset.molecule(frame)
        np.testing.assert_array_equal(z, raw["z"])
        np.testing.assert_allclose(pos, raw["R"][frame], rtol=1e-6)  # Å
        atoms = slice(dataset.offsets[frame], dataset.offsets[frame + 1])
        np.testing.assert_allclose(dataset.atom_targets[atoms], raw["F"][frame], rtol=1e-6)
        assert dataset.targets[frame, 0] == raw["E"][frame, 0]  # kcal/mol, float64 kept
    # Ethanol at 500 K: energies spread over a few kcal/mol, forces tens of kcal/mol/Å.
    assert 1 < dataset.targets.std() < 20 and 5 < np.abs(dataset.atom_targets).mean() < 50


def test_md17_split_is_950_50_rest_and_seeded(raw):
    config = ml_collections.ConfigDict(
        dict(source="md17", split_seed=0, n_train=950, n_valid=50, n_test=-1)
    )
    parts = sources.finetuning_splits(sources.load(config.source, config), config)
    assert [len(parts[s]) for s in sources.SPLITS] == [950, 50, 1000]
    ids = np.concatenate([parts[s].ids for s in sources.SPLITS])
    assert sorted(ids.tolist()) == list(range(2000))
    assert sources.parse_targets("all", "md17") == ("energy",)
    with pytest.raises(ValueError, match=r"unknown target\(s\) \['gap'\]"):
        sources.parse_targets("gap", "md17:aspirin.npz")
    config.n_train = 1990
    with pytest.raises(DataError, match="leaving test frames of 2000; got"):
        sources.finetuning_splits(sources.load(config.source, config), config)


def test_broken_files_are_named(raw, tmp_path):
    missing = tmp_path / "no_forces.npz"
    np.savez(missing, R=raw["R"][:3], E=raw["E"][:3], z=raw["z"])
    with pytest.raises(DataError, match=r"no_forces.npz: arrays \['F'\] missing"):
        md17.load_md17(str(missing))
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, R=raw["R"][:3, :8], E=raw["E"][:3], F=raw["F"][:3], z=raw["z"])
    with pytest.raises(DataError, match="shapes.npz: shapes R .* do not fit 9 atoms"):
        md17.load_md17(str(shapes))
    energies = tmp_path / "energies.npz"
    np.savez(energies, R=raw["R"][:3], E=raw["E"][:2], F=raw["F"][:3], z=raw["z"])
    with pytest.raises(DataError, match=r"energies.npz: shapes .* E \(2, 1\)"):
        md17.load_md17(str(energies))
    nan = tmp_path / "nan.npz"
    forces = raw["F"][:3].copy()
    forces[1, 2, 0] = np.nan
    np.savez(nan, R=raw["R"][:3], E=raw["E"][:3], F=forces, z=raw["z"])
    with pytest.raises(DataError, match="nan.npz: non-finite"):
        md17.load_md17(str(nan))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(open(md17.shipped_md17_path(), "rb").read()[:5000])
    with pytest.raises(DataError, match="corrupt.npz: not a readable npz"):
        md17.load_md17(str(corrupt))
    with pytest.raises(FileNotFoundError, match="MD17 file .*absent.npz not found"):
        md17.load_md17(str(tmp_path / "absent.npz"))


def test_non_integer_atomic_numbers_are_refused(raw, tmp_path):
    """z = 6.4 was cast to carbon."""
    z = raw["z"].astype(np.float64)
    z[1] = 6.4
    path = tmp_path / "float_z.npz"
    np.savez(path, R=raw["R"][:3], E=raw["E"][:3], F=raw["F"][:3], z=z)
    with pytest.raises(DataError, match=r"float_z.npz: z holds \[6.4\] at atoms \[1\], not atomic"):
        md17.load_md17(str(path))
    np.savez(path, R=raw["R"][:3], E=raw["E"][:3], F=raw["F"][:3], z=raw["z"].astype(float))
    assert md17.load_md17(str(path)).atomic_numbers[:3].tolist() == [6, 6, 8]  # 6.0 is fine
    np.savez(path, R=raw["R"][:3], E=raw["E"][:3], F=raw["F"][:3], z=raw["z"] * 0)
    with pytest.raises(DataError, match=r"z holds \[0, 0, 0, 0, 0\]"):
        md17.load_md17(str(path))
