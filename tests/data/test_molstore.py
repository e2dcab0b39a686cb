"""Molecule store: a real SDF in PCQM4Mv2's layout (heavy atoms, RDKit writer) converted,
resumed after an interruption, refused when it would change, batched without copying."""

import os
import subprocess
import sys

import numpy as np
import pytest

from molspectra_jax.configs import pretrain_qm9s
from molspectra_jax.data import molfiles, molstore, sources
from molspectra_jax.data.batching import (
    BatchIterator,
    candidate_edges,
    candidate_radius,
    count_candidate_edges,
    make_budget,
)
from molspectra_jax.data.records import DataError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMILES = ["CCO", "c1ccccc1O", "CC(=O)N", "C1CC1C#N", "OC(=O)CF", "CN1C=NC=C1", "CCCCCC"] * 3
SELENIUM, BROKEN = 6, 11  # records (1-based) the store must skip and name


@pytest.fixture(scope="module")
def sdf_file(tmp_path_factory) -> str:
    """Heavy-atom 3D records as PCQM4Mv2's `pcqm4m-v2-train.sdf` holds them (RDKit's
    SDWriter, no names, hydrogens implicit), one unsupported element, one broken record."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    path = str(tmp_path_factory.mktemp("sdf") / "pcqm4m-v2-train.sdf")
    smiles = list(SMILES)
    smiles[SELENIUM - 1] = "C[Se]C"
    blocks = []
    for i, s in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(s))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        block = Chem.MolToMolBlock(Chem.RemoveHs(mol))
        blocks.append(block.split("\n", 1)[1] if i + 1 == BROKEN else block)  # header cut
    with open(path, "w") as f:
        f.writelines("\n" + b.split("\n", 1)[1] + "$$$$\n" for b in blocks)  # empty names
    return path


def convert(sdf, out, **options):
    return molstore.convert_sdf(sdf, out, progress=False, **options)


def test_store_holds_what_the_sdf_reader_reads(sdf_file, tmp_path):
    summary = convert(sdf_file, str(tmp_path / "store"), chunk_size=4)
    records, skipped = molfiles.read_sdf(sdf_file, add_hydrogens=True, on_error="skip")
    assert summary.molecules == len(records) == len(SMILES) - 2
    assert summary.skipped == len(skipped) == 2
    store = molstore.open_store(str(tmp_path / "store"))
    assert isinstance(store.positions, np.memmap) and store.store == str(tmp_path / "store")
    np.testing.assert_array_equal(store.ids, [r.number for r in records])
    assert SELENIUM not in store.ids and BROKEN not in store.ids
    for m, record in enumerate(records):
        z, pos = store.molecule(m)
        np.testing.assert_array_equal(z, record.atomic_numbers)
        np.testing.assert_array_equal(pos, record.positions)
        assert (z == 1).any()  # hydrogens placed
    lines = open(tmp_path / "store" / "skipped.txt").read().splitlines()
    assert len(lines) == 2
    assert f"record {SELENIUM}" in lines[0] and "unsupported element(s) Se" in lines[0]
    assert f"record {BROKEN}" in lines[1] and "cannot parse" in lines[1]
    assert not os.path.exists(tmp_path / "store" / "parts")
    # The registered source opens it; the conversion counted the default edge radius.
    loaded = sources.load(f"molstore:{tmp_path / 'store'}", None)
    np.testing.assert_array_equal(
        candidate_edges(loaded, 6.0).n_edges, count_candidate_edges(loaded, 6.0)
    )


def test_interrupted_conversion_resumes_to_the_same_store(sdf_file, tmp_path, monkeypatch):
    reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")
    convert(sdf_file, reference, chunk_size=3)
    parse = molstore.parse_sdf_chunk
    calls = []

    def dies_on_the_third_chunk(payload):
        calls.append(payload[1])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) mid-conversion
        return parse(payload)

    monkeypatch.setattr(molstore, "parse_sdf_chunk", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        convert(sdf_file, resumed, chunk_size=3)
    parts = sorted(os.listdir(os.path.join(resumed, "parts")))
    assert parts == ["part-000000.npz", "part-000001.npz"]
    with pytest.raises(DataError, match="its conversion has not finished"):
        molstore.open_store(resumed)
    monkeypatch.setattr(molstore, "parse_sdf_chunk", parse)
    summary = convert(sdf_file, resumed, chunk_size=3)
    assert (summary.chunks_resumed, summary.chunks_parsed) == (2, 5)
    arrays = [f"{name}.npy" for name in molstore.ARRAYS]
    # The counts the default stage-1 run reads (its cutoff, skin and noise), not recounted.
    c = pretrain_qm9s.get_config()
    radius = candidate_radius(c.model.cutoff, c.data.skin, c.loss.noise_sigma)
    counts = f"edge_counts/r{radius:.4f}.npy"
    for name in (*arrays, "skipped.txt", "store.json", counts):
        a, b = (open(os.path.join(root, name), "rb").read() for root in (resumed, reference))
        assert a == b, name
    again = convert(sdf_file, resumed, chunk_size=3)  # complete: nothing to do
    assert again.chunks_parsed == 0 and again.molecules == summary.molecules


def test_worker_processes_write_the_same_store(sdf_file, tmp_path):
    """The CLI with 2 spawned workers: byte-identical arrays to an inline conversion."""
    inline = str(tmp_path / "inline")
    convert(sdf_file, inline, chunk_size=2)
    pooled = str(tmp_path / "pooled")
    command = [sys.executable, "-m", "experiments.convert_molecules", "--input", sdf_file]
    command += ["--out", pooled, "--chunk_size", "2", "--workers", "2", "--no_progress"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(SMILES) - 2} molecules -> {pooled} (2 records skipped" in done.stdout
    for name in molstore.ARRAYS:
        a, b = (np.load(os.path.join(root, f"{name}.npy")) for root in (inline, pooled))
        np.testing.assert_array_equal(a, b)


def test_a_store_refuses_another_conversion(sdf_file, tmp_path):
    out = str(tmp_path / "store")
    convert(sdf_file, out, chunk_size=4)
    with pytest.raises(DataError, match="holds another conversion .*chunk_size: 4 there, 5 now"):
        convert(sdf_file, out, chunk_size=5)
    with pytest.raises(DataError, match="no such file"):
        convert(str(tmp_path / "missing.sdf"), out)
    with pytest.raises(DataError, match="not a complete molecule store .*no such folder"):
        molstore.open_store(str(tmp_path / "nowhere"))


def test_store_splits_batch_without_copying(sdf_file, tmp_path):
    """Pre-training rows of a memory-mapped store batch as the copied-out subset does."""
    out = str(tmp_path / "store")
    convert(sdf_file, out, chunk_size=4)
    store = molstore.open_store(out)
    rows = sources.split_rows(len(store), (len(store) - 4, 4), 0, {"train": -1, "valid": -1})
    edges = candidate_edges(store, 6.0)
    budget = make_budget(store, edges, 4, rows=rows["train"])
    by_rows = BatchIterator(store, edges, budget, rows=rows["train"], seed=1)
    subset = store.subset(rows["train"])
    copied = BatchIterator(subset, candidate_edges(subset, 6.0), budget, seed=1)
    for _ in range(6):
        a, b = next(by_rows), next(copied)
        np.testing.assert_array_equal(a.graph.positions, b.graph.positions)
        np.testing.assert_array_equal(a.graph.senders, b.graph.senders)
        np.testing.assert_array_equal(a.molecule_index, b.molecule_index)
