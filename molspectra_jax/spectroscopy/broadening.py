"""Sticks -> dense spectra on the grids of the spectrum table (what SpecFormer consumes).

Grids, peak shapes, widths and scale factors are rows of `molspectra_jax.spectra`; this
module holds the math. Each peak integrates (over the real line) to its stick's weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from molspectra_jax.spectra import SPECTRA, SpectrumType

# Ratio FWHM / sigma of a Gaussian.
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


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


def broaden_spectrum(
    spectrum: SpectrumType, centers: np.ndarray, weights: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Spectra of one type on its grid from ragged sticks, float32.

    Args:
      spectrum: a row of the table (or a `dataclasses.replace`d one, e.g. another width).
      centers: [S] stick positions before the row's `sticks.scale`.
      weights: [S], or [C, S] for C channels sharing the centres.
      offsets: [M + 1] int, molecule m owns `offsets[m]:offsets[m + 1]`.

    Returns:
      [M, L] for 1-D weights, else [C, M, L].
    """
    grid, peaks = spectrum.grid.points(), spectrum.peaks
    centers = np.asarray(centers, float) * spectrum.sticks.scale
    return broaden_ragged(grid, centers, weights, offsets, peaks.fwhm, peaks.shape)


def broaden_spectra(
    fields: Mapping[str, np.ndarray],
    offsets: Mapping[str, np.ndarray],
    types: Mapping[str, SpectrumType] = SPECTRA,
) -> dict[str, np.ndarray]:
    """Dense spectra {name: [M, L]} float32 of M molecules, one per row of `types`.

    Rows with the same centres, grid and peaks (IR and Raman) are broadened together:
    their peak profiles, the costly part, are computed once.

    Args:
      fields: store field -> [S] ragged sticks of all M molecules (every centres and
        weights field that `types` names).
      offsets: centres field -> [M + 1] int, molecule m owns `offsets[m]:offsets[m + 1]`.
      types: the spectra to make (default: the whole table).
    """
    groups: dict[tuple, list[SpectrumType]] = {}
    for t in types.values():
        # Peak profiles depend on the centres, the grid and the peaks, not on the weights.
        key = (t.sticks.component, t.sticks.centers, t.sticks.scale, t.grid, t.peaks)
        groups.setdefault(key, []).append(t)
    dense = {}
    for group in groups.values():
        centers = group[0].sticks.centers
        weights = np.stack([np.asarray(fields[t.sticks.weights], np.float32) for t in group])
        channels = broaden_spectrum(group[0], fields[centers], weights, offsets[centers])
        dense.update(zip((t.name for t in group), channels, strict=True))  # [C, M, L]
    return {t.name: dense[t.name] for t in types.values()}
