"""Store identity: a run that would make other spectra is refused before anything is
written; a longer order of the same molecules grows the store; every join checks atoms.

Stores are filled through the store API (pending records, then a `generate` call with
nothing left to compute), so no spectra are computed here.
"""

import json
import os
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from molspectra_jax.data import sources
from molspectra_jax.data.qm9 import load_qm9
from molspectra_jax.data.records import DataError, different_atoms
from molspectra_jax.elements import formula
from molspectra_jax.spectroscopy import embedded, generate, identity
from molspectra_jax.spectroscopy.store import SpectraStore

SMILES = ["CCO", "CC#C", "C=O", "N", "O"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QM9_SEED0 = {"kind": "qm9", "path": None, "seed": 0, "label": "qm9pack QM9, seeded order (seed 0)"}


def fake_records(z, positions, seed: int) -> dict:
    """Records shaped like the components' output (atoms as given), random sticks."""
    rng = np.random.default_rng(seed)
    k = max(3 * len(z) - 6, 1)
    return {
        "vib": {
            "atomic_numbers": z,
            "positions": positions,
            "frequencies": rng.uniform(500, 3500, k),
            "ir_intensities": rng.uniform(0, 100, k),
            "raman_activities": rng.uniform(0, 100, k),
            "energy": -10.0,
            "n_imaginary": 0,
        },
        "uv": {
            "excitation_energies": rng.uniform(4, 9, 3),
            "oscillator_strengths": rng.uniform(0, 0.1, 3),
            "energy": -100.0,
        },
    }


def fill(out, ids, molecules, **kwargs) -> generate.Summary:
    """Write pending records of `ids` that are not stored yet, then run `generate` (which
    only consolidates and records the identity: nothing is left to compute)."""
    store = SpectraStore(str(out))
    for mol_id, (z, pos) in zip(ids, molecules, strict=True):
        for component, record in fake_records(z, pos, mol_id).items():
            if mol_id not in store.done_ids(component):
                store.save_result(component, mol_id, record)
    return run(out, ids, molecules, **kwargs)


def run(out, ids, molecules, shard_size=2, **kwargs) -> generate.Summary:
    settings = generate.GenerationSettings(shard_size=shard_size)
    return generate.generate(
        ids, molecules.__getitem__, str(out), settings, progress=False, workers=1, **kwargs
    )


def snapshot(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
        for d, _, names in os.walk(folder)
        for f in names
    }


@pytest.fixture(scope="module")
def mols(molecule):
    return [molecule(s) for s in SMILES]


def test_new_store_records_its_identity(tmp_path, mols):
    summary = fill(tmp_path, [10, 11, 12], mols[:3], source=QM9_SEED0)
    assert summary.computed == 0 and summary.skipped == 6
    stored = json.loads((tmp_path / "store.json").read_text())
    assert stored["source"] == QM9_SEED0 and stored["shard_size"] == 2
    assert stored["components"]["uv"]["settings"]["xc"] == "b3lyp"
    assert stored["molecules"]["ids"] == [10, 11, 12]
    assert stored["molecules"]["formulas"] == ["C2H6O", "C3H4", "CH2O"]
    assert SpectraStore(str(tmp_path)).read_shard("vib", 1)["ids"].tolist() == [12]


def test_other_shard_size_is_refused_before_anything_is_written(tmp_path, mols):
    """Probe 1: --shard_size 3 on a store of 4 rewrote shard 0 with 3 molecules."""
    fill(tmp_path, [1, 2, 3, 4], mols[:4], shard_size=4, source=QM9_SEED0)
    before = snapshot(tmp_path)
    message = r"shard_size: stored 4, requested 3.*new store \(--out\)"
    with pytest.raises(identity.StoreConflict, match=re.compile(message, re.S)):
        run(tmp_path, [1, 2, 3, 4], mols[:4], shard_size=3, source=QM9_SEED0)
    assert snapshot(tmp_path) == before
    # A store without store.json (written before it existed): its shards' metadata counts.
    (tmp_path / "store.json").unlink()
    with pytest.raises(identity.StoreConflict, match="shard_size: stored 4, requested 3"):
        run(tmp_path, [1, 2, 3, 4], mols[:4], shard_size=3, source=QM9_SEED0)
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if k != "store.json"}


def test_other_seed_is_refused_naming_each_difference(tmp_path, mols):
    """Probe 1: --seed 5 --limit 1 on an existing store overwrote shard 0."""
    fill(tmp_path, [1, 2, 3, 4], mols[:4], source=QM9_SEED0)
    before = snapshot(tmp_path)
    seed5 = dict(QM9_SEED0, seed=5, label="qm9pack QM9, seeded order (seed 5)")
    with pytest.raises(identity.StoreConflict) as info:
        run(tmp_path, [77], mols[4:], source=seed5)
    assert "source seed: stored 0, requested 5" in str(info.value)
    assert "molecule order: position 0 holds id 1 in the store, requested id 77" in str(info.value)
    assert snapshot(tmp_path) == before


def test_longer_order_grows_the_store(tmp_path, mols):
    """A larger --limit of the same source extends the store (how the shipped set grew)."""
    fill(tmp_path, [1, 2, 3], mols[:3], source=QM9_SEED0)
    shard0 = open(SpectraStore(str(tmp_path)).shard_path("vib", 0), "rb").read()
    grown = fill(tmp_path, [1, 2, 3, 4], mols[:4], source=QM9_SEED0)
    assert grown.skipped == 8
    store = SpectraStore(str(tmp_path))
    assert store.read_shard("vib", 1)["ids"].tolist() == [3, 4]
    assert open(store.shard_path("vib", 0), "rb").read() == shard0
    assert json.loads((tmp_path / "store.json").read_text())["molecules"]["count"] == 4


def test_shorter_order_rewrites_nothing(tmp_path, mols):
    """Probe 1: --limit 1 on a store of 4 rewrote shard 0 with one molecule."""
    fill(tmp_path, [1, 2, 3, 4], mols[:4], source=QM9_SEED0)
    before = snapshot(tmp_path)
    assert run(tmp_path, [1], mols[:1], source=QM9_SEED0).computed == 0
    assert snapshot(tmp_path) == before
    assert SpectraStore(str(tmp_path)).read_shard("uv", 0)["ids"].tolist() == [1, 2]


def test_other_settings_are_refused(tmp_path, mols):
    from molspectra_jax.spectroscopy.electronic import ElectronicSettings

    fill(tmp_path, [1, 2], mols[:2])
    settings = generate.GenerationSettings(
        shard_size=2, component_settings={"uv": ElectronicSettings(basis="def2-svp")}
    )
    with pytest.raises(identity.StoreConflict, match="uv settings basis: stored '6-31g', reque"):
        generate.generate([1, 2], mols.__getitem__, str(tmp_path), settings, progress=False)


def smiles_source(tmp_path, lines):
    path = tmp_path / "mols.smi"
    path.write_text("".join(f"{s} {name}\n" for s, name in lines))
    return sources.make_source("smiles", str(path))


def fill_from(out, source) -> generate.Summary:
    molecules = [source.get(p) for p in range(len(source.ids))]
    return fill(out, source.ids, molecules, source=source.identity, names=source.names)


def test_reordered_smiles_file_is_refused_naming_the_first_mismatch(tmp_path):
    """Probe 2: a reordered SMILES file into the same --out skipped everything and renamed
    id 1 (ethanol's spectra) CC#C."""
    out = tmp_path / "store"
    fill_from(out, smiles_source(tmp_path, [("CCO", "ethanol"), ("CC#C", "propyne")]))
    assert json.loads((out / "names.json").read_text()) == {"1": "ethanol", "2": "propyne"}
    before = snapshot(out)
    reordered = smiles_source(tmp_path, [("CC#C", "propyne"), ("CCO", "ethanol")])
    with pytest.raises(identity.StoreConflict, match="molecule 1: stored C2H6O, requested C3H4"):
        fill_from(out, reordered)
    assert snapshot(out) == before
    # Without store.json, the stored geometries tell the molecules apart.
    (out / "store.json").unlink()
    with pytest.raises(
        identity.StoreConflict, match="molecule 1: its stored 'vib' record holds C2H6O, the input"
    ):
        fill_from(out, reordered)
    assert snapshot(out) == {k: v for k, v in before.items() if k != "store.json"}


def test_store_from_a_file_is_not_joined_with_qm9_by_id(tmp_path):
    """Probe 2: pre-training paired a SMILES store's spectra with QM9 molecules 1, 2."""
    out = tmp_path / "store"
    fill_from(out, smiles_source(tmp_path, [("CCO", "ethanol"), ("CC#C", "propyne")]))
    config = ml_collections.ConfigDict(dict(cache_dir="", geometry="qm9"))
    with pytest.raises(DataError, match=f"{out}: its molecules come from smiles file"):
        sources.load(f"store:{out}", config)
    (out / "store.json").unlink()  # an older store: the atoms tell
    with pytest.raises(DataError, match=r"2 of 2 molecules differ .*id 1: the store holds C2H6O, "):
        sources.load(f"store:{out}", config)
    config.geometry = "spectra"
    own = sources.load(f"store:{out}", config)
    assert own.ids.tolist() == [1, 2] and own.spectra["ir"].shape == (2, 3501)


def test_shipped_set_joins_qm9_atom_for_atom():
    """The shipped store (no store.json) keeps joining: its atoms are its QM9 molecules'."""
    shipped = embedded.load_embedded_spectra()
    assert identity.read(embedded.embedded_spectra_dir())["molecules"] is None
    qm9 = load_qm9(verbose=False)
    molecules = qm9.subset(np.searchsorted(qm9.ids, shipped.ids))
    assert not len(
        different_atoms(
            shipped.atomic_numbers,
            shipped.atom_offsets,
            molecules.atomic_numbers,
            molecules.offsets,
        )
    )
    assert not os.path.exists(os.path.join(embedded.embedded_spectra_dir(), "store.json"))


def test_different_atoms_ignores_atom_order():
    z = np.array([6, 1, 1, 8, 1, 7, 1, 1, 1])
    offsets = np.array([0, 3, 5, 9])
    other = np.array([1, 6, 1, 8, 1, 7, 1, 1, 6])
    assert different_atoms(z, offsets, other, offsets).tolist() == [2]
    assert different_atoms(z, offsets, z[:8], np.array([0, 3, 5, 8])).tolist() == [2]


def test_formula_is_hill_notation():
    assert formula([6, 6, 8, 1, 1, 1, 1, 1, 1]) == "C2H6O"
    assert formula([7, 1, 1, 1]) == "H3N"
    assert formula([8, 1, 1]) == "H2O"


def test_command_skips_and_lists_bad_records_with_on_error_skip(tmp_path):
    """One bad SMILES aborted the job with no way past it; now --on_error=skip leaves it
    out (ids stay record numbers) and lists it at the end. Refusals exit 1 with the why."""
    smi = tmp_path / "mols.smi"
    smi.write_text("CCO ethanol\nC1CC( broken\nO water\n")
    out = tmp_path / "store"
    command = [sys.executable, "-m", "experiments.generate_spectra", "--source", "smiles"]
    command += ["--input", str(smi), "--out", str(out), "--shard_size", "2", "--no_progress"]

    def cli(*extra):
        return subprocess.run(
            command + list(extra), cwd=REPO, capture_output=True, text=True, timeout=120
        )

    refused = cli()
    assert refused.returncode == 1 and "record 2: invalid SMILES 'C1CC('" in refused.stderr
    assert not out.exists()
    source = sources.make_source("smiles", str(smi), on_error="skip")
    assert source.ids.tolist() == [1, 3] and "record 2" in source.skipped[0]
    store = SpectraStore(str(out))
    for p, mol_id in enumerate(source.ids.tolist()):  # finished already: nothing to compute
        for component, record in fake_records(*source.get(p), mol_id).items():
            store.save_result(component, mol_id, record)
    done = cli("--on_error=skip")
    assert done.returncode == 0, done.stderr
    assert "computed 0, skipped 4" in done.stdout
    assert f"SKIPPED unreadable input record: {smi}, record 2: invalid SMILES" in done.stdout
    assert store.read_shard("vib", 0)["ids"].tolist() == [1, 3]
    assert json.loads((out / "names.json").read_text()) == {"1": "ethanol", "3": "water"}
    other = cli("--on_error=skip", "--shard_size", "3")
    assert other.returncode == 1 and "shard_size: stored 2, requested 3" in other.stderr
