"""End to end: stage 1 -> stage 2 (real molecules, real spectra) -> fine-tuning hand-off."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from molspectra_jax.configs import test as finetune_test
from molspectra_jax.configs import test_pretrain
from molspectra_jax.train import sharding
from molspectra_jax.train.checkpoint import read_checkpoint_arrays
from molspectra_jax.train.finetune import setup
from molspectra_jax.train.handoff import load_pretrained_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, config, workdir, *overrides):
    cmd = [sys.executable, "-m", module, "--config", config, "--workdir", str(workdir), *overrides]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _train_log(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return [r for r in rows if r["split"] == "train"]


@pytest.mark.slow
def test_stage1_stage2_finetune(tmp_path):
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    _run(
        "experiments.pretrain",
        "configs/test_pretrain.py",
        stage1,
        "--config.stage=1",
        "--config.train.num_steps=4",
    )
    assert "mpr_loss" not in _train_log(stage1)[-1]  # denoising only

    out = _run(
        "experiments.pretrain",
        "configs/test_pretrain.py",
        stage2,
        f"--config.init_from={stage1}",
        "--config.train.num_steps=40",
        "--config.train.log_every=5",
        "--config.train.eval_every=40",
        "--config.optim.learning_rate=3e-3",
    )
    assert "loaded from" in out and "encoder" in out
    log = _train_log(stage2)
    for loss in ("denoising_loss", "mpr_loss", "contrast_loss"):
        first = (log[0][loss] + log[1][loss]) / 2  # two-log means: noise is fresh each step
        last = (log[-1][loss] + log[-2][loss]) / 2
        assert last < first, (loss, [round(r[loss], 4) for r in log])

    # The hand-off copies every encoder parameter of the stage-2 checkpoint (float32
    # compute) into a model computing in bfloat16.
    config = finetune_test.get_config()
    config.model = test_pretrain.get_config().model
    config.loss.noise_weight = 0.1  # noisy nodes: the noise head is loaded too
    config.model.dtype = "bfloat16"  # how it computes is no architecture change
    run = setup(config, sharding.make_mesh())
    loaded = load_pretrained_params(run.state.params, str(stage2), config.model.to_dict())
    saved, _ = read_checkpoint_arrays(str(stage2 / "checkpoints" / "latest"))
    for name in ("encoder", "noise_head"):
        ours, theirs = jax.tree.leaves(loaded[name]), jax.tree.leaves(saved["params"][name])
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    out = _run(
        "experiments.finetune",
        "configs/test.py",
        tmp_path / "finetune",
        f"--config.init_from={stage2}",
        "--config.loss.noise_weight=0.1",
        "--config.model.hidden=32",
        "--config.model.num_layers=2",
        "--config.model.num_heads=4",
        "--config.model.num_rbf=16",
    )
    assert "freshly initialised: head_0_scalar" in out
    assert "| test MAE (best valid checkpoint) |" in out
