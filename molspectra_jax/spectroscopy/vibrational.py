"""Vibrational IR and Raman sticks at the GFN2-xTB level (tblite).

Pipeline for one molecule (all tblite calls in atomic units):
  1. re-optimise the geometry (L-BFGS on the tblite gradient);
  2. Hessian by central differences of gradients; the same 6N displacements give the
     dipole derivatives d(mu)/dR;
  3. polarizability derivatives d(alpha)/dR from the second *electric-field*
     derivatives of the gradient, d(alpha_ij)/dR = -d^2 g / dF_i dF_j: 19 single points
     instead of the 6N x 19 a displaced-alpha route would need;
  4. mass-weighted Hessian with translations/rotations projected out -> 3N-6 (3N-5 for
     linear molecules) harmonic frequencies and normal modes; IR intensities (km/mol)
     and Raman activities (45 a'^2 + 7 g'^2, Å^4/amu) in those modes.

tblite's energy in a field F is E(F) = E0 - mu.F - F.alpha.F / 2 (checked in the tests).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.constants as sc
import scipy.optimize
from ase.data import atomic_masses
from tblite import library
from tblite.interface import Calculator

BOHR_TO_ANGSTROM = sc.physical_constants["Bohr radius"][0] * 1e10
# sqrt(Hartree / (bohr^2 amu)) in cm^-1: converts Hessian eigenvalues to wavenumbers.
AU_TO_WAVENUMBER = np.sqrt(
    sc.physical_constants["Hartree energy"][0]
    / (sc.physical_constants["Bohr radius"][0] ** 2 * sc.atomic_mass)
) / (2 * np.pi * sc.c * 100)
# |d(mu)/dQ|^2 in e^2/amu -> km/mol: N_A / (12 eps0 c^2) (Wilson, Decius & Cross).
IR_AU_TO_KM_MOL = sc.N_A / (12 * sc.epsilon_0 * sc.c**2) * sc.e**2 / sc.atomic_mass / 1000.0


@dataclasses.dataclass(frozen=True)
class VibrationalSettings:
    """Numerical settings of the GFN2-xTB vibrational pipeline (recorded with the data)."""

    method: str = "GFN2-xTB"
    accuracy: float = 0.01  # tblite SCC accuracy; finite differences need a tight SCC
    opt_gtol: float = 1e-5  # Hartree/bohr, max gradient component at convergence
    opt_max_steps: int = 1000
    hessian_step: float = 0.005  # bohr, central-difference displacement
    field_step: float = 0.002  # atomic units of field, finite-field polarizability
    imaginary_threshold: float = 10.0  # cm^-1; |imag| above this triggers a restart
    max_restarts: int = 2  # re-optimisations after displacing along an imaginary mode
    restart_displacement: float = 0.1  # bohr amu^1/2 along the imaginary mode


@dataclasses.dataclass(frozen=True)
class VibrationalResult:
    """IR and Raman sticks of one molecule.

    Attributes:
      atomic_numbers: [N] int.
      positions: [N, 3] float, GFN2-optimised geometry, Å.
      energy: GFN2 total energy at that geometry, Hartree.
      frequencies: [K] harmonic wavenumbers, cm^-1 (imaginary ones negative);
        K = 3N-6, or 3N-5 for linear molecules.
      ir_intensities: [K] km/mol.
      raman_activities: [K] Å^4/amu.
      n_imaginary: number of modes below -imaginary_threshold.
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    energy: float
    frequencies: np.ndarray
    ir_intensities: np.ndarray
    raman_activities: np.ndarray
    n_imaginary: int


def make_calculator(
    numbers: np.ndarray,
    positions_bohr: np.ndarray,
    settings: VibrationalSettings,
    field: np.ndarray | None = None,
) -> Calculator:
    """A silent tblite calculator, optionally in a uniform electric field (atomic units)."""
    calc = Calculator(settings.method, np.asarray(numbers), np.asarray(positions_bohr, float))
    calc.set("verbosity", 0)
    calc.set("accuracy", settings.accuracy)
    if field is not None:
        # tblite's cffi binding needs a C double[3]; a numpy array raises TypeError.
        calc.add("electric-field", library.ffi.new("double[3]", [float(f) for f in field]))
    return calc


def optimize_geometry(
    numbers: np.ndarray, positions_bohr: np.ndarray, settings: VibrationalSettings
) -> tuple[np.ndarray, float]:
    """Minimise the GFN2 energy. Returns (positions [N, 3] bohr, energy Hartree).

    Raises RuntimeError when L-BFGS does not reach `opt_gtol`.
    """
    calc = make_calculator(numbers, positions_bohr, settings)
    restart = calc.singlepoint()

    def energy_and_gradient(x):
        calc.update(x.reshape(-1, 3))
        calc.singlepoint(restart)
        return restart.get("energy"), restart.get("gradient").ravel()

    out = scipy.optimize.minimize(
        energy_and_gradient,
        np.asarray(positions_bohr, float).ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": settings.opt_gtol, "ftol": 1e-14, "maxiter": settings.opt_max_steps},
    )
    energy, grad = energy_and_gradient(out.x)
    if np.abs(grad).max() > 10 * settings.opt_gtol:
        raise RuntimeError(
            f"GFN2 optimisation did not converge: max gradient {np.abs(grad).max():.2e} "
            f"Hartree/bohr after {out.nit} steps ({out.message})"
        )
    return out.x.reshape(-1, 3), float(energy)


def hessian_and_dipole_derivatives(
    numbers: np.ndarray, positions_bohr: np.ndarray, settings: VibrationalSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Central finite differences of gradients and dipoles over 6N displacements.

    Returns:
      hessian: [3N, 3N] Hartree/bohr^2, not symmetrised (its asymmetry is a check).
      dipole_derivatives: [3N, 3] d(mu)/dR, e (= e bohr / bohr).
    """
    positions_bohr = np.asarray(positions_bohr, float)
    calc = make_calculator(numbers, positions_bohr, settings)
    reference = calc.singlepoint()
    n3 = positions_bohr.size
    hessian = np.zeros((n3, n3))
    dipole_derivatives = np.zeros((n3, 3))
    h = settings.hessian_step
    for k in range(n3):
        grads, dipoles = [], []
        for sign in (1.0, -1.0):
            x = positions_bohr.ravel().copy()
            x[k] += sign * h
            calc.update(x.reshape(-1, 3))
            res = calc.singlepoint(reference, copy=True)
            grads.append(res.get("gradient").ravel())
            dipoles.append(res.get("dipole"))
        hessian[k] = (grads[0] - grads[1]) / (2 * h)
        dipole_derivatives[k] = (dipoles[0] - dipoles[1]) / (2 * h)
    return hessian, dipole_derivatives


def _field_gradient(numbers, positions_bohr, settings, field) -> np.ndarray:
    """Gradient [3N] (Hartree/bohr) in a uniform field (atomic units)."""
    calc = make_calculator(numbers, positions_bohr, settings, field)
    return calc.singlepoint().get("gradient").ravel()


def polarizability_derivatives(
    numbers: np.ndarray, positions_bohr: np.ndarray, settings: VibrationalSettings
) -> np.ndarray:
    """d(alpha)/dR [3N, 3, 3] in bohr^2 from 19 finite-field gradients.

    alpha_ij = -d^2E/dF_i dF_j, so d(alpha_ij)/dR = -d^2 g/dF_i dF_j: 3-point second
    differences on the diagonal, 4-point mixed differences off it.
    """
    f = settings.field_step
    unit = np.eye(3) * f
    g0 = _field_gradient(numbers, positions_bohr, settings, np.zeros(3))
    plus = [_field_gradient(numbers, positions_bohr, settings, unit[i]) for i in range(3)]
    minus = [_field_gradient(numbers, positions_bohr, settings, -unit[i]) for i in range(3)]
    out = np.zeros((g0.size, 3, 3))
    for i in range(3):
        out[:, i, i] = -(plus[i] - 2 * g0 + minus[i]) / f**2
        for j in range(i + 1, 3):
            gpp, gpm, gmp, gmm = (
                _field_gradient(numbers, positions_bohr, settings, si * unit[i] + sj * unit[j])
                for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1))
            )
            out[:, i, j] = out[:, j, i] = -(gpp - gpm - gmp + gmm) / (4 * f**2)
    return out


def polarizability(
    numbers: np.ndarray, positions_bohr: np.ndarray, settings: VibrationalSettings
) -> np.ndarray:
    """Static dipole polarizability [3, 3] in bohr^3 from finite-field energies."""
    f = settings.field_step

    def energy(field):
        calc = make_calculator(numbers, positions_bohr, settings, np.asarray(field))
        return calc.singlepoint().get("energy")

    e0 = energy(np.zeros(3))
    unit = np.eye(3) * f
    alpha = np.zeros((3, 3))
    for i in range(3):
        alpha[i, i] = -(energy(unit[i]) - 2 * e0 + energy(-unit[i])) / f**2
        for j in range(i + 1, 3):
            mixed = [energy(si * unit[i] + sj * unit[j]) for si, sj in ((1, 1), (1, -1))]
            mixed += [energy(si * unit[i] + sj * unit[j]) for si, sj in ((-1, 1), (-1, -1))]
            alpha[i, j] = alpha[j, i] = -(mixed[0] - mixed[1] - mixed[2] + mixed[3]) / (4 * f**2)
    return alpha


def rigid_body_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted translations and rotations [3N, R], R = 6 (5 if linear).

    Args:
      positions: [N, 3], any length unit.
      masses: [N] amu.
    """
    sqrt_m = np.sqrt(masses)
    centred = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_m[:, None] * axis).ravel())  # translation
        vectors.append((sqrt_m[:, None] * np.cross(centred, axis)).ravel())  # rotation
    u, s, _ = np.linalg.svd(np.stack(vectors, axis=1), full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


def normal_modes(
    hessian: np.ndarray, positions: np.ndarray, masses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic analysis with translations and rotations projected out.

    Args:
      hessian: [3N, 3N] Hartree/bohr^2 (symmetrised here).
      positions: [N, 3] bohr or Å (only used to build the rotations).
      masses: [N] amu.

    Returns:
      frequencies: [K] cm^-1, ascending, imaginary as negative; K = 3N - R.
      modes: [3N, K] Cartesian displacement per unit normal coordinate (bohr per
        bohr amu^1/2), i.e. mass-weighted eigenvectors divided by sqrt(m).
    """
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    h_mw = 0.5 * (hessian + hessian.T) * np.outer(inv_sqrt_m, inv_sqrt_m)
    rigid = rigid_body_basis(positions, masses)  # [3N, R]
    # Orthonormal basis of the vibrational subspace: complement of the rigid-body space.
    q, _ = np.linalg.qr(np.concatenate([rigid, np.eye(h_mw.shape[0])], axis=1))
    internal = q[:, rigid.shape[1] : h_mw.shape[0]]  # [3N, K]
    eigval, eigvec = np.linalg.eigh(internal.T @ h_mw @ internal)
    frequencies = np.sign(eigval) * np.sqrt(np.abs(eigval)) * AU_TO_WAVENUMBER
    modes = (internal @ eigvec) * inv_sqrt_m[:, None]
    return frequencies, modes


def ir_intensities(dipole_derivatives: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """IR intensities [K] in km/mol from d(mu)/dR [3N, 3] (e) and modes [3N, K]."""
    dmu_dq = modes.T @ dipole_derivatives  # [K, 3] e / amu^1/2
    return IR_AU_TO_KM_MOL * (dmu_dq**2).sum(-1)


def raman_activities(polarizability_derivs: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Raman activities 45 a'^2 + 7 g'^2 [K] in Å^4/amu.

    Args:
      polarizability_derivs: [3N, 3, 3] d(alpha)/dR, bohr^2.
      modes: [3N, K] from `normal_modes`.
    """
    da = np.einsum("xk,xij->kij", modes, polarizability_derivs) * BOHR_TO_ANGSTROM**2  # [K,3,3]
    mean = np.trace(da, axis1=1, axis2=2) / 3.0
    d = np.diagonal(da, axis1=1, axis2=2)  # [K, 3]
    off = da[:, 0, 1] ** 2 + da[:, 1, 2] ** 2 + da[:, 2, 0] ** 2
    aniso = 0.5 * (
        (d[:, 0] - d[:, 1]) ** 2 + (d[:, 1] - d[:, 2]) ** 2 + (d[:, 2] - d[:, 0]) ** 2 + 6 * off
    )
    return 45.0 * mean**2 + 7.0 * aniso


def vibrational_spectrum(
    atomic_numbers: np.ndarray,
    positions: np.ndarray,
    settings: VibrationalSettings = VibrationalSettings(),
) -> VibrationalResult:
    """Optimise, then IR and Raman sticks of one molecule.

    Args:
      atomic_numbers: [N] int.
      positions: [N, 3] starting geometry, Å.

    Raises RuntimeError (SCF or optimisation failure); imaginary modes that survive
    `max_restarts` re-optimisations are kept and counted in `n_imaginary`.
    """
    numbers = np.asarray(atomic_numbers, dtype=np.int32)
    masses = atomic_masses[numbers]
    x = np.asarray(positions, float) / BOHR_TO_ANGSTROM
    for attempt in range(settings.max_restarts + 1):
        x, energy = optimize_geometry(numbers, x, settings)
        hessian, dmu = hessian_and_dipole_derivatives(numbers, x, settings)
        frequencies, modes = normal_modes(hessian, x, masses)
        n_imag = int((frequencies < -settings.imaginary_threshold).sum())
        if n_imag == 0 or attempt == settings.max_restarts:
            break
        # Saddle point: step downhill along the most negative mode and re-optimise.
        mode = modes[:, 0] / np.linalg.norm(modes[:, 0] * np.repeat(np.sqrt(masses), 3))
        x = x + settings.restart_displacement * mode.reshape(-1, 3)
    dalpha = polarizability_derivatives(numbers, x, settings)
    return VibrationalResult(
        atomic_numbers=numbers,
        positions=x * BOHR_TO_ANGSTROM,
        energy=energy,
        frequencies=frequencies,
        ir_intensities=ir_intensities(dmu, modes),
        raman_activities=raman_activities(dalpha, modes),
        n_imaginary=n_imag,
    )
