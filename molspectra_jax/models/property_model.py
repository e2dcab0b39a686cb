"""Encoder + one head per target: molecule-level predictions in standardized units.

The model returns `raw [G, T]`, the prediction of each target's residual (target minus
its train-split mean and atomref sum, which are subtracted on the host in float64)
divided by the train-split std. Multiplying by the std is the caller's, so statistics
are data, not parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from molspectra_jax.graph import Graph
from molspectra_jax.models.heads import MOLECULE_LEVEL, VectorHead, build_head
from molspectra_jax.models.pretrain_model import molecule_embedding

REDUCE_OPS = ("sum", "mean", "torchmdnet_mean")


class PropertyModel(nn.Module):
    """An encoder, a head per target and (optionally) a noise head for noisy nodes.

    `activation` is the heads' (TorchMD-Net: the model's `activation`); `reduce_op`
    pools per-atom contributions over a molecule: "sum", "mean", or "torchmdnet_mean",
    sum / (atoms + 1), which is what torchmd-net 3.x's "mean" computes (its
    `scatter_reduce` includes the zero it starts from). `embedding` adds the molecule
    embedding of pre-training (`PretrainModel`'s: sum-pooled encoder scalars), the
    contrastive partner when fine-tuning with spectra as auxiliary losses.
    """

    encoder: nn.Module
    heads: tuple[str, ...]
    noise_head: bool = False
    embedding: bool = False
    activation: str = "silu"
    reduce_op: str = "sum"

    @nn.compact
    def __call__(self, graph: Graph) -> dict[str, jax.Array]:
        """One shard's graph -> {"raw": [G, T], "noise": [N, 3] (with `noise_head`),
        "embedding": [G, F] (with `embedding`)}."""
        if self.reduce_op not in REDUCE_OPS:
            raise ValueError(f"unknown reduce_op {self.reduce_op!r}; choose from {REDUCE_OPS}")
        x, vec = self.encoder(graph)
        g = graph.n_graphs
        columns = []
        for t, kind in enumerate(self.heads):
            head = build_head(kind, activation=self.activation, name=f"head_{t}_{kind}")
            out = head(x, vec, graph)
            if kind not in MOLECULE_LEVEL:
                out = jax.ops.segment_sum(out, graph.graph_index, num_segments=g)  # [G, 1]
                if self.reduce_op != "sum":
                    mask = graph.atom_mask.astype(out.dtype)
                    count = jax.ops.segment_sum(mask, graph.graph_index, num_segments=g)
                    count = count + 1 if self.reduce_op == "torchmdnet_mean" else count
                    out = out / jnp.maximum(count, 1)[:, None]
            assert out.shape == (g, 1), (kind, out.shape)
            columns.append(out)
        outputs = {"raw": jnp.concatenate(columns, axis=-1)}  # [G, T]
        if self.noise_head:
            noise = VectorHead(self.activation, name="noise_head")(x, vec)
            outputs["noise"] = noise * graph.atom_mask[:, None]
        if self.embedding:
            outputs["embedding"] = molecule_embedding(x, graph)
        return outputs
