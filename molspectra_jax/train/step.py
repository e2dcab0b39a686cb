"""Fine-tuning train step and prediction: pure functions of (state, batch), jitted once.

The batch is a `GraphBatch` with a leading shard axis S; the model runs on each shard
with `jax.vmap` (shards never exchange atoms), and the loss averages over every real
molecule of the global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from molspectra_jax import losses
from molspectra_jax.data.batching import GraphBatch
from molspectra_jax.models.property_model import (
    PropertyModel,
    TargetStats,
    atomref_sum,
    denormalize,
)
from molspectra_jax.train.state import TrainState


def apply_property_model(
    model: PropertyModel, params, batch: GraphBatch, positions: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Run `model` on every shard: {"raw": [S, G, T], "noise": [S, N, 3]?}."""
    n_graphs = batch.graph_mask.shape[1]

    def shard(b: GraphBatch, pos):
        return model.apply(
            {"params": params},
            b.atomic_numbers,
            pos,
            b.senders,
            b.receivers,
            b.edge_mask,
            b.atom_mask,
            b.graph_index,
            n_graphs,
        )

    return jax.vmap(shard)(batch, batch.positions if positions is None else positions)


def predict(
    params,
    batch: GraphBatch,
    *,
    model: PropertyModel,
    stats: TargetStats,
    molecule_level: Sequence[bool],
) -> jax.Array:
    """[S, G, T] predictions in target units (padding graphs hold garbage; mask them)."""
    raw = apply_property_model(model, params, batch)["raw"]
    n_graphs = batch.graph_mask.shape[1]
    reference = jax.vmap(atomref_sum, in_axes=(0, 0, 0, None, None))(
        batch.atomic_numbers, batch.atom_mask, batch.graph_index, n_graphs, stats.atomref
    )
    return denormalize(raw, stats, reference, jnp.asarray(molecule_level))


def finetune_loss(
    params,
    batch: GraphBatch,
    key: jax.Array,
    *,
    model: PropertyModel,
    stats: TargetStats,
    molecule_level: Sequence[bool],
    loss_kind: str,
    noise_sigma: float,
    noise_weight: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Property loss on standardized targets (+ noisy-nodes denoising when weighted)."""
    positions = batch.positions
    noise = None
    if noise_weight > 0:
        noise = noise_sigma * jax.random.normal(key, positions.shape)  # [S, N, 3] Å
        positions = positions + noise * batch.atom_mask[..., None]
    raw_out = apply_property_model(model, params, batch, positions)
    n_graphs = batch.graph_mask.shape[1]
    reference = jax.vmap(atomref_sum, in_axes=(0, 0, 0, None, None))(
        batch.atomic_numbers, batch.atom_mask, batch.graph_index, n_graphs, stats.atomref
    )
    pred = denormalize(raw_out["raw"], stats, reference, jnp.asarray(molecule_level))
    t = pred.shape[-1]
    mask = batch.graph_mask.reshape(-1)
    # Standardized units weigh every target equally whatever its unit.
    prop = losses.property_loss(
        (pred / stats.std).reshape(-1, t),
        (batch.targets / stats.std).reshape(-1, t),
        mask=mask,
        kind=loss_kind,
    )
    metrics = {"property_loss": prop}
    total = prop
    if noise is not None:
        den = losses.denoising_loss(
            raw_out["noise"].reshape(-1, 3),
            (noise / noise_sigma).reshape(-1, 3),
            mask=batch.atom_mask.reshape(-1),
        )
        metrics["denoising_loss"] = den
        total = total + noise_weight * den
    metrics["loss"] = total
    return total, metrics


def train_step(state: TrainState, batch: GraphBatch, **loss_kwargs):
    """One optimizer step: (state, batch) -> (state, metrics). Randomness from the step."""
    key = jax.random.fold_in(state.key, state.step)
    grad_fn = jax.value_and_grad(functools.partial(finetune_loss, **loss_kwargs), has_aux=True)
    (_, metrics), grads = grad_fn(state.params, batch, key)
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
    return state.apply_gradients(grads), metrics
