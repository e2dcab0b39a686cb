"""Configs are code: each loads and builds; command-line overrides reach the run or fail loudly."""

import glob
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from molspectra_jax.graph import Graph
from molspectra_jax.models import build_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "[!_]*.py")))


def _load(path, arg=None):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_its_encoder_builds(path):
    config = _load(path)
    encoder = build_encoder(config.model)
    n, e = 5, 8
    graph = Graph(
        atomic_numbers=jnp.ones(n, jnp.int32),
        positions=jnp.zeros((n, 3)),
        atom_mask=jnp.ones(n, bool),
        graph_index=jnp.zeros(n, jnp.int32),
        senders=jnp.zeros(e, jnp.int32),
        receivers=jnp.ones(e, jnp.int32),
        edge_mask=jnp.ones(e, bool),
        graph_mask=jnp.ones(2, bool),
    )
    shapes = jax.eval_shape(encoder.init, jax.random.key(0), graph)
    assert jax.tree.leaves(shapes)


def test_cpu_variant_and_unknown_variant():
    path = os.path.join(ROOT, "configs", "finetune_qm9.py")
    assert _load(path, "cpu").model.hidden < _load(path).model.hidden
    with pytest.raises(ValueError, match="unknown config variant"):
        _load(path, "gpu-typo")


def test_unknown_encoder_name_lists_choices():
    config = _load(os.path.join(ROOT, "configs", "finetune_qm9.py"))
    config.model.name = "painn"
    with pytest.raises(ValueError, match=r"choose from \['et'\]"):
        build_encoder(config.model)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.data.no_such_field=1", "no_such_field"),
        ("--config.data.batch_size=lots", "batch_size"),
        ("--config.target=band_gap", "unknown target"),
        ("--config.nonexistent=1", "error: the config has no field 'nonexistent'"),
    ],
)
def test_bad_override_fails_naming_the_field(tmp_path, override, message, experiment_command):
    cmd = experiment_command("finetune", "configs/test.py", tmp_path / "run", override)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    if "nonexistent" in override:  # a mistyped field: one line, no traceback
        assert "Traceback" not in result.stderr, result.stderr


def test_configs_import_no_model_code():
    """Configs are data: loading every one leaves models, flax and jax unimported."""
    code = (
        "import importlib, sys\n"
        + "".join(
            f"importlib.import_module('configs.{os.path.basename(p)[:-3]}')\n" for p in CONFIGS
        )
        + "heavy = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')"
        " or m.startswith('molspectra_jax.models')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
