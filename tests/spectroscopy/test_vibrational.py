"""GFN2-xTB harmonic analysis, IR intensities and Raman activities."""

import numpy as np
import pytest
from ase.data import atomic_masses

from molspectra_jax.spectroscopy import vibrational as vib

SETTINGS = vib.VibrationalSettings()
SMALL = {"O": 3, "C": 5, "C=O": 4, "c1ccccc1": 12}  # SMILES -> atoms


@pytest.fixture(scope="module")
def spectra(molecule):
    return {s: vib.vibrational_spectrum(*molecule(s)) for s in [*SMALL, "O=C=O"]}


@pytest.mark.parametrize("smiles", list(SMALL))
def test_mode_count_and_no_imaginary_modes(spectra, smiles):
    result = spectra[smiles]
    assert len(result.frequencies) == 3 * SMALL[smiles] - 6
    assert result.n_imaginary == 0
    assert result.frequencies.min() > 0
    assert np.all(result.ir_intensities >= 0) and np.all(result.raman_activities >= 0)


def test_linear_molecule_has_3n_minus_5_modes(spectra):
    assert len(spectra["O=C=O"].frequencies) == 4


@pytest.mark.parametrize("smiles", ["O", "C=O"])
def test_hessian_symmetric_and_rigid_body_modes_vanish(spectra, smiles):
    result = spectra[smiles]
    x = result.positions / vib.BOHR_TO_ANGSTROM
    hessian, _ = vib.hessian_and_dipole_derivatives(result.atomic_numbers, x, SETTINGS)
    assert np.abs(hessian - hessian.T).max() < 1e-4 * np.abs(hessian).max()
    masses = atomic_masses[result.atomic_numbers]
    inv_sqrt_m = np.repeat(masses**-0.5, 3)
    rigid = vib.rigid_body_basis(x, masses)  # [3N, 6]
    block = rigid.T @ (hessian * np.outer(inv_sqrt_m, inv_sqrt_m)) @ rigid
    rigid_freqs = np.sqrt(np.abs(np.linalg.eigvalsh(0.5 * (block + block.T))))
    assert rigid.shape[1] == 6
    assert rigid_freqs.max() * vib.AU_TO_WAVENUMBER < 15.0  # cm^-1, vs > 1000 for vibrations


def test_methane_symmetric_stretch_ir_inactive_raman_active(spectra):
    result = spectra["C"]
    stretches = np.flatnonzero(result.frequencies > 2500)
    assert len(stretches) == 4
    symmetric = stretches[np.argmin(result.ir_intensities[stretches])]
    others = np.delete(stretches, np.flatnonzero(stretches == symmetric))
    assert result.ir_intensities[symmetric] < 1e-3  # km/mol
    assert result.ir_intensities[others].min() > 1.0
    assert result.raman_activities[symmetric] > 10.0  # Å^4/amu
    # The symmetric stretch is non-degenerate, the other three are a T2 triplet.
    assert np.ptp(result.frequencies[others]) < 2.0
    assert abs(result.frequencies[symmetric] - result.frequencies[others][0]) > 5.0


def test_co2_symmetric_stretch_ir_inactive_raman_active(spectra):
    result = spectra["O=C=O"]
    bend_bend, sym, asym = result.frequencies[:2], result.frequencies[2], result.frequencies[3]
    assert np.ptp(bend_bend) < 1.0 and sym < asym
    assert result.ir_intensities[2] < 1e-3 and result.raman_activities[2] > 5.0
    assert result.ir_intensities[3] > 100.0 and result.raman_activities[3] < 1e-3


def test_benzene_mutual_exclusion(spectra):
    """Centrosymmetric: no mode is both IR- and Raman-active."""
    result = spectra["c1ccccc1"]
    ir_active = result.ir_intensities > 1e-2
    raman_active = result.raman_activities > 1e-2
    assert ir_active.any() and raman_active.any()
    assert not np.any(ir_active & raman_active)


def test_field_convention_gives_dipole(molecule):
    """E(F) = E0 - mu.F: the finite-field energy slope is minus the SCF dipole."""
    z, pos = molecule("C=O")
    x = pos / vib.BOHR_TO_ANGSTROM
    dipole = vib.make_calculator(z, x, SETTINGS).singlepoint().get("dipole")
    f = 1e-4
    for i in range(3):
        field = np.eye(3)[i] * f
        e_plus = vib.make_calculator(z, x, SETTINGS, field).singlepoint().get("energy")
        e_minus = vib.make_calculator(z, x, SETTINGS, -field).singlepoint().get("energy")
        assert -(e_plus - e_minus) / (2 * f) == pytest.approx(dipole[i], abs=1e-5)


def test_finite_field_polarizability_derivatives_match_displaced_alpha(spectra):
    """d(alpha)/dR from field derivatives of gradients == displacing atoms, differencing alpha."""
    result = spectra["O"]
    z, x = result.atomic_numbers, result.positions / vib.BOHR_TO_ANGSTROM
    from_field = vib.polarizability_derivatives(z, x, SETTINGS)  # [9, 3, 3]
    h = 0.01  # bohr
    for k in (0, 2, 4, 7):  # a few Cartesian coordinates of O and both H
        plus, minus = x.ravel().copy(), x.ravel().copy()
        plus[k] += h
        minus[k] -= h
        alpha_p = vib.polarizability(z, plus.reshape(-1, 3), SETTINGS)
        alpha_m = vib.polarizability(z, minus.reshape(-1, 3), SETTINGS)
        from_displacement = (alpha_p - alpha_m) / (2 * h)
        np.testing.assert_allclose(from_field[k], from_displacement, atol=2e-2)
    assert np.abs(from_field).max() > 0.5  # bohr^2: the comparison is not trivially 0 == 0


def test_unit_conversions():
    # Textbook values: 5140.487 cm^-1 per sqrt(Eh / (a0^2 amu)); 974.88 km/mol per e^2/amu.
    assert vib.AU_TO_WAVENUMBER == pytest.approx(5140.487, rel=1e-6)
    assert vib.IR_AU_TO_KM_MOL == pytest.approx(974.88, rel=1e-4)


def eclipsed_ethane() -> tuple[np.ndarray, np.ndarray]:
    """Ethane in the eclipsed (torsional saddle point) conformation, Å."""
    cc, ch, angle = 1.53, 1.09, np.deg2rad(111.0)
    positions = [[0.0, 0.0, -cc / 2], [0.0, 0.0, cc / 2]]
    for sign in (-1, 1):
        for k in range(3):
            phi = 2 * np.pi * k / 3
            radius, height = ch * np.sin(angle), sign * (cc / 2 - ch * np.cos(angle))
            positions.append([radius * np.cos(phi), radius * np.sin(phi), height])
    return np.array([6, 6, 1, 1, 1, 1, 1, 1]), np.array(positions)


def test_saddle_point_is_recorded_then_escaped():
    z, pos = eclipsed_ethane()  # symmetric: the gradient never breaks the symmetry itself
    stuck = vib.vibrational_spectrum(z, pos, vib.VibrationalSettings(max_restarts=0))
    assert stuck.n_imaginary == 1 and stuck.frequencies[0] < -100  # the torsion
    relaxed = vib.vibrational_spectrum(z, pos)
    assert relaxed.n_imaginary == 0 and relaxed.frequencies[0] > 100
    assert relaxed.energy < stuck.energy
