"""Why pre-training on spectra does or does not help: diagnostics of a stage-2 run.

- `contrastive_top1`: does the contrast generalise? Top-1 spectrum -> structure
  retrieval among N molecules, on molecules it trained on against held-out ones (a gap
  means stage 2 memorises its few thousand molecules).
- `mpr_losses`: is masked patch reconstruction a task at all? SpecFormer's loss against
  a model-free baseline that rebuilds each masked patch from the visible patches around
  it (with patches overlapping by half, a masked patch is mostly visible in its
  neighbours).
- `encoder_shift` and `linear_cka`: how far stage 2 moves the encoder from stage 1, in
  parameters and in the representation it gives.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from molspectra_jax import losses
from molspectra_jax.models.specformer import normalize_spectrum, patchify


def own_ranks(scores: np.ndarray) -> np.ndarray:
    """[N] 0-based rank of each query's own candidate (the diagonal of `scores` [N, N]):
    how many candidates score higher than the right one."""
    scores = np.asarray(scores)
    return (scores > np.diag(scores)[:, None]).sum(axis=1)


def contrastive_top1(model, dataset) -> float:
    """Top-1 accuracy of finding each molecule of `dataset` (with spectra) among all of
    them from its spectra, with a stage-2 `retrieval.SpectraModel`."""
    queries = model.embed_spectra({k: np.asarray(dataset.spectra[k]) for k in model.spectra})
    keys, _ = model.embed_molecules(dataset)
    return float(np.mean(own_ranks(queries @ keys.T) == 0))


def neighbour_patches(normalised: np.ndarray, patch_mask: np.ndarray, patch_len: int, stride: int):
    """[B, P, patch_len]: the model-free MPR baseline. Each grid point of a masked patch
    takes its value from a visible patch that covers it, and points no visible patch
    covers are interpolated linearly between the nearest visible points.

    Args:
      normalised: [B, L] spectra as SpecFormer reads them (after `normalize_spectrum`).
      patch_mask: [B, P] bool, True = masked.
    """
    b, length = normalised.shape
    p = patch_mask.shape[1]
    covers = np.zeros((p, length), bool)  # [P, L] patch p covers point j
    for i in range(p):
        covers[i, i * stride : i * stride + patch_len] = True
    visible = (~patch_mask).astype(np.int32) @ covers > 0  # [B, L]
    points = np.arange(length)
    rebuilt = np.zeros((b, length))
    for row in range(b):
        seen = visible[row]
        if seen.any():
            rebuilt[row] = np.interp(points, points[seen], normalised[row, seen])
    return np.asarray(patchify(rebuilt, patch_len, stride))


def mpr_losses(model, spectra: Mapping[str, np.ndarray], key) -> dict[str, float]:
    """{"model", "neighbour_baseline"}: the MPR loss (summed over modalities) of a
    stage-2 `retrieval.SpectraModel`'s SpecFormer and of `neighbour_patches` on the
    same masked patches of `spectra` ({modality: [B, L]}), drawn from `key`."""
    cfg = model.config.specformer
    arrays = {k: np.asarray(spectra[k], np.float32) for k in model.spectra}
    variables = {"params": model.params["specformer"], "batch_stats": model.batch_stats}
    specformer = model.specformer
    out = jax.jit(lambda v, s: specformer.apply(v, s, mask_key=key, train=False))(variables, arrays)
    baseline = {
        k: neighbour_patches(
            np.asarray(normalize_spectrum(arrays[k], cfg.input_norm)),
            np.asarray(out["patch_mask"][k]),
            cfg.patch_lengths[k],
            cfg.strides[k],
        )
        for k in model.spectra
    }
    loss = losses.multi_spectrum_reconstruction_loss
    return {
        "model": float(loss(out["reconstruction"], out["patches"], out["patch_mask"])),
        "neighbour_baseline": float(loss(baseline, out["patches"], out["patch_mask"])),
    }


def encoder_shift(before, after) -> float:
    """||after - before|| / ||before|| over all leaves of two parameter trees."""
    pairs = zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    diff = norm = 0.0
    for a, b in pairs:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        diff += float(np.sum((b - a) ** 2))
        norm += float(np.sum(a**2))
    return float(np.sqrt(diff / max(norm, 1e-30)))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations [N, F] and [N, F'] of the
    same N molecules (Kornblith et al. 2019): 1 = the same up to rotation and scale."""
    x = np.asarray(x, np.float64) - np.mean(x, axis=0)
    y = np.asarray(y, np.float64) - np.mean(y, axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def stage2_report(stage2: str, stage1: str = "", n: int = 200, seed: int = 0) -> dict:
    """The diagnostics of a stage-2 pre-training workdir, as a JSON-able dict:
    `top1_train` / `top1_valid` (among `n` molecules each), `mpr_model` /
    `mpr_neighbour_baseline` (validation molecules), and, with its stage-1 workdir,
    `encoder_shift` and `cka_stage1_stage2` (validation molecules' embeddings)."""
    from molspectra_jax import retrieval
    from molspectra_jax.inference import checkpoint_folder, embed_dataset, pooled_embedding
    from molspectra_jax.train.checkpoint import read_checkpoint_arrays
    from molspectra_jax.train.pretrain import load_splits

    model = retrieval.load(stage2)
    _, dataset, rows = load_splits(model.config)
    n = min(n, len(rows["train"]), len(rows["valid"]))
    train, valid = dataset.subset(rows["train"][:n]), dataset.subset(rows["valid"][:n])
    report = {"n": n, "spectra": list(model.spectra)}
    report["top1_train"] = contrastive_top1(model, train)
    report["top1_valid"] = contrastive_top1(model, valid)
    mpr = mpr_losses(model, valid.spectra, jax.random.PRNGKey(seed))
    report.update(mpr_model=mpr["model"], mpr_neighbour_baseline=mpr["neighbour_baseline"])
    if stage1:
        before = read_checkpoint_arrays(checkpoint_folder(stage1))[0]["params"]["encoder"]
        after = model.params["encoder"]
        report["encoder_shift"] = encoder_shift(before, after)
        embed = pooled_embedding(model.config.model)
        cutoff, width = model.config.model.cutoff, model.config.model.hidden
        x = embed_dataset(embed, before, valid, cutoff, model.batch_size, width)
        y = embed_dataset(embed, after, valid, cutoff, model.batch_size, width)
        report["cka_stage1_stage2"] = linear_cka(x, y)
    return report
