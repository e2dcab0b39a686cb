"""The 3D side of pre-training: encoder + noise head + sum-pooled molecule embedding."""

from __future__ import annotations

import flax.linen as nn
import jax

from molspectra_jax.graph import Graph
from molspectra_jax.models.heads import VectorHead


def molecule_embedding(x: jax.Array, graph: Graph) -> jax.Array:
    """[G, F]: the sum over each molecule's atoms of the encoder's scalars `x` [N, F]
    (padding atoms pool into the padding graphs)."""
    return jax.ops.segment_sum(x, graph.graph_index, num_segments=graph.n_graphs)


class PretrainModel(nn.Module):
    """One shard's graph -> {"noise": [N, 3] predicted noise / sigma, "embedding": [G, F]}.

    The embedding is the sum over each molecule's atoms of the encoder's scalar features
    (MolSpectra contrasts it with SpecFormer's spectrum embedding). Parameter subtrees are
    named "encoder" and "noise_head", the names fine-tuning loads by.
    """

    encoder: nn.Module
    activation: str = "silu"  # the noise head's

    @nn.compact
    def __call__(self, graph: Graph) -> dict[str, jax.Array]:
        x, vec = self.encoder(graph)
        noise = VectorHead(self.activation, name="noise_head")(x, vec)
        noise = noise * graph.atom_mask[:, None]  # [N, 3]
        embedding = molecule_embedding(x, graph)
        assert noise.shape == graph.positions.shape and embedding.shape[0] == graph.n_graphs
        return {"noise": noise, "embedding": embedding}  # embedding [G, F]
