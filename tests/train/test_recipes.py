"""The official recipes' optimizer parts, through optax: cosine with warm restarts,
reduce-on-plateau, a weight EMA, early stopping; the learning rate in the metrics."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from molspectra_jax.configs import finetune_qm9
from molspectra_jax.configs import test as test_config
from molspectra_jax.train import finetune
from molspectra_jax.train.checkpoint import read_checkpoint_arrays
from molspectra_jax.train.optim import (
    current_learning_rate,
    ema_params,
    learning_rate_schedule,
    make_optimizer,
)


def optim_config(**overrides):
    c = finetune_qm9.get_config().optim
    c.update({"learning_rate": 1.0, "warmup_steps": 10, "final_lr_factor": 0.0, **overrides})
    return c


def test_cosine_restarts_follow_periods_t0_times_mult():
    c = optim_config(schedule="cosine_restarts", restart_period=20, restart_mult=2)
    lr = learning_rate_schedule(c, 200)
    assert float(lr(5)) == pytest.approx(0.5)  # warmup
    assert float(lr(10)) == pytest.approx(1.0)  # cycle 1 starts at the peak
    assert float(lr(20)) == pytest.approx(0.5, abs=1e-6)  # half way through 20 steps
    assert float(lr(30)) == pytest.approx(1.0)  # restart; cycle 2 lasts 40
    assert float(lr(50)) == pytest.approx(0.5, abs=1e-6)
    assert float(lr(70)) == pytest.approx(1.0)  # cycle 3: 80 steps
    assert float(lr(90)) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-6)
    with pytest.raises(ValueError, match="restart_period"):
        learning_rate_schedule(optim_config(schedule="cosine_restarts", restart_period=0), 9)
    with pytest.raises(ValueError, match="unknown optim.schedule"):
        learning_rate_schedule(optim_config(schedule="linear"), 9)


def test_plateau_cuts_the_rate_when_the_loss_stops_improving():
    c = optim_config(
        schedule="plateau", warmup_steps=0, plateau_factor=0.5, plateau_patience=2,
        plateau_window=3, min_lr=0.2,
    )  # fmt: skip
    tx = make_optimizer(c, 1000)
    params = {"w": jnp.ones(2)}
    rates = []
    with jax.debug_infs(False):  # optax starts the plateau's best loss at inf
        state = tx.init(params)
        for step in range(40):
            rates.append(float(current_learning_rate(c, 1000, state, step)))
            _, state = tx.update({"w": jnp.ones(2)}, state, params, value=jnp.asarray(1.0))
    assert rates[0] == 1.0  # a flat loss: cut after 2 windows of 3 steps, then again
    assert 0.5 in rates and 0.25 in rates and rates[-1] == pytest.approx(0.2)  # min_lr


def test_weight_ema_averages_the_weights_the_optimizer_makes():
    c = optim_config(learning_rate=0.1, warmup_steps=0, schedule="plateau", ema_decay=0.5)
    tx = make_optimizer(c, 100)
    params = {"w": jnp.zeros(())}
    history, ema = [], 0.0
    with jax.debug_infs(False):  # optax starts the plateau's best loss at inf
        state = tx.init(params)
        for _ in range(5):
            grads = {"w": jnp.asarray(-1.0)}
            updates, state = tx.update(grads, state, params, value=jnp.ones(()))
            params = optax.apply_updates(params, updates)
            history.append(float(params["w"]))
            ema = 0.5 * ema + 0.5 * history[-1]
    assert float(ema_params(state)["w"]) == pytest.approx(ema)
    assert 0 < float(ema_params(state)["w"]) < history[-1]  # it lags behind
    with pytest.raises(ValueError, match="keeps no weight EMA"):
        ema_params(make_optimizer(optim_config(), 10).init(params))
    with pytest.raises(ValueError, match="ema_decay"):
        make_optimizer(optim_config(ema_decay=1.0), 10)


def run_config(**train):
    c = test_config.get_config()
    c.train.update(num_steps=12, log_every=2, eval_every=2, checkpoint_every=4, **train)
    return c


def test_learning_rate_is_logged_and_ema_weights_are_evaluated(tmp_path):
    c = run_config()
    c.optim.update(schedule="cosine_restarts", restart_period=4, ema_decay=0.9)
    finetune.train_and_evaluate(c, str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    logged = {r["step"]: r["learning_rate"] for r in rows if r["split"] == "train"}
    lr = learning_rate_schedule(c.optim, c.train.num_steps)
    for step, value in logged.items():  # means over each log interval's two steps
        assert value == pytest.approx(float((lr(step - 2) + lr(step - 1)) / 2), rel=1e-5)
    # The best checkpoint's params are the EMA it was scored with: they appear, leaf for
    # leaf, inside its optimizer state (which holds moments, not weights, without EMA).
    best, _ = read_checkpoint_arrays(str(tmp_path / "checkpoints" / "best"))
    weights = [np.asarray(x) for x in jax.tree.leaves(best["params"])]
    state = [np.asarray(x) for x in jax.tree.leaves(best["opt_state"])]
    starts = [i for i in range(len(state) - len(weights) + 1)
              if all(a.shape == b.shape and np.array_equal(a, b)
                     for a, b in zip(state[i:], weights, strict=False))]  # fmt: skip
    assert len(starts) == 1


def test_early_stopping_ends_the_run_and_a_rerun_keeps_it_ended(tmp_path, capsys):
    c = run_config(early_stopping=1)
    c.optim.update(learning_rate=0.0, warmup_steps=0)  # nothing improves after the first eval
    results = finetune.train_and_evaluate(c, str(tmp_path))
    assert results["steps"] == 4  # best at 2, none better at 4: stop
    assert "stopping early at step 4" in capsys.readouterr().out
    again = finetune.train_and_evaluate(c, str(tmp_path))
    assert again["steps"] == 4 and "stopped early at step 4" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert max(steps) == 4


def test_recipe_fields_have_defaults_that_change_nothing():
    optim = finetune_qm9.get_config().optim
    assert optim.schedule == "cosine" and optim.ema_decay == 0.0
    assert finetune_qm9.get_config().train.early_stopping == 0
    assert isinstance(optim, ml_collections.ConfigDict)


def test_checkpoints_from_before_the_recipe_fields_still_resume():
    from molspectra_jax.train.loop import ADDED_FIELDS, RunError, check_resumable

    config = test_config.get_config()
    saved = json.loads(json.dumps(config.to_dict()))  # as a checkpoint holds it
    for field in ADDED_FIELDS:  # as 0.1.0 wrote it: without the new fields
        section, name = field.split(".")
        del saved[section][name]
    check_resumable(saved, config, "old")  # their neutral values: the same run
    config.optim.ema_decay = 0.5
    with pytest.raises(RunError, match="optim.ema_decay"):
        check_resumable(saved, config, "old")
