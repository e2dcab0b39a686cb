"""Run by test_pretrain_sharding.py in a subprocess with 4 forced CPU devices.

Applies one pre-training step to the same 4-shard batch on a 1-device mesh and on a
4-device mesh and saves losses and updated params of both to the .npz given as argv[1].
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import functools  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from configs import test_pretrain  # noqa: E402
from molspectra_jax.models import build_encoder  # noqa: E402
from molspectra_jax.models.pretrain_model import PretrainModel  # noqa: E402
from molspectra_jax.models.specformer import build_specformer  # noqa: E402
from molspectra_jax.train import pretrain, sharding  # noqa: E402
from molspectra_jax.train.pretrain_step import pretrain_step  # noqa: E402


def main(out_path):
    assert jax.device_count() == 4
    config = test_pretrain.get_config()
    config.data.n_shards = 4
    train_iterator, _ = pretrain.load_data(config)
    batch = next(train_iterator)
    model = PretrainModel(build_encoder(config.model))
    specformer = build_specformer(config.specformer)
    state0 = pretrain.init_state(config, model, specformer, batch, jax.random.PRNGKey(0))
    state0 = jax.device_get(state0)  # host copy: each run's device_put + donation is its own
    results = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
        mesh = Mesh(np.array(devices), ("data",))
        step = functools.partial(
            pretrain_step, model=model, specformer=specformer, loss_config=config.loss, mesh=mesh
        )
        fn = sharding.jit_step(step, mesh)
        state = jax.device_put(state0, sharding.replicated(mesh))
        state, metrics = fn(state, sharding.global_batch(batch, mesh))
        results[f"{name}_loss"] = np.asarray(metrics["loss"])
        for i, leaf in enumerate(jax.tree.leaves((state.params, state.batch_stats))):
            results[f"{name}_leaf{i}"] = np.asarray(leaf)
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
