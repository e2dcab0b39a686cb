"""The public API: `__version__` and the lazily imported names of `molspectra_jax`."""

import importlib.metadata
import subprocess
import sys

import pytest

import molspectra_jax


def test_version_is_the_installed_distributions():
    assert molspectra_jax.__version__ == importlib.metadata.version("molspectra-jax")


@pytest.mark.parametrize("name", sorted(set(molspectra_jax.__all__) - {"__version__"}))
def test_every_public_name_resolves(name):
    assert getattr(molspectra_jax, name) is not None
    assert name in dir(molspectra_jax)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        molspectra_jax.nope  # noqa: B018


def test_importing_the_package_imports_nothing_heavy():
    code = (
        "import sys, molspectra_jax\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'orbax')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
