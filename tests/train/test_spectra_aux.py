"""The paper's Table 1 setting: fine-tuning with the spectra objectives as auxiliary
losses (MPR + contrast next to the property loss) on the molecules that have spectra."""

import json

import jax
import numpy as np
import pytest

import molspectra_jax
from molspectra_jax.configs import test as test_config
from molspectra_jax.data import sources
from molspectra_jax.spectroscopy.embedded import load_embedded_spectra
from molspectra_jax.train import finetune, sharding
from molspectra_jax.train.checkpoint import read_checkpoint_arrays
from molspectra_jax.train.handoff import start_from


def aux_config(mpr=1.0, contrast=1.0):
    config = test_config.get_config()
    config.target = "gap"
    config.data.with_spectra = True
    config.spectra_aux.update(mpr=mpr, contrast=contrast)
    config.optim.learning_rate = 3e-3
    return config


def train_log(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return [r for r in rows if r["split"] == "train"]


def test_with_spectra_trains_on_the_molecules_that_have_them():
    config = test_config.get_config()
    config.data.with_spectra = True
    dataset = sources.with_spectra(sources.load("qm9", config.data), config.data)
    shipped = load_embedded_spectra()
    assert len(dataset) == len(shipped) and set(dataset.ids) == set(shipped.ids)
    assert set(dataset.spectra) == {"uv", "ir", "raman"}
    qm9 = sources.load("qm9", config.data)
    row = int(np.flatnonzero(qm9.ids == dataset.ids[5])[0])
    np.testing.assert_array_equal(dataset.targets[5], qm9.targets[row])  # joined by id
    np.testing.assert_array_equal(dataset.molecule(5)[1], qm9.molecule(row)[1])  # QM9 geometry
    rows = sources.finetuning_rows(dataset, config.data)  # QM9's proportions of 3,299
    assert {k: len(v) for k, v in rows.items()} == {"train": 64, "valid": 32, "test": 32}


def test_spectra_losses_train_next_to_the_property_in_one_program():
    run = finetune.setup(aux_config(), sharding.make_mesh())
    traces = []

    def counted(state, batch):
        traces.append(1)
        return run.train_step(state, batch)

    step = sharding.jit_step(counted, run.mesh)
    before = [np.array(x) for x in jax.tree.leaves(run.state.batch_stats)]  # copies: donated
    state, log = sharding.replicate(run.state, run.mesh), []
    for _ in range(40):  # 64 molecules in batches of 16: 10 epochs
        state, metrics = step(state, sharding.global_batch(next(run.iterators["train"]), run.mesh))
        log.append(jax.device_get(metrics))
    assert len(traces) == 1
    for name in ("property_loss", "mpr_loss", "contrast_loss"):
        first, last = np.mean([r[name] for r in log[:8]]), np.mean([r[name] for r in log[-8:]])
        assert last < first, (name, [round(float(r[name]), 3) for r in log])
    assert 0 <= log[-1]["contrast_accuracy"] <= 1
    after = jax.tree.leaves(state.batch_stats)  # SpecFormer's BatchNorm statistics move
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_a_run_with_spectra_checkpoints_specformer_and_predicts_without_it(tmp_path):
    config = aux_config()
    config.train.update(num_steps=6, eval_every=3, checkpoint_every=3)
    result = finetune.train_and_evaluate(config, str(tmp_path))
    assert {"mpr_loss", "contrast_loss"} <= set(train_log(tmp_path)[-1])
    arrays, _ = read_checkpoint_arrays(str(tmp_path / "checkpoints" / "latest"))
    assert "specformer" in arrays["params"] and jax.tree.leaves(arrays["batch_stats"])
    model = molspectra_jax.load(str(tmp_path))  # the property model alone
    test = sources.finetuning_splits(
        sources.with_spectra(sources.load("qm9", config.data), config.data), config.data
    )["test"].select_targets(("gap",))
    predicted = model.predict(test)["gap"]
    mae = float(np.mean(np.abs(predicted - test.targets[:, 0])))
    assert mae == pytest.approx(result["test_mae"]["gap"], rel=1e-4)
    # Another run starting from it takes the SpecFormer with its BatchNorm statistics.
    fresh = finetune.setup(aux_config(), sharding.make_mesh()).state
    started = start_from(fresh, str(tmp_path), config.model.to_dict())
    for a, b in zip(
        jax.tree.leaves((started.params["specformer"], started.batch_stats)),
        jax.tree.leaves((arrays["params"]["specformer"], arrays["batch_stats"])),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_spectra_aux_is_refused_without_spectra_molecules():
    config = aux_config()
    config.data.with_spectra = False
    with pytest.raises(ValueError, match="set data.with_spectra=True"):
        finetune.setup(config, sharding.make_mesh())
    config = aux_config()
    config.data.source, config.target = "md17", "energy"
    with pytest.raises(ValueError, match="data.source must be 'qm9'"):
        finetune.setup(config, sharding.make_mesh())
