"""Sticks -> spectra on the fixed QM9S grids (what SpecFormer consumes).

IR and Raman: area-normalised Lorentzians, FWHM 12 cm^-1, on 500-4000 cm^-1 step 1
(3501 points), frequencies multiplied by a scale factor first (QM9S scales its B3LYP
frequencies by 0.965). UV-Vis: area-normalised Gaussians on 1-15 eV step 0.02 (701
points). Each peak integrates (over the real line) to its stick's intensity, so a
spectrum is in stick units per grid unit: km/mol/cm^-1, Å^4/amu/cm^-1, 1/eV.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Ratio FWHM / sigma of a Gaussian.
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclasses.dataclass(frozen=True)
class BroadeningConfig:
    """Grids, widths and the vibrational frequency scale factor.

    `frequency_scale` multiplies the stored (GFN2-xTB) frequencies before broadening.
    The default puts GFN2 on QM9S's axis: 1.026 is the least-squares GFN2 -> B3LYP
    factor measured on 798 QM9 molecules (38,199 modes; MAE 39 -> 25 cm^-1, see
    `experiments/validate_spectra.py`), times the 0.965 QM9S applied to its B3LYP.
    """

    vib_start: float = 500.0  # cm^-1
    vib_stop: float = 4000.0
    vib_step: float = 1.0
    vib_fwhm: float = 12.0  # cm^-1, QM9S's Lorentzian width
    frequency_scale: float = 1.026 * 0.965
    uv_start: float = 1.0  # eV
    uv_stop: float = 15.0
    uv_step: float = 0.02
    uv_fwhm: float = 0.5  # eV; our choice, a common width for gas-phase TDDFT spectra


def make_grid(start: float, stop: float, step: float) -> np.ndarray:
    """Inclusive uniform grid [L], float64 (e.g. 500..4000 step 1 -> 3501 points)."""
    n = int(round((stop - start) / step)) + 1
    return start + step * np.arange(n)


def vib_grid(config: BroadeningConfig = BroadeningConfig()) -> np.ndarray:
    """IR/Raman wavenumber grid [3501] in cm^-1 for the default config."""
    return make_grid(config.vib_start, config.vib_stop, config.vib_step)


def uv_grid(config: BroadeningConfig = BroadeningConfig()) -> np.ndarray:
    """UV-Vis energy grid [701] in eV for the default config."""
    return make_grid(config.uv_start, config.uv_stop, config.uv_step)


def lorentzian_profiles(grid: np.ndarray, centers: np.ndarray, fwhm: float) -> np.ndarray:
    """Unit-area Lorentzians [S, L] centred at `centers` [S] on `grid` [L]."""
    half = 0.5 * fwhm
    return (half / np.pi) / ((grid[None, :] - centers[:, None]) ** 2 + half**2)


def gaussian_profiles(grid: np.ndarray, centers: np.ndarray, fwhm: float) -> np.ndarray:
    """Unit-area Gaussians [S, L] centred at `centers` [S] on `grid` [L]."""
    sigma = fwhm / _FWHM_PER_SIGMA
    z = (grid[None, :] - centers[:, None]) / sigma
    return np.exp(-0.5 * z**2) / (sigma * np.sqrt(2.0 * np.pi))


def broaden(
    grid: np.ndarray, centers: np.ndarray, weights: np.ndarray, fwhm: float, shape: str
) -> np.ndarray:
    """One spectrum [L]: sum of `weights` [S] times unit-area peaks of `shape`.

    Args:
      shape: "lorentzian" or "gaussian".
    """
    centers = np.asarray(centers, float)
    weights = np.asarray(weights, float)
    if centers.shape != weights.shape or centers.ndim != 1:
        raise ValueError(f"centers {centers.shape} and weights {weights.shape} must be equal [S]")
    return weights @ broaden_profiles(grid, centers, fwhm, shape)


def broaden_ragged(
    grid: np.ndarray,
    centers: np.ndarray,
    weights: np.ndarray,
    offsets: np.ndarray,
    fwhm: float,
    shape: str,
    chunk: int = 64,
) -> np.ndarray:
    """Spectra of M molecules whose sticks lie back to back, float32.

    Args:
      centers: [S] all sticks; molecule m owns `offsets[m]:offsets[m + 1]`.
      weights: [S], or [C, S] for C channels sharing the centres (IR and Raman share
        frequencies: their peak profiles, the costly part, are computed once).
      offsets: [M + 1] int.
      chunk: molecules per block, bounding the [sticks, L] temporary.

    Returns:
      [M, L] for 1-D weights, else [C, M, L].
    """
    offsets = np.asarray(offsets, np.int64)
    weights = np.asarray(weights, np.float32)
    channels = np.atleast_2d(weights)  # [C, S]
    # float32 profiles: relative error ~1e-7, half the time and memory of float64.
    grid32, centers32 = np.asarray(grid, np.float32), np.asarray(centers, np.float32)
    out = np.zeros((len(channels), len(offsets) - 1, len(grid)), np.float32)
    for m0 in range(0, len(offsets) - 1, chunk):
        m1 = min(m0 + chunk, len(offsets) - 1)
        s0, s1 = offsets[m0], offsets[m1]
        if s1 == s0:
            continue
        profiles = broaden_profiles(grid32, centers32[s0:s1], fwhm, shape)  # [S_chunk, L]
        # reduceat over the first stick of each non-empty molecule; empty ones stay zero.
        nonempty = np.diff(offsets[m0 : m1 + 1]) > 0
        starts = (offsets[m0:m1] - s0)[nonempty]
        for c, w in enumerate(channels):
            block = out[c, m0:m1]  # view
            block[nonempty] = np.add.reduceat(w[s0:s1, None] * profiles, starts, axis=0)
    return out[0] if weights.ndim == 1 else out


def broaden_profiles(grid: np.ndarray, centers: np.ndarray, fwhm: float, shape: str) -> np.ndarray:
    """Unit-area peaks [S, L] of `shape` ("lorentzian" or "gaussian"), in the inputs' dtype."""
    if shape == "lorentzian":
        return lorentzian_profiles(grid, centers, fwhm)
    if shape == "gaussian":
        return gaussian_profiles(grid, centers, fwhm)
    raise ValueError(f"unknown peak shape {shape!r}; choose from ['gaussian', 'lorentzian']")


def broaden_vibrational(
    frequencies: np.ndarray,
    intensities: np.ndarray,
    offsets: np.ndarray,
    config: BroadeningConfig = BroadeningConfig(),
) -> np.ndarray:
    """IR or Raman spectra [M, 3501] ([C, M, 3501] for intensities [C, S]) from ragged
    sticks: frequencies [S] cm^-1, intensities in stick units."""
    return broaden_ragged(
        vib_grid(config),
        np.asarray(frequencies, float) * config.frequency_scale,
        intensities,
        offsets,
        config.vib_fwhm,
        "lorentzian",
    )


def broaden_uv(
    energies: np.ndarray,
    strengths: np.ndarray,
    offsets: np.ndarray,
    config: BroadeningConfig = BroadeningConfig(),
) -> np.ndarray:
    """UV-Vis spectra [M, 701] from ragged excitation energies (eV) and oscillator strengths."""
    return broaden_ragged(
        uv_grid(config),
        np.asarray(energies, float),
        np.asarray(strengths, float),
        offsets,
        config.uv_fwhm,
        "gaussian",
    )
