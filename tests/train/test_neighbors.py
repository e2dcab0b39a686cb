"""The skin that follows the noise, and the step's count of pairs it would have missed."""

import jax
import numpy as np
import pytest

from molspectra_jax.data.batching import (
    candidate_edges,
    candidate_radius,
    collate,
    make_budget,
)
from molspectra_jax.train.neighbors import CandidateCheck, missed_pairs

CUTOFF = 5.0


def brute_force_misses(batch, noise, radius) -> int:
    """Unordered same-molecule pairs within CUTOFF at the noisy positions, not within
    `radius` at the clean ones: every pair of every molecule, in float64."""
    g = batch.graph
    missed = 0
    for s in range(g.positions.shape[0]):
        real = np.flatnonzero(g.atom_mask[s])
        for a in real:
            for b in real:
                if a < b and g.graph_index[s, a] == g.graph_index[s, b]:
                    clean = np.linalg.norm(g.positions[s, a].astype(float) - g.positions[s, b])
                    noisy = np.linalg.norm(
                        (g.positions[s, a] + noise[s, a]).astype(float)
                        - (g.positions[s, b] + noise[s, b])
                    )
                    missed += bool(noisy < CUTOFF and clean >= radius)
    return missed


def _batch(dataset, radius, molecules=24, shards=2):
    edges = candidate_edges(dataset, radius)
    budget = make_budget(dataset, edges, molecules, shards)
    rows = np.arange(molecules).reshape(shards, -1)
    return collate(dataset, edges, list(rows), budget)


def test_candidate_radius_follows_the_noise():
    assert candidate_radius(CUTOFF, None, 0.04) == pytest.approx(CUTOFF + 5 * np.sqrt(2) * 0.04)
    assert candidate_radius(CUTOFF, None, 0.0) == CUTOFF  # nothing moves: no skin
    assert candidate_radius(CUTOFF, 1.0, 0.04) == CUTOFF + 1.0  # an explicit skin wins
    with pytest.raises(ValueError, match="skin"):
        candidate_radius(CUTOFF, -0.1, 0.04)


@pytest.mark.parametrize("skin, sigma", [(0.02, 0.04), (0.0, 0.1)])
def test_missed_pairs_counts_exactly_what_a_brute_force_count_finds(qm9_sample, skin, sigma):
    """A skin far too thin for the noise: pairs are missed, and counted exactly."""
    radius = CUTOFF + skin
    batch = _batch(qm9_sample, radius)
    rng = np.random.default_rng(0)
    noise = (
        rng.normal(scale=sigma, size=batch.graph.positions.shape) * batch.graph.atom_mask[..., None]
    ).astype(np.float32)
    # Every atom may be a fast one: the count is exact by construction here.
    check = CandidateCheck(CUTOFF, radius, atoms=batch.graph.positions.shape[1])
    out = jax.jit(missed_pairs, static_argnums=2)(
        jax.tree.map(np.asarray, batch.graph), noise, check
    )
    expected = brute_force_misses(batch, noise, radius)
    assert expected > 0
    assert int(out["missed_pairs"]) == expected
    assert int(out["unchecked_atoms"]) == 0
    # The default check looks at the 32 fastest atoms per shard: too few for this noise,
    # and it says so.
    out = missed_pairs(batch.graph, noise, CandidateCheck(CUTOFF, radius))
    assert int(out["missed_pairs"]) <= expected and int(out["unchecked_atoms"]) > 0


def test_the_noise_derived_skin_misses_nothing_under_the_noise_drawn(qm9_sample):
    """sigma 0.04 Å (denoising), the derived skin, 20 noise draws over 200 molecules."""
    radius = candidate_radius(CUTOFF, None, 0.04)
    batch = _batch(qm9_sample, radius, molecules=200, shards=4)
    check = CandidateCheck(CUTOFF, radius)
    count = jax.jit(missed_pairs, static_argnums=2)
    tight = CandidateCheck(CUTOFF, CUTOFF)
    tight_misses = 0
    for seed in range(20):
        noise = 0.04 * jax.random.normal(jax.random.PRNGKey(seed), batch.graph.positions.shape)
        noise = noise * batch.graph.atom_mask[..., None]
        out = count(batch.graph, noise, check)
        assert int(out["missed_pairs"]) == 0 and int(out["unchecked_atoms"]) == 0
        tight_misses += int(count(batch.graph, noise, tight)["missed_pairs"])
    assert tight_misses > 0  # without a skin pairs would be lost: the check can fail
