"""The pre-training task: stage 1 (denoising on geometries) or stage 2 (+ spectra).

Stage 2 starts from a stage-1 run (`config.init_from`) when given, loading the encoder
and noise head by name; checkpoints carry the config, so fine-tuning can check that its
encoder matches before it loads `params["encoder"]`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from molspectra_jax.data import pipeline, sources
from molspectra_jax.data.records import MoleculeDataset
from molspectra_jax.models import build_encoder
from molspectra_jax.models.pretrain_model import PretrainModel
from molspectra_jax.models.specformer import SpecFormer
from molspectra_jax.train import loop, sharding
from molspectra_jax.train.handoff import initialiser
from molspectra_jax.train.neighbors import candidate_check
from molspectra_jax.train.optim import current_learning_rate, make_optimizer
from molspectra_jax.train.pretrain_step import pretrain_loss, pretrain_step
from molspectra_jax.train.spectra_terms import contrast_specformer
from molspectra_jax.train.state import TrainState, init_variables


@dataclasses.dataclass(frozen=True)
class PretrainTask:
    """The models a pre-training run trains (`Run.task`); no SpecFormer in stage 1."""

    model: PretrainModel
    specformer: SpecFormer | None


def uses_spectra(config) -> bool:
    return config.stage == 2 and (config.loss.b_mpr > 0 or config.loss.b_contrast > 0)


def load_splits(config) -> tuple[str, MoleculeDataset, dict[str, np.ndarray]]:
    """(source name, molecules, {"train", "valid"} rows of them): stage 1 geometries of
    `data.source` (targets dropped), stage 2 molecules with spectra of `data.spectra`."""
    source, argument = sources.resolve(
        config.data.spectra if uses_spectra(config) else config.data.source
    )
    dataset = source.load(argument, config.data).select_targets(())
    if uses_spectra(config):
        wanted = config.specformer.spectra
        dataset = dataclasses.replace(
            dataset, spectra={k: v for k, v in dataset.spectra.items() if k in wanted}
        )
    else:
        dataset = dataclasses.replace(dataset, spectra={})
    return source.name, dataset, sources.pretraining_rows(len(dataset), config.data)


def setup(config, mesh) -> loop.Run:
    """Molecules (+ spectra), models, fresh state and step for `config`: a `Run`."""
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
    label, dataset, rows = load_splits(config)
    iterators = pipeline.make_iterators(
        {name: dataset for name in rows},
        config.data,
        config.model.cutoff,
        sharding.shard_count(config.data.n_shards),
        label=label,
        rows=rows,
        noise_sigma=config.loss.noise_sigma,
        layout=config.model.get("layout", "sparse"),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    print(
        f"pre-training stage {config.stage}: {len(rows['train'])} train / "
        f"{len(rows['valid'])} valid molecules{' with spectra' if uses_spectra(config) else ''}"
        f"; budget {iterators['train'].budget}"
    )
    model = PretrainModel(build_encoder(config.model), activation=config.model.activation)
    specformer = None
    if uses_spectra(config):
        specformer = contrast_specformer(config)
    model_key, spec_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    params, batch_stats = init_variables(
        model, next(iterators["train"]), model_key, specformer=specformer, specformer_key=spec_key
    )
    iterators["train"].restore({"epoch": 0, "cursor": 0})
    tx = make_optimizer(config.optim, config.train.num_steps)
    rate = functools.partial(current_learning_rate, config.optim, config.train.num_steps)
    state = TrainState.create(params, tx, state_key, batch_stats)
    print(f"parameters: {sum(x.size for x in jax.tree.leaves(state.params)):,}")

    check = candidate_check(config.model, iterators["train"], config.loss.noise_sigma)
    loss_kwargs = dict(
        model=model, specformer=specformer, loss_config=config.loss, mesh=mesh, check=check
    )
    valid_loss = jax.jit(functools.partial(pretrain_loss, train=False, **loss_kwargs))

    def evaluate(state):
        totals = []
        for i, batch in enumerate(iterators["valid"].one_pass()):
            key = jax.random.PRNGKey(i)  # the same noise and masks at every evaluation
            batch = sharding.global_batch(batch, mesh)
            _, (metrics, _) = valid_loss(state.params, state.batch_stats, batch, key)
            totals.append(jax.device_get(metrics))
        means = {k: float(np.mean([t[k] for t in totals])) for k in totals[0]}
        return means["loss"], means

    return loop.Run(
        name=f"pre-train (stage {config.stage})",
        mesh=mesh,
        state=state,
        train_step=functools.partial(pretrain_step, learning_rate=rate, **loss_kwargs),
        iterators=iterators,
        evaluate=evaluate,
        init_from=initialiser(config),
        task=PretrainTask(model=model, specformer=specformer),
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Pre-train to `config.train.num_steps` in `workdir` (resuming if possible); returns
    the last validation metrics."""
    mesh = loop.start(config, workdir)
    with loop.workdir_lock(workdir):
        _, valid = loop.fit(setup(config, mesh), config, workdir)
    return valid
