"""Shared pytest fixtures: PRNG keys and NaN/Inf trapping, as e3nn-jax's tests do."""

import os
import sys

import jax
import pytest

# Each pytest-xdist worker gets its share of the cores: OpenMP libraries (tblite, PySCF,
# torch) otherwise start a thread per core in every worker and spin against each other
# (a 7 s spectroscopy test took 96 s next to a JAX test). Set before they are imported.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# One persistent XLA cache for the session's workers and the subprocesses they start:
# many tests compile the same programs (configs/test.py in a fresh process, a resumed
# run), and a hit skips XLA's compile (tracing still runs, so trace counts are intact).
# The cache key holds the program, the compile options and the jax/XLA versions.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".pytest_cache", "xla"))
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


@pytest.fixture(autouse=True)
def _debug_nans():
    """Any NaN/Inf produced inside a test raises at its source instead of passing silently."""
    with jax.debug_nans(True), jax.debug_infs(True):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def qm9_sample():
    """200 real QM9 molecules (seeded pick), the same in every test session."""
    import numpy as np

    from molspectra_jax.data.qm9 import load_qm9

    dataset = load_qm9(verbose=False)
    return dataset.subset(np.random.default_rng(0).choice(len(dataset), 200, replace=False))


def pytest_addoption(parser):
    parser.addoption(
        "--regenerate-goldens",
        action="store_true",
        help="rewrite tests/goldens/*.npz from the current code instead of comparing",
    )


@pytest.fixture(scope="session")
def experiment_command():
    """`(module, config, workdir, *overrides) -> argv` of `python -m experiments.<module>`."""

    def command(module: str, config: str, workdir, *overrides: str) -> list[str]:
        argv = ["-m", f"experiments.{module}", "--config", config, "--workdir", str(workdir)]
        return [sys.executable, *argv, *overrides]

    return command
