"""Fine-tuning train step and prediction: pure functions of (state, batch), jitted once.

The batch is a `GraphBatch` with a leading shard axis S; the model runs on each
device's own shards (`sharding.apply_per_device`: atoms never cross devices), and the
loss averages over every real molecule of the global batch. Targets reach the device as
residuals (target minus the train mean and atomref sum, subtracted on the host in
float64); predictions are residuals too: `raw * std`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from molspectra_jax import losses
from molspectra_jax.data.batching import GraphBatch
from molspectra_jax.graph import Graph
from molspectra_jax.models.property_model import PropertyModel
from molspectra_jax.models.specformer import SpecFormer
from molspectra_jax.train import sharding
from molspectra_jax.train.neighbors import CandidateCheck, missed_pairs
from molspectra_jax.train.optim import bad_steps, global_norm
from molspectra_jax.train.spectra_terms import global_spectra, spectra_terms, without_specformer
from molspectra_jax.train.state import TrainState


def residuals(model: PropertyModel, params, graph: Graph, std: jax.Array, mesh: Mesh):
    """(predicted residuals [S, G, T] in target units, raw model outputs)."""
    outputs = sharding.apply_per_device(model, without_specformer(params), graph, mesh)
    return outputs["raw"] * std, outputs


def energy_and_forces(params, graph: Graph, *, model, std, mesh):
    """(predictions [S, G, T], forces [S, N, 3] = -dE/dR of target 0 (energy units / Å;
    zero on padding atoms), raw model outputs)."""

    def total_energy(positions):
        pred, outputs = residuals(model, params, graph.with_positions(positions), std, mesh)
        return jnp.sum(jnp.where(graph.graph_mask, pred[..., 0], 0.0)), (pred, outputs)

    grad_fn = jax.value_and_grad(total_energy, has_aux=True)
    (_, (pred, outputs)), grad = grad_fn(graph.positions)
    return pred, -grad * graph.atom_mask[..., None], outputs


def predict(params, batch: GraphBatch, *, model, std, mesh, forces: bool = False):
    """{"properties": [S, G, T] residuals, "forces": [S, N, 3] if `forces`}.

    Add the host-side offsets (`statistics.target_offsets`) for target units. Padding
    graphs hold garbage; padding atoms no force.
    """
    if forces:
        pred, f, _ = energy_and_forces(params, batch.graph, model=model, std=std, mesh=mesh)
        return {"properties": pred, "forces": f}
    return {"properties": residuals(model, params, batch.graph, std, mesh)[0]}


def finetune_loss(
    params,
    batch: GraphBatch,
    key: jax.Array,
    *,
    model: PropertyModel,
    std: jax.Array,
    loss_kind: str,
    noise_sigma: float,
    noise_weight: float,
    mesh: Mesh,
    energy_weight: float = 1.0,
    force_weight: float = 0.0,
    check: CandidateCheck | None = None,
    names: tuple[str, ...] = (),
    batch_stats=None,
    specformer: SpecFormer | None = None,
    spectra_aux=None,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
    """(total, (metrics, new batch_stats)): the property loss on standardized targets,
    optionally plus a force term, noisy nodes and the spectra objectives.

    Metrics: the loss terms, and `mae_<name>` in target units for each of `names` (the
    targets, then "forces" when they train): the learning curves' train side, on the
    batch as the loss sees it (noisy nodes included).

    With `force_weight > 0` (MD17), target 0 is the energy and `batch.atom_targets` the
    forces: loss = energy_weight * L(E) + force_weight * L(F = -dE/dR), both divided by
    the energy std. Noisy nodes (`noise_weight > 0`) would move the atoms the reference
    forces belong to, so the two exclude each other.

    With `specformer` (and `batch.spectra`; `model.embedding` on), the spectra terms are
    auxiliary losses, the paper's Table 1 "w/ spectra" setting: + spectra_aux.mpr *
    L_mpr + spectra_aux.contrast * L_contrast (`spectra_terms`; temperature and
    direction from `spectra_aux`), SpecFormer's BatchNorm statistics in `batch_stats`.
    """
    graph = batch.graph
    t = batch.targets.shape[-1]
    graph_mask = graph.graph_mask.reshape(-1)
    atom_mask = graph.atom_mask.reshape(-1)
    metrics = {}
    if force_weight > 0:
        if noise_weight > 0:
            raise ValueError("noisy nodes (loss.noise_weight) cannot train with forces")
        pred, forces, outputs = energy_and_forces(params, graph, model=model, std=std, mesh=mesh)
        # Standardized units: both terms divided by the energy std.
        total, terms = losses.energy_force_loss_and_terms(
            (pred / std).reshape(-1, t),
            (batch.targets / std).reshape(-1, t),
            (forces / std[0]).reshape(-1, 3),
            (batch.atom_targets / std[0]).reshape(-1, 3),
            graph_mask=graph_mask,
            atom_mask=atom_mask,
            energy_weight=energy_weight,
            force_weight=force_weight,
            kind=loss_kind,
        )
        metrics.update(property_loss=terms["energy_loss"], force_loss=terms["force_loss"])
        force_mae = _mean_abs(forces - batch.atom_targets, graph.atom_mask).mean()
    else:
        if noise_weight > 0:
            noise = noise_sigma * jax.random.normal(key, graph.positions.shape)  # [S, N, 3] Å
            noise = noise * graph.atom_mask[..., None]
            if check is not None:
                metrics.update(missed_pairs(graph, noise, check))
            graph = graph.with_positions(graph.positions + noise)
        pred, outputs = residuals(model, params, graph, std, mesh)
        # Standardized units weigh every target equally whatever its unit.
        metrics["property_loss"] = losses.property_loss(
            (pred / std).reshape(-1, t),
            (batch.targets / std).reshape(-1, t),
            mask=graph_mask,
            kind=loss_kind,
        )
        total = energy_weight * metrics["property_loss"]
    maes = _mean_abs(pred - batch.targets, batch.graph.graph_mask)  # [T]
    if force_weight > 0:
        maes = jnp.append(maes, force_mae)
    metrics.update({f"mae_{name}": mae for name, mae in zip(names, maes, strict=False)})
    if noise_weight > 0:
        metrics["denoising_loss"] = losses.denoising_loss(
            outputs["noise"].reshape(-1, 3), (noise / noise_sigma).reshape(-1, 3), mask=atom_mask
        )
        total = total + noise_weight * metrics["denoising_loss"]
    if specformer is not None:
        b = graph_mask.shape[0]
        terms, batch_stats = spectra_terms(
            specformer,
            params,
            batch_stats,
            global_spectra(batch, b),
            outputs["embedding"].reshape(b, -1),  # [B, F]
            graph_mask,
            jax.random.fold_in(key, 1),  # the patch masks; `key` draws the noise
            temperature=spectra_aux.temperature,
            symmetric=spectra_aux.symmetric,
            train=True,
        )
        metrics.update(terms)
        aux = spectra_aux.mpr * terms["mpr_loss"] + spectra_aux.contrast * terms["contrast_loss"]
        total = total + aux
    metrics["loss"] = total
    return total, (metrics, batch_stats)


def _mean_abs(error: jax.Array, mask: jax.Array) -> jax.Array:
    """[..., K] errors, [...] mask -> [K] mean |error| over the masked entries."""
    weight = mask[..., None].astype(error.dtype)
    axes = tuple(range(error.ndim - 1))
    return jnp.sum(jnp.abs(error) * weight, axes) / jnp.maximum(jnp.sum(weight), 1.0)


def train_step(state: TrainState, batch: GraphBatch, *, learning_rate=None, **loss_kwargs):
    """One optimizer step: (state, batch) -> (state, metrics). Randomness from the step.
    `learning_rate(opt_state, step)` (optional) adds the rate this step trains with."""
    key = jax.random.fold_in(state.key, state.step)
    loss_fn = functools.partial(finetune_loss, batch_stats=state.batch_stats, **loss_kwargs)
    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, key
    )
    if learning_rate is not None:
        metrics["learning_rate"] = learning_rate(state.opt_state, state.step)
    state = state.apply_gradients(grads, loss, batch_stats)
    metrics.update(grad_norm=global_norm(grads), bad_steps=bad_steps(state.opt_state))
    return state, metrics
