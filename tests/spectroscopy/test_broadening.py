"""Sticks -> QM9S grids: peak areas, widths, scale factors, ragged and grouped batching."""

import dataclasses

import numpy as np
import pytest

from molspectra_jax.spectra import Peaks, spectrum
from molspectra_jax.spectroscopy import broadening as b

ONE_STICK = np.array([0, 1])  # offsets of one molecule with one stick


def with_scale(t, scale):
    return dataclasses.replace(t, sticks=dataclasses.replace(t.sticks, scale=scale))


@pytest.mark.parametrize("shape,fwhm", [("lorentzian", 12.0), ("gaussian", 30.0)])
def test_each_peak_area_equals_its_stick(shape, fwhm):
    grid = np.arange(-20000.0, 20000.0, 0.5)  # wide, so the Lorentzian tails are inside
    for center, weight in [(0.0, 1.0), (123.25, 37.5), (-900.0, 0.01)]:
        spectrum = b.broaden(grid, np.array([center]), np.array([weight]), fwhm, shape)
        area = spectrum.sum() * 0.5
        assert area == pytest.approx(weight, rel=2e-3)
        assert grid[np.argmax(spectrum)] == pytest.approx(center, abs=0.5)


@pytest.mark.parametrize("shape", ["lorentzian", "gaussian"])
def test_fwhm_is_the_full_width_at_half_maximum(shape):
    grid = np.linspace(-50, 50, 100001)
    spectrum = b.broaden(grid, np.array([0.0]), np.array([1.0]), 12.0, shape)
    above = grid[spectrum >= spectrum.max() / 2]
    assert above[-1] - above[0] == pytest.approx(12.0, abs=2e-3)


def test_default_grids_keep_the_area_of_inner_sticks():
    ir_type, uv_type = with_scale(spectrum("ir"), 1.0), spectrum("uv")
    ir = b.broaden_spectrum(ir_type, np.array([1500.0]), np.array([80.0]), ONE_STICK)
    uv = b.broaden_spectrum(uv_type, np.array([7.0]), np.array([0.3]), ONE_STICK)
    assert ir.shape == (1, 3501) and uv.shape == (1, 701) and ir.dtype == np.float32
    assert ir.sum() * ir_type.grid.step == pytest.approx(80.0, rel=5e-3)  # Lorentz tails
    assert uv.sum() * uv_type.grid.step == pytest.approx(0.3, rel=1e-4)


def test_frequency_scale_moves_the_peak():
    ir_type = with_scale(spectrum("ir"), 0.965)
    ir = b.broaden_spectrum(ir_type, np.array([2000.0]), np.array([1.0]), ONE_STICK)
    assert ir_type.grid.points()[np.argmax(ir[0])] == 1930.0


def test_grouped_spectra_equal_one_type_at_a_time():
    rng = np.random.default_rng(1)
    modes, states = np.array([0, 4, 4, 9]), np.array([0, 2, 5, 6])
    fields = {
        "frequencies": rng.uniform(600, 3900, 9),
        "ir_intensities": rng.uniform(0, 100, 9),
        "raman_activities": rng.uniform(0, 100, 9),
        "excitation_energies": rng.uniform(3, 12, 6),
        "oscillator_strengths": rng.uniform(0, 1, 6),
    }
    offsets = {"frequencies": modes, "excitation_energies": states}
    dense = b.broaden_spectra(fields, offsets)
    assert list(dense) == ["uv", "ir", "raman"]
    for name, spectra in dense.items():
        t = spectrum(name)
        centers, weights = t.sticks.centers, t.sticks.weights
        alone = b.broaden_spectrum(t, fields[centers], fields[weights], offsets[centers])
        np.testing.assert_array_equal(spectra, alone)
    wide_ir = dataclasses.replace(spectrum("ir"), peaks=Peaks("lorentzian", 24.0))
    wide = {"ir": wide_ir, "raman": spectrum("raman")}
    both = b.broaden_spectra(fields, offsets, wide)  # different widths: no shared profiles
    np.testing.assert_array_equal(both["raman"], dense["raman"])
    assert both["ir"].max() < dense["ir"].max()


def test_ragged_batch_matches_one_by_one_and_empty_rows_are_zero():
    rng = np.random.default_rng(0)
    counts = [3, 0, 5, 1]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    centers = rng.uniform(600, 3900, offsets[-1])
    weights = rng.uniform(0, 10, offsets[-1])
    grid = spectrum("ir").grid.points()
    batch = b.broaden_ragged(grid, centers, weights, offsets, 12.0, "lorentzian", chunk=3)
    for m in range(len(counts)):
        lo, hi = offsets[m], offsets[m + 1]
        one = b.broaden(grid, centers[lo:hi], weights[lo:hi], 12.0, "lorentzian")
        # float32 profiles: centres near 4000 cm^-1 are rounded by ~1e-4 cm^-1
        np.testing.assert_allclose(batch[m], one, rtol=1e-4, atol=1e-7)
    assert not batch[1].any()
    two = b.broaden_ragged(
        grid, centers, np.stack([weights, 2 * weights]), offsets, 12.0, "lorentzian"
    )
    assert two.shape == (2, 4, 3501)
    np.testing.assert_allclose(two[0], batch, rtol=1e-6)
    np.testing.assert_allclose(two[1], 2 * batch, rtol=1e-6)


def test_unknown_shape_and_mismatched_sticks_raise():
    with pytest.raises(ValueError, match="unknown peak shape"):
        b.broaden(spectrum("uv").grid.points(), np.zeros(1), np.ones(1), 0.5, "voigt")
    with pytest.raises(ValueError, match="must be equal"):
        b.broaden(spectrum("uv").grid.points(), np.zeros(2), np.ones(3), 0.5, "gaussian")
