"""Shared pytest fixtures: PRNG keys and NaN/Inf trapping, as e3nn-jax's tests do."""

import jax
import pytest


@pytest.fixture(autouse=True)
def _debug_nans():
    """Any NaN/Inf produced inside a test raises at its source instead of passing silently."""
    with jax.debug_nans(True), jax.debug_infs(True):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)
