"""The 3D side of pre-training: encoder + noise head + sum-pooled molecule embedding."""

from __future__ import annotations

import flax.linen as nn
import jax

from molspectra_jax.models.encoder import EquivariantTransformer
from molspectra_jax.models.heads import VectorHead


class PretrainModel(nn.Module):
    """Shard arrays -> {"noise": [N, 3] predicted noise / sigma, "embedding": [G, F]}.

    The embedding is the sum over each molecule's atoms of the encoder's scalar features
    (MolSpectra contrasts it with SpecFormer's spectrum embedding). Parameter subtrees are
    named "encoder" and "noise_head", the names fine-tuning loads by.
    """

    encoder: EquivariantTransformer

    @nn.compact
    def __call__(self, atomic_numbers, positions, senders, receivers, edge_mask, atom_mask,
                 graph_index, n_graphs: int):  # fmt: skip
        x, vec = self.encoder(atomic_numbers, positions, senders, receivers, edge_mask, atom_mask)
        noise = VectorHead(name="noise_head")(x, vec) * atom_mask[:, None]  # [N, 3]
        embedding = jax.ops.segment_sum(x, graph_index, num_segments=n_graphs)  # [G, F]
        return {"noise": noise, "embedding": embedding}
