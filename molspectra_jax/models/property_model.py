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


class PropertyModel(nn.Module):
    """An encoder, a head per target and (optionally) a noise head for noisy nodes."""

    encoder: nn.Module
    heads: tuple[str, ...]
    noise_head: bool = False

    @nn.compact
    def __call__(self, graph: Graph) -> dict[str, jax.Array]:
        """One shard's graph -> {"raw": [G, T], "noise": [N, 3] (with `noise_head`)}."""
        x, vec = self.encoder(graph)
        g = graph.n_graphs
        columns = []
        for t, kind in enumerate(self.heads):
            out = build_head(kind, name=f"head_{t}_{kind}")(x, vec, graph)
            if kind not in MOLECULE_LEVEL:
                out = jax.ops.segment_sum(out, graph.graph_index, num_segments=g)  # [G, 1]
            assert out.shape == (g, 1), (kind, out.shape)
            columns.append(out)
        outputs = {"raw": jnp.concatenate(columns, axis=-1)}  # [G, T]
        if self.noise_head:
            outputs["noise"] = VectorHead(name="noise_head")(x, vec) * graph.atom_mask[:, None]
        return outputs
