"""Did the noise pull a pair inside the cutoff that the host's candidate edges left out?

The host finds candidate edges at the clean positions, within `radius` = cutoff + skin
(`batching.candidate_radius`); the step adds noise on the device. A pair is *missed*
when its noisy distance is below the cutoff but its clean distance is not below the
radius. Its distance shrank by more than the skin, so one of its atoms moved by more
than skin / 2. The check therefore looks only at the `atoms` atoms per shard that moved
farthest, against every atom of their molecule: [atoms, N] distances, not [N, N]. The
count is exact whenever no other atom moved by more than skin / 2 (`unchecked_atoms` 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from molspectra_jax.graph import Graph


class CandidateCheck(NamedTuple):
    """What the step checks: the encoder's cutoff and the candidate radius (Å)."""

    cutoff: float
    radius: float
    atoms: int = 32


def missed_pairs(graph: Graph, noise: jax.Array, check: CandidateCheck) -> dict[str, jax.Array]:
    """{"missed_pairs": pairs (unordered) the candidates lack, "unchecked_atoms": atoms
    beyond skin / 2 outside the checked ones (0: the count is exact)}, summed over shards.

    `graph` has the leading shard axis ([S, N] ...) and the clean positions; `noise`
    is [S, N, 3] Å, zero on padding atoms.
    """
    half_skin = 0.5 * (check.radius - check.cutoff)

    def one_shard(positions, index, mask, noise):
        n = positions.shape[0]
        k = min(check.atoms, n)
        moved = jnp.linalg.norm(noise, axis=-1) * mask  # [N] Å
        top, fast = jax.lax.top_k(moved, k)  # [k]
        noisy = positions + noise
        clean_d = jnp.linalg.norm(positions[fast][:, None] - positions[None], axis=-1)  # [k, N]
        noisy_d = jnp.linalg.norm(noisy[fast][:, None] - noisy[None], axis=-1)
        atoms = jnp.arange(n)
        pair = (index[fast][:, None] == index[None]) & mask[fast][:, None] & mask[None]
        pair = pair & (fast[:, None] != atoms[None]) & (top[:, None] > half_skin)
        missed = pair & (noisy_d < check.cutoff) & (clean_d >= check.radius)
        # Each unordered pair once: (fast atom, slower atom), or the lower index when
        # both are among the checked atoms.
        checked = jnp.zeros(n, bool).at[fast].set(top > half_skin)
        once = ~checked[None] | (atoms[None] > fast[:, None])
        unchecked = jnp.sum(moved > half_skin) - jnp.sum(top > half_skin)
        return jnp.sum(missed & once), unchecked

    missed, unchecked = jax.vmap(one_shard)(
        graph.positions, graph.graph_index, graph.atom_mask, noise
    )
    return {
        "missed_pairs": missed.sum().astype(jnp.float32),
        "unchecked_atoms": unchecked.sum().astype(jnp.float32),
    }


def candidate_check(model_config, iterator, noise_sigma: float) -> CandidateCheck | None:
    """The check a train step makes: None when nothing moves (`noise_sigma` 0) or the
    layout reads every pair of a molecule (dense: nothing to miss)."""
    if noise_sigma <= 0 or model_config.get("layout", "sparse") != "sparse":
        return None
    return CandidateCheck(float(model_config.cutoff), float(iterator.edges.radius))
