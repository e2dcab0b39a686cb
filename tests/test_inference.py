"""`molspectra_jax.load(workdir)`: a fine-tuned model predicts in target units, batching
never changes a number, and `experiments.predict` writes its CSV."""

import csv
import subprocess
import sys

import numpy as np
import pytest

import molspectra_jax
from molspectra_jax.configs import test as test_config
from molspectra_jax.data import sources
from molspectra_jax.data.records import DataError
from molspectra_jax.train import finetune
from molspectra_jax.train.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 6-step fine-tuning run on gap and U0 (atomrefs), its workdir and test split."""
    workdir = tmp_path_factory.mktemp("finetuned")
    config = test_config.get_config()
    results = finetune.train_and_evaluate(config, str(workdir))
    dataset = sources.load(config.data.source, config.data).select_targets(("gap", "u0"))
    test = sources.finetuning_splits(dataset, config.data)["test"]
    return workdir, results, test


def test_predictions_reproduce_the_runs_test_mae(trained):
    workdir, results, test = trained
    model = molspectra_jax.load(str(workdir))
    assert model.targets == ("gap", "u0") and model.units["u0"] == "meV"
    predicted = model.predict(test)
    for i, name in enumerate(model.targets):
        mae = np.abs(predicted[name] - test.targets[:, i]).mean()
        np.testing.assert_allclose(mae, results["test_mae"][name], rtol=1e-4)


def test_batching_and_padding_never_change_a_prediction(trained):
    workdir, _, test = trained
    model = molspectra_jax.load(str(workdir), batch_size=7)
    together = model.predict(test.subset(np.arange(10)))
    alone = [
        molspectra_jax.load(str(workdir), batch_size=1).predict(test.subset([i])) for i in range(3)
    ]
    for i in range(3):
        np.testing.assert_allclose(alone[i]["gap"][0], together["gap"][i], rtol=1e-5)
    embedded = model.embed(test.subset(np.arange(10)))
    single = model.embed(test.subset([4]))
    assert embedded.shape == (10, model.config.model.hidden)
    np.testing.assert_allclose(single[0], embedded[4], rtol=1e-5, atol=1e-5)


def test_predict_command_writes_names_and_targets(trained, tmp_path):
    workdir, _, _ = trained
    smi = tmp_path / "mols.smi"
    smi.write_text("CCO ethanol\nc1ccccc1 benzene\nnot_a_smiles broken\nCC(=O)O acetic\n")
    out = tmp_path / "preds.csv"
    command = [
        sys.executable,
        "-m",
        "experiments.predict",
        f"--workdir={workdir}",
        f"--input={smi}",
    ]
    failed = subprocess.run([*command, f"--out={out}"], capture_output=True, text=True)
    assert failed.returncode != 0 and "record 3" in failed.stderr and not out.exists()
    done = subprocess.run(
        [*command, f"--out={out}", "--on_error=skip"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stdout
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["ethanol", "benzene", "acetic"]
    assert set(rows[0]) == {"name", "gap", "u0"}
    # U0 of ethanol (QM9 atomrefs + the model's residual) is an energy near -4.2e6 meV
    assert -5e6 < float(rows[0]["u0"]) < -3.5e6


def test_load_names_what_is_wrong(trained, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        molspectra_jax.load(str(tmp_path))
    workdir, _, _ = trained
    with pytest.raises(ValueError, match="unknown molecule file type"):
        molspectra_jax.load(str(workdir)).predict(str(tmp_path / "mols.pdb"))
    with pytest.raises(DataError):
        molspectra_jax.load(str(workdir)).predict(str(tmp_path / "missing.sdf"))


def test_split_file_rows_are_the_splits(tmp_path):
    config = test_config.get_config()
    dataset = sources.load(config.data.source, config.data)
    path = tmp_path / "splits.npz"
    np.savez(path, idx_train=np.array([5, 3, 9]), idx_val=np.array([0, 1]), idx_test=np.array([2]))
    config.data.update(split_file=str(path), n_train=-1, n_valid=-1, n_test=-1)
    splits = sources.finetuning_splits(dataset, config.data)
    np.testing.assert_array_equal(splits["train"].ids, dataset.ids[[5, 3, 9]])
    np.testing.assert_array_equal(splits["test"].ids, dataset.ids[[2]])
    for bad, message in (
        (dict(idx_train=[1], idx_val=[2]), "idx_test"),
        (dict(idx_train=[1], idx_val=[1], idx_test=[3]), "twice"),
        (dict(idx_train=[10**7], idx_val=[2], idx_test=[3]), "outside"),
    ):
        np.savez(path, **{k: np.array(v) for k, v in bad.items()})
        with pytest.raises(DataError, match=message):
            sources.finetuning_splits(dataset, config.data)
