"""Fixtures for train tests: a tiny model, its state and real QM9 batches."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import test as test_config
from molspectra_jax.data.batching import BatchIterator, candidate_edges, make_budget
from molspectra_jax.data.statistics import target_statistics
from molspectra_jax.models.property_model import TargetStats
from molspectra_jax.train.finetune import build_model, init_params
from molspectra_jax.train.optim import make_optimizer
from molspectra_jax.train.sharding import make_mesh, replicated
from molspectra_jax.train.state import TrainState
from molspectra_jax.train.step import train_step


@pytest.fixture(scope="module")
def tiny():
    """Everything a step needs: config, model, stats, iterator over 200 real molecules."""
    from molspectra_jax.data.qm9 import load_qm9

    config = test_config.get_config()
    targets = ("gap",)
    dataset = load_qm9(verbose=False).subset(np.arange(1000, 1200)).select_targets(targets)
    edges = candidate_edges(dataset, config.model.cutoff + config.data.skin)
    budget = make_budget(dataset, edges, 32, 1)
    mean, std = target_statistics(dataset, targets, np.zeros((config.model.max_z, 1)))
    stats = TargetStats(
        jnp.asarray(mean, jnp.float32),
        jnp.asarray(std, jnp.float32),
        jnp.zeros((config.model.max_z, 1)),
    )
    model, molecule_level = build_model(config, targets)
    return ml_collections.ConfigDict(
        dict(
            config=config,
            dataset=dataset,
            edges=edges,
            budget=budget,
            stats=stats,
            model=model,
            molecule_level=molecule_level,
        )
    )


@pytest.fixture
def make_state():
    return _make_state


@pytest.fixture
def step_fn():
    return _step_fn


def _make_state(tiny, learning_rate=3e-3, num_steps=300, model=None):
    iterator = BatchIterator(tiny.dataset, tiny.edges, tiny.budget, seed=0)
    params = init_params(model or tiny.model, next(iterator), jax.random.PRNGKey(0))
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
    state = TrainState.create(params, make_optimizer(optim, num_steps), jax.random.PRNGKey(1))
    # Committed and replicated, as the run loop does: the step's outputs look the same,
    # so the second call reuses the first executable.
    return jax.device_put(state, replicated(make_mesh()))


def _step_fn(tiny, noise_weight=0.0, model=None):
    return functools.partial(
        train_step,
        model=model or tiny.model,
        stats=tiny.stats,
        molecule_level=tiny.molecule_level,
        loss_kind="mse",
        noise_sigma=0.005,
        noise_weight=noise_weight,
        mesh=make_mesh(),
    )
