"""`molspectra_jax.diagnostics`: the pure parts on real spectra and known cases; the
stage-2 parts run in tests/test_retrieval.py's benchmark test."""

import numpy as np

from molspectra_jax import diagnostics, losses
from molspectra_jax.models.specformer import normalize_spectrum, patchify, random_patch_mask
from molspectra_jax.spectra import SPECTRA
from molspectra_jax.spectroscopy import embedded


def test_own_ranks_count_the_candidates_that_beat_the_right_one():
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.7], [0.3, 0.2, 0.1]])
    np.testing.assert_array_equal(diagnostics.own_ranks(scores), [0, 2, 2])


def test_neighbour_patches_rebuild_patches_their_neighbours_cover():
    ir = embedded.broaden_batch(embedded.load_embedded_spectra(), np.arange(4))["ir"]
    normalised = np.asarray(normalize_spectrum(ir))
    t = SPECTRA["ir"]
    patches = np.asarray(patchify(normalised, t.patch_length, t.stride))  # [4, 139, 50]
    mask = np.asarray(random_patch_mask(np.array([0, 7], np.uint32), 4, patches.shape[1], 0.1))
    rebuilt = diagnostics.neighbour_patches(normalised, mask, t.patch_length, t.stride)
    assert rebuilt.shape == patches.shape
    np.testing.assert_allclose(rebuilt[~mask], patches[~mask], atol=1e-6)  # visible: as is
    for b, p in zip(*np.nonzero(mask), strict=True):
        if 0 < p < mask.shape[1] - 1 and not mask[b, p - 1] and not mask[b, p + 1]:
            np.testing.assert_allclose(rebuilt[b, p], patches[b, p], atol=1e-6)  # covered
    loss = float(
        losses.multi_spectrum_reconstruction_loss({"ir": rebuilt}, {"ir": patches}, {"ir": mask})
    )
    zero = float(
        losses.multi_spectrum_reconstruction_loss(
            {"ir": 0 * patches}, {"ir": patches}, {"ir": mask}
        )
    )
    assert loss < 0.05 * zero


def test_cka_and_shift_measure_how_far_a_representation_moved():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert diagnostics.linear_cka(x, 3.0 * x @ rotation + 1.0) > 1 - 1e-9
    assert diagnostics.linear_cka(x, rng.normal(size=(200, 16))) < 0.2
    tree = {"a": x, "b": {"c": np.ones(3)}}
    assert diagnostics.encoder_shift(tree, tree) == 0.0
    moved = {"a": 1.1 * x, "b": {"c": 1.1 * np.ones(3)}}
    assert abs(diagnostics.encoder_shift(tree, moved) - 0.1) < 1e-9
