"""Run by test_pretrain_sharding.py in a subprocess with 4 forced CPU devices.

Applies one pre-training step to the same 4-shard batch on a 1-device mesh and on a
4-device mesh and saves losses and updated params of both to the .npz given as argv[1].
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from molspectra_jax.configs import test_pretrain  # noqa: E402
from molspectra_jax.train import pretrain, sharding  # noqa: E402


def main(out_path):
    assert jax.device_count() == 4
    config = test_pretrain.get_config()
    config.data.n_shards = 4
    # One spectrum suffices: what is checked is the sharding of one step (per-device
    # encoder, SpecFormer's BatchNorm and the InfoNCE over the global batch).
    config.specformer.spectra = ("uv",)
    results = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
        mesh = Mesh(np.array(devices), ("data",))
        run = pretrain.setup(config, mesh)  # the same data, init and batch for both meshes
        batch = next(run.iterators["train"])
        state = sharding.replicate(run.state, mesh)
        state, metrics = run.step_fn(state, sharding.global_batch(batch, mesh))
        results[f"{name}_loss"] = np.asarray(metrics["loss"])
        for i, leaf in enumerate(jax.tree.leaves((state.params, state.batch_stats))):
            results[f"{name}_leaf{i}"] = np.asarray(leaf)
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
