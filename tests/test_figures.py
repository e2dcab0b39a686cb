"""Fine-tuning ends with learning curves and parity plots drawn from what the workdir
holds (`metrics.jsonl`, `test_predictions.npz`); `experiments.figures` redraws them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from molspectra_jax import figures
from molspectra_jax.configs import test as test_config
from molspectra_jax.train import finetune


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finetuned")
    finetune.train_and_evaluate(test_config.get_config(), str(workdir))
    return workdir


def test_fine_tuning_writes_test_predictions_that_give_its_mae(workdir):
    results = json.loads((workdir / "results.json").read_text())
    with np.load(workdir / "test_predictions.npz") as f:
        names, true, predicted = f["names"].tolist(), f["true"], f["predicted"]
        ids, atomref_sum = f["ids"], f["atomref_sum"]
    assert names == ["gap", "u0"] and true.shape == predicted.shape == (32, 2)
    assert len(np.unique(ids)) == 32
    mae = np.abs(predicted - true).mean(0)
    np.testing.assert_allclose(mae, [results["test_mae"][n] for n in names], rtol=1e-5)
    assert not atomref_sum[:, 0].any() and atomref_sum[:, 1].all()  # atomrefs: u0 only


def test_train_rows_log_the_mae_of_every_target(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train = [r for r in rows if r["split"] == "train"]
    assert train and all(r["mae_gap"] > 0 and r["mae_u0"] > 0 for r in train)
    series = figures.learning_curve_series(rows)
    assert set(series) == {"gap", "u0"} and set(series["gap"]) == {"train", "valid"}
    assert series["gap"]["valid"][0] == [r["step"] for r in rows if r["split"] == "valid"]


def test_the_figures_are_real_pngs_and_the_command_redraws_them(workdir):
    for name in ("learning_curves.png", "parity.png"):
        image = imread(workdir / "figures" / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0
        (workdir / "figures" / name).unlink()
    run = subprocess.run(
        [sys.executable, "-m", "experiments.figures", f"--workdir={workdir}"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (workdir / "figures" / "parity.png").exists()
    assert (workdir / "figures" / "learning_curves.png").exists()


def test_the_command_names_a_folder_that_is_not_a_workdir(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "experiments.figures", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "no metrics.jsonl" in run.stderr


def test_force_models_get_a_force_component_panel(tmp_path):
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(90, 3))
    predictions = {
        "names": np.asarray(["energy", "forces"]),
        "units": np.asarray(["kcal/mol", "kcal/mol/Å"]),
        "true": rng.normal(size=(10, 1)),
        "predicted": rng.normal(size=(10, 1)),
        "atomref_sum": np.zeros((10, 1)),
        "forces_true": forces,
        "forces_predicted": forces + 0.1,
    }
    out = figures.draw_parity(predictions, str(tmp_path / "parity.png"))
    assert imread(out).shape[1] > 2 * imread(out).shape[0] * 0.9  # two panels side by side
