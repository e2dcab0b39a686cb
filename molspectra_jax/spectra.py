"""The spectrum types: one table of what each spectrum is made of and how it is drawn.

A spectrum is a set of sticks in the spectra store (centres and weights, two fields of
one store component: `Sticks`), broadened into unit-area `Peaks` on a fixed inclusive
`Grid`, then cut into SpecFormer patches. The grids are QM9S's (Zou et al. 2023), so
spectra computed here and the QM9S release are interchangeable. Each peak integrates
(over the real line) to its stick's weight, so a spectrum is in stick units per grid
unit (`SpectrumType.intensity_unit`).

Adding a spectrum type is adding a row to `SPECTRA`. This module imports nothing from
the package, so configs may read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sticks:
    """Where a spectrum's sticks are in the spectra store.

    Attributes:
      component: store component holding them, e.g. "vib" (`spectroscopy/components.py`).
      centers: store field of the stick positions (in the grid's unit after `scale`).
      weights: store field of the stick intensities.
      weights_unit: unit of the weights, "" if dimensionless.
      scale: factor applied to the positions before broadening.
    """

    component: str
    centers: str
    weights: str
    weights_unit: str = ""
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Grid:
    """Inclusive uniform grid `start..stop` by `step`, in `unit`, measuring `quantity`."""

    start: float
    stop: float
    step: float
    quantity: str
    unit: str

    @property
    def length(self) -> int:
        return int(round((self.stop - self.start) / self.step)) + 1

    def points(self) -> np.ndarray:
        """The grid [L], float64 (e.g. 500..4000 step 1 -> 3501 points)."""
        return self.start + self.step * np.arange(self.length)


@dataclasses.dataclass(frozen=True)
class Peaks:
    """Unit-area peaks: `shape` "lorentzian" or "gaussian", `fwhm` in the grid's unit."""

    shape: str
    fwhm: float


@dataclasses.dataclass(frozen=True)
class SpectrumType:
    """One row of the table.

    Attributes:
      name: key of the dense spectrum in batches and models, e.g. "ir".
      label: human name, e.g. "IR".
      sticks, grid, peaks: what is broadened, onto which grid, into which peaks.
      patch_length, stride: SpecFormer's unfold of the spectrum (official settings).
      qm9s_file: the QM9S release CSV of this spectrum, or None if it has none.
    """

    name: str
    label: str
    sticks: Sticks
    grid: Grid
    peaks: Peaks
    patch_length: int
    stride: int
    qm9s_file: str | None = None

    @property
    def intensity_unit(self) -> str:
        """Unit of the dense spectrum: stick unit per grid unit, e.g. "km/mol/cm^-1"."""
        return f"{self.sticks.weights_unit or '1'}/{self.grid.unit}"


# Puts the stored GFN2-xTB frequencies on QM9S's axis: 1.026 is the least-squares GFN2 ->
# B3LYP factor on the 3,292 shipped molecules with QM9 frequencies (158,763 modes; MAE
# 39.2 -> 25.4 cm^-1, `experiments/validate_spectra.py`), times the 0.965 QM9S applied
# to its B3LYP frequencies.
GFN2_TO_QM9S = 1.026 * 0.965

UV = SpectrumType(
    name="uv",
    label="UV-Vis",
    sticks=Sticks("uv", centers="excitation_energies", weights="oscillator_strengths"),
    grid=Grid(1.0, 15.0, 0.02, quantity="energy", unit="eV"),  # QM9S's
    peaks=Peaks("gaussian", fwhm=0.5),  # our choice, a common width for gas-phase TDDFT spectra
    patch_length=20,
    stride=10,
    qm9s_file="uv_boraden.csv",
)
IR = SpectrumType(
    name="ir",
    label="IR",
    sticks=Sticks(
        "vib",
        centers="frequencies",
        weights="ir_intensities",
        weights_unit="km/mol",
        scale=GFN2_TO_QM9S,
    ),
    grid=Grid(500.0, 4000.0, 1.0, quantity="wavenumber", unit="cm^-1"),  # QM9S's
    peaks=Peaks("lorentzian", fwhm=12.0),  # QM9S's width
    patch_length=50,
    stride=25,
    qm9s_file="ir_boraden.csv",
)
# Raman shares IR's sticks (the same normal modes), weighted by Raman activities.
RAMAN = dataclasses.replace(
    IR,
    name="raman",
    label="Raman",
    sticks=dataclasses.replace(IR.sticks, weights="raman_activities", weights_unit="Å^4/amu"),
    qm9s_file="raman_boraden.csv",
)

# In the paper's order (SpecFormer's token order).
SPECTRA: dict[str, SpectrumType] = {t.name: t for t in (UV, IR, RAMAN)}


def spectrum(name: str) -> SpectrumType:
    """The row `name`; ValueError listing the choices otherwise."""
    if name not in SPECTRA:
        raise ValueError(f"unknown spectrum {name!r}; choose from {list(SPECTRA)}")
    return SPECTRA[name]


def grid(name: str) -> np.ndarray:
    """Grid [L] of spectrum `name`, float64 (uv: 701 points in eV, ir/raman: 3501 in cm^-1)."""
    return spectrum(name).grid.points()


def grid_length(name: str) -> int:
    """L, the number of grid points of spectrum `name`."""
    return spectrum(name).grid.length


def column(field: str) -> dict[str, Any]:
    """One (dotted) field of every row: `column("grid.length")` -> {"uv": 701, "ir": 3501, ...}."""
    out = {}
    for name, t in SPECTRA.items():
        value = t
        for part in field.split("."):
            value = getattr(value, part)
        out[name] = value
    return out
