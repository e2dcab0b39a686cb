"""The pre-training step: denoising + masked patch reconstruction + contrast, one jit.

    L = b_denoise * L_denoise + b_mpr * L_mpr + b_contrast * L_contrast

The 3D model runs per device on its own shards (`sharding.apply_per_device`); the spectra
terms (`spectra_terms`) run on global [B, ...] arrays, so BatchNorm statistics and
InfoNCE negatives span the global batch (XLA inserts the collectives).
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import Mesh

from molspectra_jax import losses
from molspectra_jax.data.batching import GraphBatch
from molspectra_jax.models.pretrain_model import PretrainModel
from molspectra_jax.models.specformer import SpecFormer
from molspectra_jax.train import sharding
from molspectra_jax.train.neighbors import CandidateCheck, missed_pairs
from molspectra_jax.train.optim import bad_steps, global_norm
from molspectra_jax.train.spectra_terms import global_spectra, spectra_terms, without_specformer
from molspectra_jax.train.state import TrainState


def pretrain_loss(
    params,
    batch_stats,
    batch: GraphBatch,
    key: jax.Array,
    *,
    model: PretrainModel,
    specformer: SpecFormer | None,
    loss_config,
    mesh: Mesh,
    train: bool = True,
    check: CandidateCheck | None = None,
):
    """(total, (metrics, new batch_stats)). SpecFormer terms only when it is given; with
    `check`, the candidate pairs the noise made insufficient are counted (metrics).

    `train=False` (validation) uses BatchNorm's running statistics and leaves them alone.
    """
    cfg, graph = loss_config, batch.graph
    noise_key, mask_key = jax.random.split(key)
    atom_mask = graph.atom_mask  # [S, N]
    noise = cfg.noise_sigma * jax.random.normal(noise_key, graph.positions.shape)
    noise = noise * atom_mask[..., None]  # [S, N, 3] Å; padding atoms stay put
    noisy = graph.with_positions(graph.positions + noise)
    out = sharding.apply_per_device(model, without_specformer(params), noisy, mesh)
    denoise = losses.denoising_loss(
        out["noise"].reshape(-1, 3),
        (noise / cfg.noise_sigma).reshape(-1, 3),
        mask=atom_mask.reshape(-1),
    )
    metrics = {"denoising_loss": denoise}
    if check is not None:
        metrics.update(missed_pairs(graph, noise, check))
    total = cfg.b_denoise * denoise
    if specformer is not None:
        graph_mask = graph.graph_mask.reshape(-1)  # [B]
        terms, batch_stats = spectra_terms(
            specformer,
            params,
            batch_stats,
            global_spectra(batch, graph_mask.shape[0]),
            out["embedding"].reshape(graph_mask.shape[0], -1),  # [B, F]
            graph_mask,
            mask_key,
            temperature=cfg.temperature,
            symmetric=cfg.symmetric,
            train=train,
        )
        metrics.update(terms)
        total = total + cfg.b_mpr * terms["mpr_loss"] + cfg.b_contrast * terms["contrast_loss"]
    metrics["loss"] = total
    return total, (metrics, batch_stats)


def pretrain_step(state: TrainState, batch: GraphBatch, *, learning_rate=None, **loss_kwargs):
    """(state, batch) -> (state, metrics): fresh noise and patch masks from fold_in(key, step).
    `learning_rate(opt_state, step)` (optional) adds the rate this step trains with."""
    key = jax.random.fold_in(state.key, state.step)
    grad_fn = jax.value_and_grad(functools.partial(pretrain_loss, **loss_kwargs), has_aux=True)
    (loss, (metrics, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch, key)
    metrics["grad_norm"] = global_norm(grads)
    if learning_rate is not None:
        metrics["learning_rate"] = learning_rate(state.opt_state, state.step)
    state = state.apply_gradients(grads, loss, batch_stats)
    metrics["bad_steps"] = bad_steps(state.opt_state)
    return state, metrics
