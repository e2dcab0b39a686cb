"""Fine-tuning on a user's own files, end to end: a CSV of SMILES with RDKit descriptors
as targets, and extended XYZ frames with energies and forces. The run writes its split
(splits.npz, read back by `data.split_file`), and its model loads without the file."""

import csv
import os

import numpy as np
import pytest

import molspectra_jax
from molspectra_jax.configs import finetune_md17
from molspectra_jax.configs import test as test_config
from molspectra_jax.data import sources
from molspectra_jax.train import finetune
from tests.data.test_labelled_files import write_extxyz

SMILES = (
    "C CC CCC CCCC CC(C)C CCO CCCO CC(C)O OCCO CC=O CC(C)=O CCC(C)=O CC(=O)O CCC(=O)O "
    "COC CCOCC C1CC1 C1CCC1 C1CCCC1 C1CCOC1 C1CCNC1 CN CCN CNC CN(C)C CC#N C#C CC#C "
    "C=C C=CC=C c1ccccc1 Cc1ccccc1 Oc1ccccc1 Nc1ccccc1 c1ccncc1 c1ccoc1 c1cc[nH]c1 "
    "NC=O CNC=O CC(N)=O OC=O COC=O"
).split()


@pytest.fixture(scope="module")
def descriptor_csv(tmp_path_factory):
    """43 real molecules with RDKit's logP and TPSA (Å^2 in the header)."""
    from rdkit import Chem
    from rdkit.Chem import Crippen, rdMolDescriptors

    path = tmp_path_factory.mktemp("csv") / "descriptors.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["smiles", "logP", "TPSA [Å^2]"])
        for smiles in SMILES:
            mol = Chem.MolFromSmiles(smiles)
            writer.writerow([smiles, Crippen.MolLogP(mol), rdMolDescriptors.CalcTPSA(mol)])
    return path


def csv_config(path, **data):
    c = test_config.get_config()
    c.target = "all"
    c.heads.atomref = ()
    c.data.update(source=f"csv:{path}", n_train=-1, n_valid=-1, n_test=-1, **data)
    c.data.elements = (1, 6, 7, 8)
    return c


def test_csv_fine_tuning_writes_its_split_and_loads_without_the_file(
    descriptor_csv, tmp_path, capsys
):
    workdir = tmp_path / "run"
    results = finetune.train_and_evaluate(csv_config(descriptor_csv), str(workdir))
    assert set(results["test_mae"]) == {"logP", "TPSA"}
    assert "| | logP | TPSA (Å^2) |" in capsys.readouterr().out
    with np.load(workdir / "splits.npz") as f:
        parts = {k: f[k] for k in ("idx_train", "idx_val", "idx_test")}
    every = np.concatenate(list(parts.values()))
    assert sorted(every) == list(range(len(SMILES)))  # every row once
    assert len(parts["idx_train"]) == int(len(SMILES) * 110 / 131)

    # The same split read back from the file the run wrote.
    again = csv_config(descriptor_csv, split_file=str(workdir / "splits.npz"))
    finetune.train_and_evaluate(again, str(tmp_path / "again"))
    assert (tmp_path / "again" / "splits.npz").read_bytes() == (workdir / "splits.npz").read_bytes()

    os.remove(descriptor_csv)  # the model needs the checkpoint only
    model = molspectra_jax.load(str(workdir))
    assert model.targets == ("logP", "TPSA") and model.units == {"logP": "", "TPSA": "Å^2"}
    from molspectra_jax.data.molfiles import read_smiles

    predicted = model.predict(read_smiles(["CCO", "c1ccccc1"])[0])
    assert predicted["TPSA"].shape == (2,) and np.isfinite(predicted["TPSA"]).all()


def test_extxyz_energy_and_force_fine_tuning_in_ev(tmp_path, capsys):
    frames = write_extxyz(tmp_path / "ethanol.extxyz", frames=60)
    c = finetune_md17.get_config("cpu")
    c.model.update(hidden=16, num_layers=1, num_heads=2, num_rbf=8)
    c.data.update(source=f"extxyz:{frames}", n_train=-1, n_valid=-1, n_test=-1)
    c.data.elements = (1, 6, 8)
    c.optim.warmup_steps = 2
    c.train.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3, progress_bar=False)
    results = finetune.train_and_evaluate(c, str(tmp_path / "run"))
    assert set(results["test_mae"]) == {"energy", "forces"}
    assert "| | energy (eV) | forces (eV/Å) |" in capsys.readouterr().out
    with np.load(tmp_path / "run" / "test_predictions.npz") as f:  # per-atom forces, in order
        error = np.abs(f["forces_predicted"] - f["forces_true"]).mean()
    assert error == pytest.approx(results["test_mae"]["forces"], rel=1e-4)
    model = molspectra_jax.load(str(tmp_path / "run"))
    assert model.forces and model.units == {"energy": "eV", "forces": "eV/Å"}
    assert sources.resolve(c.data.source)[0].units["energy"] == "eV"
