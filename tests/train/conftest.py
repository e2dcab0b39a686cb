"""Fixtures for train tests: a tiny fine-tuning run on 200 real QM9 molecules, built by
`finetune.setup` as production builds it (residual targets, host-side offsets)."""

import jax
import ml_collections
import pytest

from molspectra_jax.configs import test as test_config
from molspectra_jax.train import finetune
from molspectra_jax.train.optim import make_optimizer
from molspectra_jax.train.sharding import make_mesh, replicate
from molspectra_jax.train.state import TrainState


def _tiny_config(**loss):
    config = test_config.get_config()
    config.target = "gap"
    config.data.update(n_train=200, n_valid=32, n_test=32, batch_size=32)
    config.loss.update(**loss)
    return config


@pytest.fixture(scope="module")
def tiny():
    """A `Run`: its state, pure step, iterators over 200 train molecules."""
    return finetune.setup(_tiny_config(), make_mesh())


@pytest.fixture
def tiny_config():
    """`configs/test.py` on 200 train molecules of `gap`; kwargs override `config.loss`."""
    return _tiny_config


@pytest.fixture
def make_state():
    return _make_state


def _make_state(run, learning_rate=3e-3, num_steps=300):
    """The run's initial params with a fresh optimizer, committed and replicated as the
    loop does: the step's outputs look the same, so the second call reuses the first
    executable."""
    optim = ml_collections.ConfigDict(
        dict(
            learning_rate=learning_rate,
            warmup_steps=10,
            final_lr_factor=0.1,
            weight_decay=0.0,
            clip_norm=0.0,
            max_bad_steps=5,
        )
    )
    tx = make_optimizer(optim, num_steps)
    state = TrainState.create(run.state.params, tx, jax.random.PRNGKey(1))
    return replicate(state, run.mesh)
