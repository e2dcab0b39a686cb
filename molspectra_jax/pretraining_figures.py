"""Figures of a stage-2 pre-training workdir (the paper's Figure A2), as PNG under
`figures/`, from its best (else latest) checkpoint and its held-out molecules (the
pre-training validation split, never trained on):

- `attention.png`: SpecFormer's attention maps of three heads of its last layer over
  the patches of one held-out molecule, UV-Vis | IR | Raman token blocks marked;
- `tsne.png`: a t-SNE (scikit-learn) of the held-out molecules' spectrum embeddings,
  coloured by their QM9 HOMO-LUMO gap.

`draw(workdir)` draws both; `python -m experiments.figures --workdir W` calls it for a
stage-2 workdir.
"""

from __future__ import annotations

import os

import numpy as np

from molspectra_jax.figures import FOLDER, save_png


def attention_maps(model, spectra: dict[str, np.ndarray], layer: int = -1) -> np.ndarray:
    """[H, T, T] SpecFormer attention weights of one molecule (`spectra`: {modality:
    [1, L]}, nothing masked) in `layer` (default the last)."""
    variables = {"params": model.params["specformer"], "batch_stats": model.batch_stats}
    arrays = {k: np.asarray(spectra[k], np.float32) for k in model.spectra}
    _, state = model.specformer.apply(variables, arrays, train=False, mutable=["intermediates"])
    layers = state["intermediates"]
    names = sorted(layers, key=lambda n: int(n.rsplit("_", 1)[1]))  # layer_0, layer_1, ...
    return np.asarray(layers[names[layer]]["attention"]["attention"][0][0])


def tsne(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, 2] t-SNE of [N, E] embeddings (cosine distances; perplexity <= (N - 1) / 3)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (len(embeddings) - 1) / 3))
    method = TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return method.fit_transform(np.asarray(embeddings, np.float64))


def draw_attention(maps: np.ndarray, blocks: dict[str, int], title: str, out: str) -> str:
    """Heads [H, T, T] side by side; `blocks` {modality: tokens} in token order."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.0 * len(maps), 4.0), layout="constrained")
    axes = figure.subplots(1, len(maps), squeeze=False)[0]
    edges = np.cumsum(list(blocks.values()))[:-1] - 0.5
    for head, (ax, weights) in enumerate(zip(axes, maps, strict=True)):
        # Square-root colours: attention is sparse, a few keys take most of each row.
        image = ax.imshow(weights, cmap="viridis", norm=PowerNorm(0.5), interpolation="nearest")
        for edge in edges:
            ax.axhline(edge, color="white", linewidth=0.6)
            ax.axvline(edge, color="white", linewidth=0.6)
        ax.set_title(f"head {head}")
        ax.set_xlabel("key patch (" + " | ".join(blocks) + ")")
        ax.set_ylabel("query patch")
        figure.colorbar(image, ax=ax, shrink=0.8)
    figure.suptitle(title)
    return save_png(figure, out)


def draw_tsne(points: np.ndarray, values: np.ndarray, label: str, out: str) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = figure.subplots()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=values, s=10, cmap="coolwarm")
    figure.colorbar(scatter, ax=ax, label=label)
    ax.set_title(f"spectrum embeddings, t-SNE (n = {len(points)})")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_png(figure, out)


def draw(workdir: str, heads: int = 3) -> list[str]:
    """Draw `attention.png` and `tsne.png` of a stage-2 workdir; the paths written."""
    from molspectra_jax import retrieval
    from molspectra_jax.data import sources
    from molspectra_jax.train.pretrain import load_splits

    model = retrieval.load(workdir)
    _, dataset, rows = load_splits(model.config)
    held_out = dataset.subset(rows["valid"])
    folder = os.path.join(workdir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    first = {k: np.asarray(held_out.spectra[k][:1]) for k in model.spectra}
    maps = attention_maps(model, first)[:heads]
    blocks = model.specformer.patch_counts()
    title = f"SpecFormer attention, last layer, held-out molecule {held_out.ids[0]}"
    written = [draw_attention(maps, blocks, title, os.path.join(folder, "attention.png"))]
    embeddings = model.embed_spectra({k: np.asarray(held_out.spectra[k]) for k in model.spectra})
    qm9 = sources.load("qm9", model.config.data).select_targets(("gap",))
    row_of = {int(i): r for r, i in enumerate(qm9.ids)}
    if all(int(i) in row_of for i in held_out.ids):  # QM9 molecules: colour by their gap
        values = qm9.targets[[row_of[int(i)] for i in held_out.ids], 0]
        label = f"gap ({sources.resolve('qm9')[0].units['gap']})"
    else:  # a store of other molecules
        values, label = held_out.n_atoms, "atoms"
    out = os.path.join(folder, "tsne.png")
    written.append(draw_tsne(tsne(embeddings), values, label, out))
    return written
