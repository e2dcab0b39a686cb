"""Generator: resume after a hard kill gives the same files; Dask gives the same sticks."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from molspectra_jax.spectroscopy import generate
from molspectra_jax.spectroscopy.store import SpectraStore

SMILES = ["O", "C", "N", "C=O", "C=C", "C#C", "C#N", "CO"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def xyz_file(tmp_path_factory, molecule):
    path = tmp_path_factory.mktemp("mols") / "small.xyz"
    symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
    with open(path, "w") as f:
        for smiles in SMILES:
            z, pos = molecule(smiles)
            f.write(f"{len(z)}\n{smiles}\n")
            f.writelines(
                f"{symbols[a]} {x:.8f} {y:.8f} {w:.8f}\n"
                for a, (x, y, w) in zip(z, pos, strict=True)
            )
    return str(path)


def run_cli(xyz: str, out: str, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "experiments.generate_spectra", "--source", "xyz"]
    command += ["--input", xyz, "--out", out, "--shard_size", "3", "--workers", "1"]
    return subprocess.Popen(command + ["--no_progress"], cwd=REPO, **popen)


def shard_bytes(folder) -> dict[str, bytes]:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".npz"))
    return {f: open(os.path.join(folder, f), "rb").read() for f in files}


def test_killed_run_resumes_to_the_same_files(xyz_file, tmp_path):
    reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")
    assert run_cli(xyz_file, reference).wait(timeout=300) == 0

    proc = run_cli(xyz_file, resumed, start_new_session=True)
    pending = os.path.join(resumed, "pending")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = sum(len(files) for _, _, files in os.walk(pending)) if os.path.isdir(pending) else 0
        if done >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: parent and workers
    proc.wait()
    assert len(shard_bytes(resumed)) < len(shard_bytes(reference))

    restart = run_cli(xyz_file, resumed, stdout=subprocess.PIPE, text=True)
    output, _ = restart.communicate(timeout=300)
    assert restart.returncode == 0
    skipped = int(output.split("skipped ")[1].split()[0])
    assert skipped >= 1, output
    assert shard_bytes(resumed) == shard_bytes(reference)
    assert not any(files for _, _, files in os.walk(os.path.join(resumed, "pending")))
    assert shard_bytes(reference).keys() == {
        f"{c}-0000{k}.npz" for c in ("vib", "uv") for k in (0, 1, 2)
    }


def test_dask_cluster_matches_local_processes(molecule, tmp_path):
    from distributed import LocalCluster

    mols = [molecule("O"), molecule("C=O")]
    settings = generate.GenerationSettings(shard_size=2)
    local = generate.generate(
        [1, 2], mols.__getitem__, str(tmp_path / "local"), settings, workers=1, progress=False
    )
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        remote = generate.generate(
            [1, 2],
            mols.__getitem__,
            str(tmp_path / "dask"),
            settings,
            dask_scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert local.computed == remote.computed == 4 and not local.failures and not remote.failures
    for component in ("vib", "uv"):
        a = SpectraStore(str(tmp_path / "local")).load(component)
        b = SpectraStore(str(tmp_path / "dask")).load(component)
        for key in ("frequencies", "ir_intensities", "excitation_energies"):
            if key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_failures_are_counted_and_kept_out_of_the_data(tmp_path):
    mols = [
        (np.array([8, 1, 1]), np.array([[0, 0, 0.0], [0, 0.76, 0.59], [0, -0.76, 0.59]])),
        (np.array([1]), np.zeros((1, 3))),
    ]  # one H atom: odd electron count for the UV
    settings = generate.GenerationSettings(components=("uv",), shard_size=5)
    summary = generate.generate(
        [10, 11], mols.__getitem__, str(tmp_path), settings, workers=1, progress=False
    )
    assert [(c, i) for c, i, _ in summary.failures] == [("uv", 11)]
    assert "odd electron count" in summary.failures[0][2]
    shard = SpectraStore(str(tmp_path)).read_shard("uv", 0)
    assert shard["ids"].tolist() == [10] and shard["failed_ids"].tolist() == [11]
    again = generate.generate(
        [10, 11], mols.__getitem__, str(tmp_path), settings, workers=1, progress=False
    )
    assert again.computed == 0 and again.skipped == 2


def test_extending_the_order_grows_the_last_shard(molecule, tmp_path):
    mols = [molecule(s) for s in ("O", "C", "N", "C=O")]
    settings = generate.GenerationSettings(components=("vib",), shard_size=2)

    def run(n):
        ids = list(range(1, n + 1))
        return generate.generate(
            ids, mols.__getitem__, str(tmp_path), settings, workers=1, progress=False
        )

    assert run(3).computed == 3
    store = SpectraStore(str(tmp_path))
    assert store.read_shard("vib", 1)["ids"].tolist() == [3]
    first = open(store.shard_path("vib", 0), "rb").read()
    grown = run(4)
    assert grown.computed == 1 and grown.skipped == 3
    assert store.read_shard("vib", 1)["ids"].tolist() == [3, 4]
    assert open(store.shard_path("vib", 0), "rb").read() == first
