"""Two `jax.distributed` processes on localhost train like one process with two devices.

Each process builds only its half of every batch (`BatchIterator(process_index=...)`),
so the pair must reproduce the single-process run on the same global batches: same
validation/test MAEs and parameters after the same steps. (Pre-training in two processes,
stage 1 -> stage 2 hand-off included, was checked the same way by hand: identical metrics.)
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from molspectra_jax.train.checkpoint import read_checkpoint_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finetune(workdir, devices: int, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    command = [sys.executable, "-m", "experiments.finetune", "--config", "configs/test.py"]
    command += ["--workdir", str(workdir), *extra]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(tmp_path):
    reference = finish(finetune(tmp_path / "one", 2))
    address = f"127.0.0.1:{free_port()}"
    pair = [
        finetune(
            tmp_path / "two",
            1,
            f"--config.distributed.coordinator_address={address}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={i}",
        )
        for i in range(2)
    ]
    outputs = [finish(p) for p in pair]
    assert "devices: 2 x cpu, shards: 2" in reference
    assert all("devices: 2 x cpu, shards: 2" in out for out in outputs)

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for target, mae in one["test_mae"].items():
        np.testing.assert_allclose(two["test_mae"][target], mae, rtol=1e-4)

    def valid_history(workdir):
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r.get("split") == "valid"]

    history_one, history_two = valid_history(tmp_path / "one"), valid_history(tmp_path / "two")
    assert len(history_one) == len(history_two) > 0
    for a, b in zip(history_one, history_two, strict=True):
        for k, v in a.items():
            if k.startswith("mae_"):
                np.testing.assert_allclose(b[k], v, rtol=1e-4)

    # The pair's checkpoint reads here, in one process with one device (as a fine-tune
    # on one GPU reads a pod's pre-training), and holds the reference's parameters.
    arrays_two, config_two = read_checkpoint_arrays(str(tmp_path / "two/checkpoints/latest"))
    arrays_one, _ = read_checkpoint_arrays(str(tmp_path / "one/checkpoints/latest"))
    assert config_two["distributed"]["num_processes"] == 2
    leaves_one, leaves_two = jax.tree.leaves(arrays_one), jax.tree.leaves(arrays_two)
    assert len(leaves_one) == len(leaves_two) > 10
    for a, b in zip(leaves_one, leaves_two, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
