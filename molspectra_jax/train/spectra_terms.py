"""The spectra objectives as loss terms: masked patch reconstruction (MPR) and contrast.

Shared by pre-training stage 2 (next to denoising) and by fine-tuning with spectra as
auxiliary losses (the paper's Table 1 "w/ spectra" setting, next to the property loss).
SpecFormer runs on global [B, ...] arrays, so BatchNorm statistics and InfoNCE
negatives span the global batch.
"""

from __future__ import annotations

import jax

from molspectra_jax import losses
from molspectra_jax.models.specformer import SpecFormer, build_specformer

SPECFORMER = "specformer"  # its parameter subtree, next to the 3D model's


def contrast_specformer(config) -> SpecFormer:
    """SpecFormer of `config.specformer`, whose embedding the contrast pairs with the 3D
    encoder's (`config.model.hidden` wide)."""
    if config.specformer.embed_dim != config.model.hidden:
        raise ValueError(
            f"specformer.embed_dim {config.specformer.embed_dim} must equal "
            f"model.hidden {config.model.hidden} (contrast)"
        )
    return build_specformer(config.specformer)


def without_specformer(params: dict) -> dict:
    """The 3D model's parameters of a tree that may also hold SpecFormer's."""
    return {k: v for k, v in params.items() if k != SPECFORMER}


def spectra_terms(
    specformer: SpecFormer,
    params: dict,
    batch_stats,
    spectra: dict[str, jax.Array],
    molecule: jax.Array,
    graph_mask: jax.Array,
    key: jax.Array,
    *,
    temperature: float,
    symmetric: bool,
    train: bool,
):
    """({"mpr_loss", "contrast_loss", "contrast_accuracy"}, new batch_stats).

    Args:
      params: the whole tree; SpecFormer's are `params["specformer"]`.
      spectra: {modality: [B, L]} dense spectra of the B molecules.
      molecule: [B, F] the 3D encoder's molecule embeddings (contrast's partner).
      graph_mask: [B] real molecules.
      key: draws the patch masks.
      train: BatchNorm batch statistics (updated) or running ones (left alone).
    """
    variables = {"params": params[SPECFORMER], "batch_stats": batch_stats}
    if train:
        spec, updates = specformer.apply(
            variables, spectra, mask_key=key, train=True, mask=graph_mask, mutable=["batch_stats"]
        )
        batch_stats = updates.get("batch_stats", batch_stats)
    else:
        spec = specformer.apply(variables, spectra, mask_key=key, train=False, mask=graph_mask)
    mpr = losses.multi_spectrum_reconstruction_loss(
        spec["reconstruction"], spec["patches"], spec["patch_mask"], mask=graph_mask
    )
    contrast, accuracy = losses.info_nce_loss_and_accuracy(
        molecule, spec["embedding"], temperature=temperature, symmetric=symmetric, mask=graph_mask
    )
    terms = {"mpr_loss": mpr, "contrast_loss": contrast, "contrast_accuracy": accuracy}
    return terms, batch_stats


def global_spectra(batch, n_graphs: int) -> dict[str, jax.Array]:
    """{modality: [B, L]} of a sharded batch's spectra ([S, G, L] -> [S * G, L])."""
    return {k: v.reshape(n_graphs, -1) for k, v in batch.spectra.items()}
