"""End to end: the fine-tuning entry point on real QM9, killed and resumed."""

import json
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_finetune_killed_and_resumed_continues_its_step_count(tmp_path, experiment_command):
    workdir = tmp_path / "run"
    command = experiment_command(
        "finetune",
        "configs/test.py",
        workdir,
        "--config.target=homo",
        "--config.train.num_steps=12",
        "--config.train.checkpoint_every=4",
        "--config.train.eval_every=4",
    )
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    latest = workdir / "checkpoints" / "latest"
    deadline = time.time() + 500
    while time.time() < deadline and first.poll() is None:
        if latest.exists() and any(p.name.isdigit() for p in latest.iterdir()):
            break
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 12, saved

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from step {saved[-1]}" in second.stdout
    assert "| test MAE (best valid checkpoint) |" in second.stdout  # the MAE table
    config = json.loads((workdir / "config.json").read_text())
    assert config["target"] == "homo"  # the command-line override reached the run
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["test_mae"]) == {"homo"} and results["steps"] == 12
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert max(steps) == 12


@pytest.mark.slow
def test_md17_energy_and_force_finetuning_beats_the_mean_predictor(tmp_path, experiment_command):
    workdir = tmp_path / "md17"
    command = experiment_command(
        "finetune",
        "configs/finetune_md17.py:cpu",
        workdir,
        "--config.model.hidden=32",
        "--config.model.num_layers=2",
        "--config.train.num_steps=320",
        "--config.train.eval_every=160",
        "--config.train.progress_bar=False",
        "--config.data.n_test=200",
    )
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| | energy (kcal/mol) | forces (kcal/mol/Å) |" in run.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["test_mae"]) == {"energy", "forces"}
    # 320 steps of 8 frames (the official MD17 setting, whitened output vectors) already
    # halve the force error of always predicting the mean (measured 0.49).
    assert results["test_mae"]["forces"] < 0.6 * results["mean_predictor_mae"]["forces"]
    valid = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in valid if r["split"] == "valid"] == [160, 320]
