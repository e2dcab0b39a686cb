"""The pre-training run: stage 1 (denoising on geometries) or stage 2 (+ spectra).

Stage 2 starts from a stage-1 run (`config.init_from`) when given, loading the encoder
and noise head by name; checkpoints carry the config, so fine-tuning can check that its
encoder matches before it loads `params["encoder"]`.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from molspectra_jax.data import pipeline
from molspectra_jax.data.batching import BatchIterator, candidate_edges, make_budget
from molspectra_jax.data.pretrain_data import load_geometries, load_spectra_set, split_train_valid
from molspectra_jax.models import build_encoder
from molspectra_jax.models.pretrain_model import PretrainModel
from molspectra_jax.models.specformer import build_specformer
from molspectra_jax.train import sharding
from molspectra_jax.train.loop import fit
from molspectra_jax.train.optim import make_optimizer
from molspectra_jax.train.pretrain_step import pretrain_loss, pretrain_step
from molspectra_jax.train.state import TrainState


def uses_spectra(config) -> bool:
    return config.stage == 2 and (config.loss.b_mpr > 0 or config.loss.b_contrast > 0)


def load_data(config):
    """(train iterator, valid iterator) over the stage's molecules (+ spectra)."""
    if uses_spectra(config):
        dataset, spectra = load_spectra_set(config.data)
        spectra = {k: v for k, v in spectra.items() if k in config.specformer.spectra}
    else:
        dataset, spectra = load_geometries(config.data), None
    pipeline.validate(dataset, config.data.source, config.data.elements, None)
    train_rows, valid_rows = split_train_valid(len(dataset), config.data.n_valid,
                                               config.data.split_seed)  # fmt: skip
    if config.data.n_train > 0:
        train_rows = train_rows[: config.data.n_train]
    n_shards = config.data.n_shards or jax.device_count()
    iterators = []
    for rows, batch_size, shuffle in (
        (train_rows, config.data.batch_size, True),
        (valid_rows, config.data.eval_batch_size, False),
    ):
        part = dataset.subset(rows)
        edges = candidate_edges(part, config.model.cutoff + config.data.skin)
        budget = make_budget(part, edges, batch_size, n_shards, config.data.budget_slack)
        part_spectra = None if spectra is None else {k: v[rows] for k, v in spectra.items()}
        iterators.append(BatchIterator(part, edges, budget, seed=config.data.shuffle_seed,
                                       shuffle=shuffle, spectra=part_spectra,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()))  # fmt: skip
    print(
        f"pre-training stage {config.stage}: {len(train_rows)} train / {len(valid_rows)} "
        f"valid molecules{' with spectra' if spectra else ''}; budget {iterators[0].budget}"
    )
    return iterators


def init_state(config, model, specformer, batch, key) -> TrainState:
    """Fresh params {"encoder", "noise_head"(, "specformer")} and BatchNorm statistics."""
    shard = jax.tree.map(lambda x: x[0], batch)
    model_key, spec_key, state_key = jax.random.split(key, 3)

    @jax.jit
    def init(shard):
        variables = model.init(
            model_key, shard.atomic_numbers, shard.positions, shard.senders, shard.receivers,
            shard.edge_mask, shard.atom_mask, shard.graph_index, shard.graph_mask.shape[0],
        )  # fmt: skip
        params = dict(variables["params"])
        batch_stats = {}
        if specformer is not None:
            variables = specformer.init(spec_key, shard.spectra, train=False)
            params["specformer"] = variables["params"]
            batch_stats = variables.get("batch_stats", {})
        return params, batch_stats

    params, batch_stats = init(shard)
    tx = make_optimizer(config.optim, config.train.num_steps)
    return TrainState.create(params, tx, state_key, batch_stats)


def train(config, workdir: str) -> TrainState:
    """Run pre-training to `config.train.num_steps` in `workdir` (resuming if possible)."""
    sharding.initialize_distributed(**config.distributed)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
    train_iterator, valid_iterator = load_data(config)
    model = PretrainModel(build_encoder(config.model))
    specformer = None
    if uses_spectra(config):
        specformer = build_specformer(config.specformer)
        if config.specformer.embed_dim != config.model.hidden:
            raise ValueError(f"specformer.embed_dim {config.specformer.embed_dim} must equal "
                             f"model.hidden {config.model.hidden} (contrast)")  # fmt: skip
    state = init_state(config, model, specformer, next(train_iterator),
                       jax.random.PRNGKey(config.seed))  # fmt: skip
    train_iterator.restore({"epoch": 0, "cursor": 0})
    print(f"parameters: {sum(x.size for x in jax.tree.leaves(state.params)):,}")

    loss_kwargs = dict(model=model, specformer=specformer, loss_config=config.loss, mesh=mesh)
    step_fn = sharding.jit_step(functools.partial(pretrain_step, **loss_kwargs), mesh)
    valid_loss = jax.jit(functools.partial(pretrain_loss, train=False, **loss_kwargs))

    def evaluate(state):
        totals = []
        for i, batch in enumerate(valid_iterator.one_pass()):
            key = jax.random.PRNGKey(i)  # the same noise and masks at every evaluation
            _, (metrics, _) = valid_loss(state.params, state.batch_stats,
                                         sharding.global_batch(batch, mesh), key)  # fmt: skip
            totals.append(jax.device_get(metrics))
        means = {k: float(np.mean([t[k] for t in totals])) for k in totals[0]}
        return means["loss"], means

    def load_stage1(state):
        from molspectra_jax.train.handoff import load_pretrained_params

        params = load_pretrained_params(state.params, config.init_from, config.model.to_dict())
        return state.replace(params=params, opt_state=state.tx.init(params))

    state, ckpt, writer = fit(
        state=state, step_fn=step_fn, train_iterator=train_iterator, mesh=mesh, config=config,
        workdir=workdir, desc=f"pre-train (stage {config.stage})", evaluate_fn=evaluate,
        init_fn=load_stage1 if config.init_from else None,
    )  # fmt: skip
    writer.close()
    ckpt.close()
    return state
