"""The pre-training step: same result on 1 and 4 devices, one compilation, noise per step."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from molspectra_jax.configs import test_pretrain
from molspectra_jax.train import pretrain, sharding
from molspectra_jax.train.pretrain_step import pretrain_loss, pretrain_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup():
    config = test_pretrain.get_config()
    run = pretrain.setup(config, sharding.make_mesh())
    first = next(run.iterators["train"])
    task = run.task
    kwargs = dict(
        model=task.model, specformer=task.specformer, loss_config=config.loss, mesh=run.mesh
    )
    return config, run.iterators["train"], run.state, run.mesh, kwargs, first


def test_four_devices_match_one_device(tmp_path):
    out = tmp_path / "sharded.npz"
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tests", "train", "sharded_pretrain_check.py"),
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    r = np.load(out)
    np.testing.assert_allclose(r["one_loss"], r["four_loss"], rtol=1e-5)
    leaves = sorted(k[4:] for k in r.files if k.startswith("one_leaf"))
    assert leaves
    for k in leaves:
        np.testing.assert_allclose(r[f"one_{k}"], r[f"four_{k}"], rtol=1e-4, atol=1e-6)


def test_step_compiles_once_and_all_losses_are_reported(setup):
    config, iterator, state, mesh, kwargs, _ = setup
    traces = []

    def counted(state, batch):
        traces.append(1)
        return pretrain_step(state, batch, **kwargs)

    fn = sharding.jit_step(counted, mesh)
    state = jax.device_put(state, sharding.replicated(mesh))
    for _ in range(6):  # 64 molecules in batches of 16: more than an epoch
        state, metrics = fn(state, sharding.global_batch(next(iterator), mesh))
    assert len(traces) == 1 and fn._cache_size() == 1
    for name in ("denoising_loss", "mpr_loss", "contrast_loss", "contrast_accuracy", "loss"):
        assert np.isfinite(metrics[name]), name


def test_noise_and_masks_differ_across_steps_and_repeat_from_the_key(setup):
    _, _, state, mesh, kwargs, batch = setup
    loss = jax.jit(functools.partial(pretrain_loss, **kwargs))
    batch = sharding.global_batch(batch, mesh)

    def metrics(key):
        return loss(state.params, state.batch_stats, batch, key)[1][0]

    step0 = jax.random.fold_in(state.key, 0)
    a, b = metrics(step0), metrics(step0)
    c = metrics(jax.random.fold_in(state.key, 1))
    assert float(a["denoising_loss"]) == float(b["denoising_loss"])
    assert float(a["mpr_loss"]) == float(b["mpr_loss"])
    assert float(a["denoising_loss"]) != float(c["denoising_loss"])
    assert float(a["mpr_loss"]) != float(c["mpr_loss"])
