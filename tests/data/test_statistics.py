"""Per-element reference energies (least squares) and target mean/std on real QM9 molecules."""

import dataclasses

import numpy as np
import pytest

from molspectra_jax.data.qm9 import HARTREE_TO_MEV
from molspectra_jax.data.statistics import (
    composition_matrix,
    fit_atomref,
    target_offsets,
    target_statistics,
)

MAX_Z = 10
# Roughly B3LYP free-atom energies (Ha) of H C N O F: the size of QM9's atomrefs.
ATOM_ENERGY = {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730}


def with_targets(dataset, **columns):
    names = tuple(columns)
    return dataclasses.replace(
        dataset, targets=np.stack([columns[n] for n in names], axis=1), target_names=names
    )


def additive(dataset):
    """[M] sum over atoms of ATOM_ENERGY, in meV, computed atom by atom."""
    return (
        np.array(
            [sum(ATOM_ENERGY[int(z)] for z in dataset.molecule(m)[0]) for m in range(len(dataset))]
        )
        * HARTREE_TO_MEV
    )


def test_composition_matrix(qm9_sample):
    counts = composition_matrix(qm9_sample, MAX_Z)
    assert counts.shape == (len(qm9_sample), MAX_Z)
    np.testing.assert_array_equal(counts.sum(1), qm9_sample.n_atoms)
    for m in (0, 57, 199):
        z, _ = qm9_sample.molecule(m)
        np.testing.assert_array_equal(counts[m], np.bincount(z, minlength=MAX_Z))


def test_atomref_reproduces_an_additive_target(qm9_sample):
    y = additive(qm9_sample)  # ~ -1e7 meV per molecule
    dataset = with_targets(qm9_sample, u0=y)
    atomref = fit_atomref(dataset, ["u0"], [True], MAX_Z)
    assert atomref.shape == (MAX_Z, 1)
    present = sorted(set(np.unique(qm9_sample.atomic_numbers).tolist()))
    for z in range(MAX_Z):
        want = ATOM_ENERGY[z] * HARTREE_TO_MEV if z in present else 0.0
        assert atomref[z, 0] == pytest.approx(want, rel=1e-9, abs=1e-6), z
    residual = y - composition_matrix(dataset, MAX_Z) @ atomref[:, 0]
    assert np.abs(residual).max() < 1e-4  # meV, on values of ~1e7 meV


def test_statistics_of_residuals(qm9_sample):
    rng = np.random.default_rng(0)
    noise = rng.normal(loc=25.0, scale=40.0, size=len(qm9_sample))
    gap = rng.normal(loc=6800.0, scale=1300.0, size=len(qm9_sample))
    dataset = with_targets(qm9_sample, gap=gap, u0=additive(qm9_sample) + noise)
    atomref = fit_atomref(dataset, ["gap", "u0"], [False, True], MAX_Z)
    assert np.all(atomref[:, 0] == 0)  # not fitted where not asked for

    mean, std = target_statistics(dataset, ["gap", "u0"], atomref)
    np.testing.assert_allclose(mean[0], gap.mean(), rtol=1e-12)
    np.testing.assert_allclose(std[0], gap.std(), rtol=1e-12)
    # Reference residual of u0: the noise minus its own least-squares projection onto
    # the composition (the additive part is fitted exactly).
    counts = np.stack(
        [np.bincount(dataset.molecule(m)[0], minlength=MAX_Z) for m in range(len(dataset))]
    )
    counts = counts[:, counts.sum(0) > 0].astype(np.float64)
    coef = np.linalg.solve(counts.T @ counts, counts.T @ noise)
    residual = noise - counts @ coef
    np.testing.assert_allclose(mean[1], residual.mean(), atol=1e-5)
    np.testing.assert_allclose(std[1], residual.std(), rtol=1e-6)
    assert 30.0 < std[1] < 45.0  # the noise, not the ~1e6 meV spread of raw energies


def test_constant_target_gets_unit_std(qm9_sample):
    dataset = with_targets(qm9_sample, mu=np.full(len(qm9_sample), 2.5))
    mean, std = target_statistics(dataset, ["mu"], np.zeros((MAX_Z, 1)))
    assert mean[0] == 2.5 and std[0] == 1.0  # standardising never divides by zero


def test_real_qm9_u0_atomref_removes_most_variance(qm9_sample):
    u0 = qm9_sample.target("u0")
    atomref = fit_atomref(qm9_sample, ["u0"], [True], MAX_Z)
    mean, std = target_statistics(qm9_sample, ["u0"], atomref)
    assert std[0] < 0.01 * u0.std()
    # Fitted per-atom energies sit a little below the free atoms' (bonding lowers them).
    for z in (1, 6):
        below = ATOM_ENERGY[z] - atomref[z, 0] / HARTREE_TO_MEV
        assert 0.0 < below < 0.3, (z, below)


def test_offsets_leave_float32_residuals_of_order_std(qm9_sample):
    """Host offsets: the device sees U0 - (mean + atomref sum), not U0 itself."""
    data = qm9_sample.select_targets(["u0", "mu"])
    atomref = fit_atomref(data, ["u0", "mu"], [True, False], MAX_Z)
    mean, std = target_statistics(data, ["u0", "mu"], atomref)
    offsets = target_offsets(data, mean, atomref, [False, True])  # mu: a norm head
    residual = data.targets - offsets
    np.testing.assert_allclose(offsets[:, 1], 0.0)
    assert np.abs(residual[:, 0].mean()) < 1e-6 * np.abs(data.targets[:, 0]).mean()
    assert np.abs(residual[:, 0]).max() < 10 * std[0]
    # float32 rounding: ~1 meV on absolute U0 (~ -1e7 meV), far below that on residuals.
    absolute_error = np.abs(data.targets[:, 0].astype(np.float32) - data.targets[:, 0]).max()
    residual_error = np.abs(residual[:, 0].astype(np.float32) - residual[:, 0]).max()
    assert absolute_error > 0.1 and residual_error < 1e-3
