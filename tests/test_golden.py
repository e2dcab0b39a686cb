"""Golden-output regression test: fixed parameters and a fixed batch of real molecules.

The committed file `tests/goldens/golden_v1.npz` holds the parameters (by tree path),
the QM9 ids of the molecules and the outputs of the encoder, the pre-training losses
and a fine-tuning prediction (properties and forces). A refactor that changes any of
these numbers fails here. After an intended change of the math, regenerate with

    python -m pytest tests/test_golden.py --regenerate-goldens

and say in the commit why the numbers moved.
"""

import dataclasses
import functools
import os

import jax
import numpy as np
import pytest

from molspectra_jax.configs import test as finetune_test
from molspectra_jax.configs import test_pretrain
from molspectra_jax.data import sources
from molspectra_jax.data.batching import Budget, candidate_edges, candidate_radius, collate
from molspectra_jax.data.qm9 import load_qm9
from molspectra_jax.models import build_encoder
from molspectra_jax.models.pretrain_model import PretrainModel
from molspectra_jax.models.specformer import build_specformer
from molspectra_jax.train.finetune import build_model
from molspectra_jax.train.finetune_step import predict
from molspectra_jax.train.pretrain_step import pretrain_loss
from molspectra_jax.train.sharding import make_mesh
from molspectra_jax.train.state import init_variables

GOLDEN = os.path.join(os.path.dirname(__file__), "goldens", "golden_v1.npz")
N_MOLECULES = 8
TARGETS = ("gap", "u0")
STD = np.array([1000.0, 500.0], np.float32)  # residual scale of the two targets


def _flatten(tree, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}{jax.tree_util.keystr(path)}": np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _unflatten(template, prefix: str, golden) -> object:
    def leaf(path, x):
        value = golden[f"{prefix}{jax.tree_util.keystr(path)}"]
        assert value.shape == np.shape(x), jax.tree_util.keystr(path)
        return value

    return jax.tree_util.tree_map_with_path(leaf, template)


# --- building the inputs and outputs through the package's API --------------------------


def _batch():
    """The first 8 molecules of the shipped spectra set (QM9 geometries, real spectra,
    QM9 gap and U0), one shard."""
    config = test_pretrain.get_config()
    rows = np.arange(N_MOLECULES)
    part = sources.load(config.data.spectra, config.data).subset(rows)
    qm9 = load_qm9(verbose=False)
    row_of = {int(i): r for r, i in enumerate(qm9.ids)}
    targets = qm9.subset([row_of[int(i)] for i in part.ids]).select_targets(TARGETS)
    part = dataclasses.replace(part, targets=targets.targets, target_names=TARGETS)
    edges = candidate_edges(part, candidate_radius(config.model.cutoff, config.data.skin, 0.04))
    atoms, n_edges = int(part.n_atoms.sum()) + 5, int(edges.n_edges.sum()) + 8
    batch = collate(part, edges, [rows], Budget(1, N_MOLECULES + 2, atoms, n_edges))
    return config, part, batch


def _compute(params_pretrain, batch_stats, params_finetune, config, batch):
    mesh = make_mesh()
    global_batch = jax.tree.map(jax.numpy.asarray, batch)
    encoder = build_encoder(config.model)
    graph = jax.tree.map(lambda x: x[0], batch.graph)
    scalars, vectors = encoder.apply({"params": params_pretrain["encoder"]}, graph)
    model = PretrainModel(encoder)
    specformer = build_specformer(config.specformer)
    out = {"encoder_scalars": scalars, "encoder_vectors": vectors}
    key = jax.random.PRNGKey(7)
    for train in (True, False):
        loss = jax.jit(
            functools.partial(
                pretrain_loss,
                model=model,
                specformer=specformer,
                loss_config=config.loss,
                mesh=mesh,
                train=train,
            )
        )
        _, (metrics, _) = loss(params_pretrain, batch_stats, global_batch, key)
        out.update({f"pretrain_{train}_{k}": v for k, v in metrics.items()})
    ft_config = finetune_test.get_config()
    ft_model = build_model(ft_config, TARGETS)
    predict_fn = functools.partial(predict, model=ft_model, std=STD, mesh=mesh, forces=True)
    pred = jax.jit(predict_fn)(params_finetune, global_batch)
    out["finetune_properties"] = pred["properties"]
    out["finetune_forces"] = pred["forces"]
    return {k: np.asarray(v) for k, v in out.items()}


def _fresh_params(config, batch):
    model = PretrainModel(build_encoder(config.model))
    specformer = build_specformer(config.specformer)
    model_key, spec_key, _ = jax.random.split(jax.random.PRNGKey(0), 3)
    params, batch_stats = init_variables(
        model, batch, model_key, specformer=specformer, specformer_key=spec_key
    )
    ft_model = build_model(finetune_test.get_config(), TARGETS)
    return params, batch_stats, init_variables(ft_model, batch, jax.random.PRNGKey(1))[0]


# --- the test ---------------------------------------------------------------------------


def test_outputs_match_the_committed_goldens(request):
    config, part, batch = _batch()
    params, batch_stats, ft_params = _fresh_params(config, batch)
    if request.config.getoption("--regenerate-goldens"):
        outputs = _compute(params, batch_stats, ft_params, config, batch)
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        np.savez_compressed(
            GOLDEN,
            ids=part.ids,
            **_flatten(params, "params"),
            **_flatten(batch_stats, "batch_stats"),
            **_flatten(ft_params, "finetune"),
            **{f"out_{k}": v for k, v in outputs.items()},
        )
        pytest.skip(f"regenerated {GOLDEN}")
    golden = dict(np.load(GOLDEN))
    np.testing.assert_array_equal(part.ids, golden["ids"])  # the same real molecules
    params = _unflatten(params, "params", golden)
    batch_stats = _unflatten(batch_stats, "batch_stats", golden)
    ft_params = _unflatten(ft_params, "finetune", golden)
    outputs = _compute(params, batch_stats, ft_params, config, batch)
    expected = {k[4:]: v for k, v in golden.items() if k.startswith("out_")}
    assert sorted(outputs) == sorted(expected)
    g = batch.graph
    real = {
        "encoder": g.atom_mask[0],
        "finetune_forces": g.atom_mask,
        "finetune_properties": g.graph_mask,
    }
    for name, value in expected.items():
        got = outputs[name]
        mask = real.get(name.split("_")[0], real.get(name))
        if mask is not None:  # padding slots hold zeros or don't-care values
            got, value = got[mask], value[mask]
        # float32 round-off of a reordered sum; far below any change of the math
        atol = 1e-5 * max(float(np.abs(value).max()), 1.0)
        np.testing.assert_allclose(got, value, rtol=1e-4, atol=atol, err_msg=name)
