"""Fine-tuning train step and prediction: pure functions of (state, batch), jitted once.

The batch is a `GraphBatch` with a leading shard axis S; the model runs on each
device's own shards (`sharding.per_device`: atoms never cross devices), and the loss
averages over every real molecule of the global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from molspectra_jax import losses
from molspectra_jax.data.batching import GraphBatch
from molspectra_jax.models.property_model import (
    PropertyModel,
    TargetStats,
    atomref_sum,
    denormalize,
)
from molspectra_jax.train import sharding
from molspectra_jax.train.state import TrainState


def apply_property_model(
    model: PropertyModel, params, batch: GraphBatch, positions: jax.Array, mesh: Mesh
) -> dict[str, jax.Array]:
    """Run `model` on each device's shards: {"raw": [S, G, T], "noise": [S, N, 3]?}."""

    def local(params, b: GraphBatch, pos):  # leading axis 1: this device's merged shards
        out = model.apply(
            {"params": params},
            b.atomic_numbers[0],
            pos[0],
            b.senders[0],
            b.receivers[0],
            b.edge_mask[0],
            b.atom_mask[0],
            b.graph_index[0],
            b.graph_mask.shape[1],
        )
        return jax.tree.map(lambda x: x[None], out)

    return sharding.per_device(local, mesh)(params, batch, positions)


def to_target_units(
    raw: jax.Array, batch: GraphBatch, stats: TargetStats, molecule_level: Sequence[bool]
) -> jax.Array:
    """raw [S, G, T] model outputs -> target units (std, mean and atomref sums applied)."""
    n_graphs = batch.graph_mask.shape[1]
    reference = jax.vmap(atomref_sum, in_axes=(0, 0, 0, None, None))(
        batch.atomic_numbers, batch.atom_mask, batch.graph_index, n_graphs, stats.atomref
    )  # [S, G, T]
    return denormalize(raw, stats, reference, jnp.asarray(molecule_level))


def energy_and_forces(
    params, batch: GraphBatch, positions: jax.Array, *, model, stats, molecule_level, mesh
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(predictions [S, G, T] in target units, forces [S, N, 3] = -dE/dR of target 0
    (energy units / Å; zero on padding atoms), raw model outputs)."""

    def total_energy(pos):
        outputs = apply_property_model(model, params, batch, pos, mesh)
        pred = to_target_units(outputs["raw"], batch, stats, molecule_level)
        return jnp.sum(jnp.where(batch.graph_mask, pred[..., 0], 0.0)), (pred, outputs)

    (_, (pred, outputs)), grad = jax.value_and_grad(total_energy, has_aux=True)(positions)
    return pred, -grad * batch.atom_mask[..., None], outputs


def predict(
    params,
    batch: GraphBatch,
    *,
    model: PropertyModel,
    stats: TargetStats,
    molecule_level: Sequence[bool],
    mesh: Mesh,
    forces: bool = False,
) -> dict[str, jax.Array]:
    """{"properties": [S, G, T] in target units (less the mean/atomref `stats` leave out),
    "forces": [S, N, 3] if `forces`}. Padding graphs hold garbage; padding atoms no force.
    """
    if forces:
        pred, f, _ = energy_and_forces(params, batch, batch.positions, model=model, stats=stats,
                                       molecule_level=molecule_level, mesh=mesh)  # fmt: skip
        return {"properties": pred, "forces": f}
    raw = apply_property_model(model, params, batch, batch.positions, mesh)["raw"]
    return {"properties": to_target_units(raw, batch, stats, molecule_level)}


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
    mesh: Mesh,
    energy_weight: float = 1.0,
    force_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Property loss on standardized targets, optionally plus a force term and noisy nodes.

    With `force_weight > 0` (MD17), target 0 is the energy and `batch.atom_targets` the
    forces: loss = energy_weight * L(E) + force_weight * L(F = -dE/dR), both divided by
    the energy std. Noisy nodes (`noise_weight > 0`) would move the atoms the reference
    forces belong to, so the two exclude each other.
    """
    t = batch.targets.shape[-1]
    common = dict(model=model, stats=stats, molecule_level=molecule_level, mesh=mesh)
    metrics = {}
    if force_weight > 0:
        if noise_weight > 0:
            raise ValueError("noisy nodes (loss.noise_weight) cannot train with forces")
        pred, forces, outputs = energy_and_forces(params, batch, batch.positions, **common)
        metrics["force_loss"] = losses.force_loss(
            (forces / stats.std[0]).reshape(-1, 3),
            (batch.atom_targets / stats.std[0]).reshape(-1, 3),
            mask=batch.atom_mask.reshape(-1),
            kind=loss_kind,
        )
    else:
        positions = batch.positions
        if noise_weight > 0:
            noise = noise_sigma * jax.random.normal(key, positions.shape)  # [S, N, 3] Å
            positions = positions + noise * batch.atom_mask[..., None]
        outputs = apply_property_model(model, params, batch, positions, mesh)
        pred = to_target_units(outputs["raw"], batch, stats, molecule_level)
    # Standardized units weigh every target equally whatever its unit.
    metrics["property_loss"] = losses.property_loss(
        (pred / stats.std).reshape(-1, t),
        (batch.targets / stats.std).reshape(-1, t),
        mask=batch.graph_mask.reshape(-1),
        kind=loss_kind,
    )
    total = energy_weight * metrics["property_loss"]
    if force_weight > 0:
        total = total + force_weight * metrics["force_loss"]
    if noise_weight > 0:
        metrics["denoising_loss"] = losses.denoising_loss(
            outputs["noise"].reshape(-1, 3),
            (noise / noise_sigma).reshape(-1, 3),
            mask=batch.atom_mask.reshape(-1),
        )
        total = total + noise_weight * metrics["denoising_loss"]
    metrics["loss"] = total
    return total, metrics


def train_step(state: TrainState, batch: GraphBatch, **loss_kwargs):
    """One optimizer step: (state, batch) -> (state, metrics). Randomness from the step."""
    key = jax.random.fold_in(state.key, state.step)
    grad_fn = jax.value_and_grad(functools.partial(finetune_loss, **loss_kwargs), has_aux=True)
    (_, metrics), grads = grad_fn(state.params, batch, key)
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
    return state.apply_gradients(grads), metrics
