"""A run knows what it is: divergence stops it cleanly, resuming refuses another run,
unreadable checkpoints fall back, a workdir holds one run, bad settings fail early."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from molspectra_jax.configs import test as test_config
from molspectra_jax.train import finetune
from molspectra_jax.train.checkpoint import read_checkpoint_arrays
from molspectra_jax.train.loop import RunError, workdir_lock


def _config(**train):
    config = test_config.get_config()
    config.target = "gap"
    config.train.update(**train)
    return config


def _kept_steps(workdir) -> list[int]:
    latest = os.path.join(workdir, "checkpoints", "latest")
    return sorted(int(p) for p in os.listdir(latest) if p.isdigit())


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_divergence_stops_early_never_checkpoints_it_and_resumes_gently(tmp_path):
    workdir = str(tmp_path / "run")
    finetune.train_and_evaluate(_config(num_steps=2, checkpoint_every=2, eval_every=2), workdir)
    # Resumed with a learning rate that diverges at once (the change accepted explicitly).
    config = _config(num_steps=40, checkpoint_every=2, eval_every=2, allow_changes="optim")
    config.optim.update(learning_rate=1e6, max_bad_steps=3)
    with jax.debug_nans(False), jax.debug_infs(False):  # the NaNs are the point here
        with pytest.raises(RunError) as error:
            finetune.train_and_evaluate(config, workdir)
        message = str(error.value)
        assert "non-finite gradients" in message or "beyond train.max_param_abs" in message
        assert "optim.learning_rate" in message  # what to do about it
        kept = _kept_steps(workdir)
        assert kept[-1] < 12  # stopped within a few steps, not at step 40
        for step in kept:  # every kept checkpoint is finite and not diverged
            arrays, _ = read_checkpoint_arrays(os.path.join(workdir, "checkpoints", "latest"), step)
            for leaf in jax.tree.leaves(arrays["params"]):
                assert np.isfinite(leaf).all() and np.abs(leaf).max() <= 1e4

        # A gentle optimizer continues the same run from its last good checkpoint.
        config.optim.learning_rate = 1e-3
        config.train.num_steps = kept[-1] + 2
        result = finetune.train_and_evaluate(config, workdir)
    assert np.isfinite(result["test_mae"]["gap"])


def test_resume_refuses_another_run_and_allows_cadence_changes(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    finetune.train_and_evaluate(_config(num_steps=4, checkpoint_every=2, eval_every=2), workdir)
    changed = _config(num_steps=4, checkpoint_every=2, eval_every=2)
    changed.data.split_seed, changed.optim.learning_rate = 1, 5e-4
    with pytest.raises(RunError, match=r"data.split_seed: 0 in the checkpoint, 1 now") as error:
        finetune.train_and_evaluate(changed, workdir)
    assert "optim.learning_rate" in str(error.value)
    assert json.load(open(os.path.join(workdir, "config.json")))["data"]["split_seed"] == 0

    finetune.train_and_evaluate(_config(num_steps=6, checkpoint_every=2, eval_every=2), workdir)
    out = capsys.readouterr().out
    assert "resumed from step 4" in out and "train.num_steps changed: 4 -> 6" in out
    rows = _rows(workdir)
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing logged twice across the resume
    assert max(r["step"] for r in rows) == 6


def test_unreadable_checkpoints_fall_back_to_intact_ones(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    finetune.train_and_evaluate(_config(num_steps=4, checkpoint_every=2, eval_every=2), workdir)
    assert _kept_steps(workdir) == [2, 4]
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "latest", "4", "arrays")):
        for name in files:  # the newest step: every array file truncated
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\0garbage")
    shutil.rmtree(os.path.join(workdir, "checkpoints", "best"))
    result = finetune.train_and_evaluate(
        _config(num_steps=6, checkpoint_every=2, eval_every=3), workdir
    )
    out = capsys.readouterr().out
    assert "skipped an unreadable checkpoint" in out and "latest/4" in out
    assert "resumed from step 2" in out
    assert result["steps"] == 6 and np.isfinite(result["test_mae"]["gap"])


def test_unreadable_best_reports_latest_and_says_so(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    finetune.train_and_evaluate(_config(num_steps=2, checkpoint_every=2, eval_every=2), workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "best"))
    result = finetune.train_and_evaluate(_config(num_steps=2), workdir)  # finished: reports
    assert result["checkpoint"] == "latest (best unreadable)"
    assert "reporting the latest checkpoint instead" in capsys.readouterr().out


def test_a_workdir_holds_one_run(tmp_path):
    with workdir_lock(str(tmp_path)):
        with pytest.raises(RunError, match=r"in use by another process \(pid \d+ on"):
            with workdir_lock(str(tmp_path)):
                pass
    with workdir_lock(str(tmp_path)):  # released: the next run takes it
        pass


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("train", "checkpoint_every", 0, r"train.checkpoint_every=0 must be an integer >= 1"),
        ("train", "num_steps", -1, r"train.num_steps=-1 must be an integer >= 1"),
        ("data", "batch_size", 0, r"batch_size 0 and 1 shards must be positive"),
    ],
)
def test_bad_settings_fail_with_a_message_naming_them(tmp_path, section, field, value, message):
    config = _config()
    config[section][field] = value
    with pytest.raises(ValueError, match=message):
        finetune.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, workers):
    """With batches prefetched ahead (by worker processes or not), the checkpointed
    position is still the consumed one."""
    config = _config(num_steps=6, checkpoint_every=3, eval_every=3)
    config.data.workers = workers
    workdir = tmp_path / "run"
    finetune.train_and_evaluate(config, str(workdir))
    latest = workdir / "checkpoints" / "latest"
    straight, _ = read_checkpoint_arrays(str(latest), 6)
    shutil.rmtree(latest / "6")  # as if killed after the step-3 checkpoint
    finetune.train_and_evaluate(config, str(workdir))
    resumed, _ = read_checkpoint_arrays(str(latest), 6)
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
