"""MolSpectra losses as pure JAX functions, importable without the rest of the package.

Every loss is `f(predictions, targets, *, mask=None, ...) -> scalar Array` in the
optax style: shapes are validated first (`ValueError` naming both shapes), masks are
boolean with `True` = real entry, and masked reductions average over real entries only.
An all-masked input returns `0.0` with finite (zero) gradients: the divisions use the
double-`where` safe divide, so padded batches never produce NaN/Inf, not even in the
backward pass. All functions work under `jit`, `vmap`, `grad` and sharding (no
host round-trips, no data-dependent shapes).

Reference: Wang et al., "MolSpectra: Pre-training 3D Molecular Representation with
Multi-modal Energy Spectra", ICLR 2025 (official code built on torchmd-net, whose
`mse_loss` / `l1_loss` are means over all elements; we reproduce that normalisation).

This module must import only `jax` (tests check it in a fresh interpreter), so that
other JAX projects can vendor it alone.
"""

from collections.abc import Mapping
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array

# Finite stand-in for -inf on excluded logits: exp() underflows to exactly 0, and
# jax_debug_infs stays quiet (a true -inf would trip it and NaN the softmax gradient).
_NEG_LARGE = -1e9

__all__ = [
    "denoising_loss",
    "energy_force_loss",
    "energy_force_loss_and_terms",
    "force_loss",
    "info_nce_loss",
    "info_nce_loss_and_accuracy",
    "masked_patch_reconstruction_loss",
    "multi_spectrum_reconstruction_loss",
    "property_loss",
]


def _check_same_shape(a: Array, b: Array, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, got {a.shape} and {b.shape}."
        )


def _check_mask(mask: Array | None, shape: tuple[int, ...], name: str, of: str) -> None:
    if mask is None:
        return
    if mask.shape != shape:
        raise ValueError(
            f"{name} must have shape {shape} (leading axes of {of}), got {mask.shape}."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"{name} must be boolean (True = real entry), got dtype {mask.dtype}.")


def _safe_divide(numerator: Array, denominator: Array) -> Array:
    """`numerator / denominator`, and 0 where `denominator == 0` with zero gradients.

    The inner `where` keeps the untaken branch of the outer one finite: otherwise its
    NaN cotangent (0 * inf) would leak into the gradient (mace-jax does the same).
    """
    is_zero = denominator == 0
    safe_denominator = jnp.where(is_zero, 1.0, denominator)
    return jnp.where(is_zero, 0.0, numerator / safe_denominator)


def _masked_mean(values: Array, mask: Array | None) -> Array:
    """Mean of `values [M, ...]` over the rows where `mask [M]` is True (all elements)."""
    if mask is None:
        return jnp.mean(values)
    row_mask = mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim))  # [M, 1, ...]
    total = jnp.sum(jnp.where(row_mask, values, 0.0))
    per_row = values.size // max(mask.size, 1)  # elements per real row, static
    count = jnp.sum(mask).astype(values.dtype) * per_row
    return _safe_divide(total, count)


def _elementwise_error(predictions: Array, targets: Array, kind: str) -> Array:
    if kind == "mse":
        return jnp.square(predictions - targets)
    if kind == "l1":
        return jnp.abs(predictions - targets)
    raise ValueError(f"Unknown loss kind {kind!r}; choose one of ('mse', 'l1').")


def denoising_loss(predicted_noise: Array, noise: Array, *, mask: Array | None = None) -> Array:
    """Coordinate-denoising MSE (Coord / torchmd-net pre-training objective).

    The encoder sees `positions + noise` and predicts the standardised noise; the
    caller passes `noise / sigma` as the target (exact standardisation for i.i.d.
    Gaussian noise, which the official `AccumulatedNormalization` only estimates).
    As torchmd-net's `mse_loss`, this is the mean over all real scalar elements,
    i.e. `sum_{i real, c in xyz} (pred_ic - target_ic)^2 / (3 * n_real)`, not a
    per-atom sum over xyz.

    Args:
      predicted_noise: `[N, 3]` predicted standardised noise (dimensionless).
      noise: `[N, 3]` target, `noise / sigma` (dimensionless).
      mask: optional `[N]` bool, True for real atoms (padding atoms are ignored).

    Returns:
      Scalar mean squared error; 0 if every atom is masked.

    Example:
      >>> loss = denoising_loss(model_out, eps / 0.04, mask=batch.graph.atom_mask)
    """
    _check_same_shape(predicted_noise, noise, "predicted_noise", "noise")
    if predicted_noise.ndim != 2 or predicted_noise.shape[-1] != 3:
        raise ValueError(f"predicted_noise must have shape [N, 3], got {predicted_noise.shape}.")
    _check_mask(mask, predicted_noise.shape[:1], "mask", "predicted_noise")
    return _masked_mean(jnp.square(predicted_noise - noise), mask)


def masked_patch_reconstruction_loss(
    reconstructed: Array,
    patches: Array,
    patch_mask: Array,
    *,
    mask: Array | None = None,
) -> Array:
    """Masked patch reconstruction (MPR) MSE of one spectrum, over masked patches only.

    As PatchTST pre-training (which SpecFormer follows): the squared error averaged over
    the patch length, then over every masked patch of every real molecule in the batch
    (a global mean, not a per-molecule one). With a fixed patch length this equals the
    mean over all values of the masked patches. Unmasked patches never contribute.
    Summing over the UV, IR and Raman spectra is the caller's job; see
    `multi_spectrum_reconstruction_loss`.

    Args:
      reconstructed: `[B, P, L]` reconstruction-head output (normalised intensity units,
        log10(1 + x) of the raw spectrum).
      patches: `[B, P, L]` target patch values (same units), before masking.
      patch_mask: `[B, P]` bool, True for masked patches (the ones to reconstruct).
      mask: optional `[B]` bool, True for real molecules (padded molecules ignored).

    Returns:
      Scalar MSE; 0 if no real molecule has a masked patch.
    """
    _check_same_shape(reconstructed, patches, "reconstructed", "patches")
    if reconstructed.ndim != 3:
        raise ValueError(f"reconstructed must have shape [B, P, L], got {reconstructed.shape}.")
    _check_mask(patch_mask, reconstructed.shape[:2], "patch_mask", "reconstructed")
    _check_mask(mask, reconstructed.shape[:1], "mask", "reconstructed")
    selected = patch_mask if mask is None else patch_mask & mask[:, None]  # [B, P]
    per_patch = jnp.mean(jnp.square(reconstructed - patches), axis=-1)  # [B, P]
    return _masked_mean(per_patch.reshape(-1), selected.reshape(-1))


def multi_spectrum_reconstruction_loss(
    reconstructed: Mapping[str, Array],
    patches: Mapping[str, Array],
    patch_mask: Mapping[str, Array],
    *,
    mask: Array | None = None,
) -> Array:
    """MPR summed over spectra (MolSpectra: L_MPR = sum over UV, IR, Raman).

    Args:
      reconstructed, patches: `{name: [B, P_name, L_name]}`, same keys.
      patch_mask: `{name: [B, P_name]}` bool, True = masked patch.
      mask: optional `[B]` bool, True for real molecules.

    Returns:
      Scalar sum of `masked_patch_reconstruction_loss` over the spectra.
    """
    if set(reconstructed) != set(patches) or set(reconstructed) != set(patch_mask):
        raise ValueError(
            "reconstructed, patches and patch_mask must have the same keys, got "
            f"{sorted(reconstructed)}, {sorted(patches)} and {sorted(patch_mask)}."
        )
    return sum(
        (
            masked_patch_reconstruction_loss(
                reconstructed[name], patches[name], patch_mask[name], mask=mask
            )
            for name in sorted(reconstructed)
        ),
        start=jnp.zeros(()),
    )


def _cosine_logits(a: Array, b: Array, temperature: float) -> Array:
    """`cos(a_i, b_j) / temperature` as `[B, B]`, as `torch.F.cosine_similarity`.

    Norms are clamped at 1e-8 (torch's eps) so that all-zero rows (e.g. the sum-pooled
    embedding of a padded, atom-less molecule) give 0 with finite gradients.
    """
    eps2 = jnp.asarray(1e-16, a.dtype)
    a_unit = a / jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1, keepdims=True), eps2))  # [B, D]
    b_unit = b / jnp.sqrt(jnp.maximum(jnp.sum(b * b, -1, keepdims=True), eps2))  # [B, D]
    return (a_unit @ b_unit.T) / temperature  # [B, B]


def _info_nce_direction(logits: Array, mask: Array | None) -> tuple[Array, Array]:
    """Cross-entropy with positives on the diagonal; rows are anchors. Returns (loss, acc)."""
    n = logits.shape[0]
    if mask is not None:
        # Padded rows are neither negatives (columns) nor anchors (rows, see _masked_mean).
        logits = jnp.where(mask[None, :], logits, _NEG_LARGE)  # [B, B]
    positives = jnp.diagonal(logits)  # [B]
    nll = jax.nn.logsumexp(logits, axis=-1) - positives  # [B]
    correct = (jnp.argmax(logits, axis=-1) == jnp.arange(n)).astype(logits.dtype)  # [B]
    return _masked_mean(nll, mask), _masked_mean(correct, mask)


def info_nce_loss_and_accuracy(
    molecule_embedding: Array,
    spectrum_embedding: Array,
    *,
    temperature: float = 0.07,
    symmetric: bool = False,
    mask: Array | None = None,
) -> tuple[Array, Array]:
    """InfoNCE between molecules and their spectra, plus top-1 retrieval accuracy.

    `logits_ij = cos(molecule_i, spectrum_j) / temperature`; molecule i's positive is
    spectrum i and the other spectra of the batch are its negatives (MolSpectra, Eq. 6,
    molecule -> spectrum direction as the official `ctr_loss_fn`). `symmetric=True`
    averages that with the spectrum -> molecule direction (CLIP-style). Under sharding,
    pass the global batch: the negatives then span all devices.

    Args:
      molecule_embedding: `[B, D]` 3D-encoder embedding (sum-pooled atom scalars).
      spectrum_embedding: `[B, D]` SpecFormer embedding.
      temperature: softmax temperature (paper: 0.07).
      symmetric: average both directions instead of molecule -> spectrum only.
      mask: optional `[B]` bool, True for real molecules; padded rows are excluded
        both as anchors and as negatives.

    Returns:
      `(loss, accuracy)`: scalar mean cross-entropy over real anchors, and the fraction
      of real anchors whose most similar real candidate is their own partner (averaged
      over both directions if symmetric). Both are 0 if all rows are masked.
    """
    _check_same_shape(
        molecule_embedding, spectrum_embedding, "molecule_embedding", "spectrum_embedding"
    )
    if molecule_embedding.ndim != 2:
        raise ValueError(f"embeddings must have shape [B, D], got {molecule_embedding.shape}.")
    _check_mask(mask, molecule_embedding.shape[:1], "mask", "molecule_embedding")
    logits = _cosine_logits(molecule_embedding, spectrum_embedding, temperature)  # [B, B]
    loss, accuracy = _info_nce_direction(logits, mask)
    if symmetric:
        loss_t, accuracy_t = _info_nce_direction(logits.T, mask)
        loss, accuracy = 0.5 * (loss + loss_t), 0.5 * (accuracy + accuracy_t)
    return loss, accuracy


def info_nce_loss(
    molecule_embedding: Array,
    spectrum_embedding: Array,
    *,
    temperature: float = 0.07,
    symmetric: bool = False,
    mask: Array | None = None,
) -> Array:
    """Scalar InfoNCE loss; see `info_nce_loss_and_accuracy` for arguments."""
    return info_nce_loss_and_accuracy(
        molecule_embedding,
        spectrum_embedding,
        temperature=temperature,
        symmetric=symmetric,
        mask=mask,
    )[0]


def property_loss(
    predictions: Array,
    targets: Array,
    *,
    mask: Array | None = None,
    kind: Literal["mse", "l1"] = "mse",
) -> Array:
    """Per-molecule property regression loss (fine-tuning, e.g. QM9 targets).

    torchmd-net fine-tunes with `mse_loss` (and reports `l1_loss`, the MAE); both are
    means over all real elements. Targets are usually standardised by the caller.

    Args:
      predictions: `[G, T]` (or `[G]`) predicted properties, in target units.
      targets: same shape as `predictions`.
      mask: optional `[G]` bool, True for real molecules (padding graphs ignored).
      kind: `"mse"` (mean squared error) or `"l1"` (mean absolute error).

    Returns:
      Scalar loss; 0 if every molecule is masked.
    """
    _check_same_shape(predictions, targets, "predictions", "targets")
    if predictions.ndim < 1:
        raise ValueError(f"predictions must have a leading batch axis, got {predictions.shape}.")
    _check_mask(mask, predictions.shape[:1], "mask", "predictions")
    return _masked_mean(_elementwise_error(predictions, targets, kind), mask)


def force_loss(
    forces_pred: Array,
    forces: Array,
    *,
    mask: Array | None = None,
    kind: Literal["mse", "l1"] = "mse",
) -> Array:
    """Force loss, mean over real atoms and xyz (torchmd-net `loss_fn(deriv, dy)`).

    Args:
      forces_pred: `[N, 3]` predicted forces (-dE/dpos), e.g. kcal/mol/Å.
      forces: `[N, 3]` reference forces, same units.
      mask: optional `[N]` bool, True for real atoms.
      kind: `"mse"` or `"l1"`.
    """
    _check_same_shape(forces_pred, forces, "forces_pred", "forces")
    if forces_pred.ndim != 2 or forces_pred.shape[-1] != 3:
        raise ValueError(f"forces_pred must have shape [N, 3], got {forces_pred.shape}.")
    _check_mask(mask, forces_pred.shape[:1], "mask", "forces_pred")
    return _masked_mean(_elementwise_error(forces_pred, forces, kind), mask)


def energy_force_loss_and_terms(
    energy_pred: Array,
    energy: Array,
    forces_pred: Array,
    forces: Array,
    *,
    graph_mask: Array | None = None,
    atom_mask: Array | None = None,
    energy_weight: float = 0.2,
    force_weight: float = 0.8,
    kind: Literal["mse", "l1"] = "mse",
) -> tuple[Array, dict[str, Array]]:
    """`energy_weight * L(E) + force_weight * L(F)` (MD17 setting: 0.2 / 0.8) and its terms.

    Args:
      energy_pred: `[G]` (or `[G, 1]`) predicted energies, e.g. kcal/mol.
      energy: same shape, reference energies.
      forces_pred: `[N, 3]` predicted forces, e.g. kcal/mol/Å.
      forces: `[N, 3]` reference forces.
      graph_mask: optional `[G]` bool, True for real molecules.
      atom_mask: optional `[N]` bool, True for real atoms.
      energy_weight, force_weight: loss weights (paper MD17: 0.2 and 0.8).
      kind: `"mse"` or `"l1"`, used for both terms.

    Returns:
      (scalar weighted loss, {"energy_loss": L(E), "force_loss": L(F)}); each term is 0
      when all of its entries are masked.
    """
    terms = {
        "energy_loss": property_loss(energy_pred, energy, mask=graph_mask, kind=kind),
        "force_loss": force_loss(forces_pred, forces, mask=atom_mask, kind=kind),
    }
    return energy_weight * terms["energy_loss"] + force_weight * terms["force_loss"], terms


def energy_force_loss(*args, **kwargs) -> Array:
    """Scalar weighted loss; see `energy_force_loss_and_terms` for arguments."""
    return energy_force_loss_and_terms(*args, **kwargs)[0]
