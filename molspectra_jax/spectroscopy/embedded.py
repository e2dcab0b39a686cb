"""Spectra sets for pre-training: the shipped QM9 subset or any generated store folder.

    spectra = load_embedded_spectra()            # sticks + GFN2 geometries, no downloads
    batch = broaden_batch(spectra, indices)      # {"uv": [B, 701], "ir": [B, 3501], ...}

Sticks are small (~1-2 kB per molecule); the dense spectra (~32 kB per molecule in
float32) are made on the fly, ~5 ms per molecule on one core.
"""

from __future__ import annotations

import dataclasses
import importlib.resources

import numpy as np

from molspectra_jax.spectroscopy import broadening
from molspectra_jax.spectroscopy.store import SpectraStore


@dataclasses.dataclass(frozen=True)
class SpectraSet:
    """M molecules with vibrational and electronic sticks, ragged arrays back to back.

    Attributes:
      ids: [M] int64 molecule ids (QM9 index for the shipped set).
      atomic_numbers: [A] int32; positions: [A, 3] float32 GFN2-optimised geometry, Å;
        atom_offsets: [M + 1].
      frequencies: [K] cm^-1 (unscaled GFN2), ir_intensities: [K] km/mol,
        raman_activities: [K] Å^4/amu; mode_offsets: [M + 1].
      excitation_energies: [S] eV, oscillator_strengths: [S]; state_offsets: [M + 1]
        (B3LYP/6-31G TDA-ris at the source geometry).
      n_imaginary: [M] imaginary modes left after optimisation (0 for almost all).
      metadata: {"vib": ..., "uv": ...} method, settings and package versions.
    """

    ids: np.ndarray
    atomic_numbers: np.ndarray
    positions: np.ndarray
    atom_offsets: np.ndarray
    frequencies: np.ndarray
    ir_intensities: np.ndarray
    raman_activities: np.ndarray
    mode_offsets: np.ndarray
    excitation_energies: np.ndarray
    oscillator_strengths: np.ndarray
    state_offsets: np.ndarray
    n_imaginary: np.ndarray
    metadata: dict

    def __len__(self) -> int:
        return len(self.ids)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic_numbers [n], positions [n, 3] Å) of the i-th molecule."""
        lo, hi = self.atom_offsets[i : i + 2]
        return self.atomic_numbers[lo:hi], self.positions[lo:hi]


def take_ragged(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    """Rows `rows` [B] of a ragged array -> (values [sum], offsets [B + 1])."""
    rows = np.asarray(rows, np.int64)
    counts = offsets[rows + 1] - offsets[rows]
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    index = np.repeat(offsets[rows] - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
    return values[index], new_offsets


def load_spectra(root: str) -> SpectraSet:
    """Join a store folder's "vib" and "uv" shards by molecule id.

    Only molecules with both components (and no failure) are kept, in vib shard order.
    Raises FileNotFoundError naming `root` if it holds no vib or no uv shards.
    """
    store = SpectraStore(root)
    for component in ("vib", "uv"):
        if not store.shard_paths(component):
            raise FileNotFoundError(f"{root}: no {component!r} spectra shards (*.npz)")
    vib, uv = store.load("vib"), store.load("uv")
    uv_row = {int(i): r for r, i in enumerate(uv["ids"])}
    rows = np.array([r for r, i in enumerate(vib["ids"]) if int(i) in uv_row], np.int64)
    uv_rows = np.array([uv_row[int(i)] for i in vib["ids"][rows]], np.int64)
    z, atom_offsets = take_ragged(vib["atomic_numbers"], vib["atom_offsets"], rows)
    pos, _ = take_ragged(vib["positions"], vib["atom_offsets"], rows)
    mode = {k: take_ragged(vib[k], vib["mode_offsets"], rows)[0] for k in _MODE_FIELDS}
    _, mode_offsets = take_ragged(vib["frequencies"], vib["mode_offsets"], rows)
    state = {k: take_ragged(uv[k], uv["state_offsets"], uv_rows)[0] for k in _STATE_FIELDS}
    _, state_offsets = take_ragged(uv["excitation_energies"], uv["state_offsets"], uv_rows)
    return SpectraSet(
        ids=vib["ids"][rows],
        atomic_numbers=z.astype(np.int32),
        positions=pos,
        atom_offsets=atom_offsets,
        mode_offsets=mode_offsets,
        state_offsets=state_offsets,
        n_imaginary=vib["n_imaginary"][rows],
        metadata={"vib": vib["metadata"], "uv": uv["metadata"]},
        **mode,
        **state,
    )


_MODE_FIELDS = ("frequencies", "ir_intensities", "raman_activities")
_STATE_FIELDS = ("excitation_energies", "oscillator_strengths")


def embedded_spectra_dir() -> str:
    """Folder of the spectra shipped inside the package (molspectra_jax/assets/spectra)."""
    return str(importlib.resources.files("molspectra_jax") / "assets" / "spectra")


def load_embedded_spectra() -> SpectraSet:
    """The shipped QM9 subset (first N of the seeded order), with GFN2 geometries."""
    return load_spectra(embedded_spectra_dir())


def broaden_batch(
    spectra: SpectraSet,
    indices: np.ndarray | None = None,
    config: broadening.BroadeningConfig | None = None,
) -> dict[str, np.ndarray]:
    """Dense spectra of molecules `indices` (default: all) on the QM9S grids.

    Returns {"uv": [B, 701], "ir": [B, 3501], "raman": [B, 3501]} float32 (default grids).
    """
    config = config or broadening.BroadeningConfig()
    rows = np.arange(len(spectra)) if indices is None else np.asarray(indices, np.int64)
    freq, mode_offsets = take_ragged(spectra.frequencies, spectra.mode_offsets, rows)
    ir, _ = take_ragged(spectra.ir_intensities, spectra.mode_offsets, rows)
    raman, _ = take_ragged(spectra.raman_activities, spectra.mode_offsets, rows)
    ir_raman = broadening.broaden_vibrational(freq, np.stack([ir, raman]), mode_offsets, config)
    energy, state_offsets = take_ragged(spectra.excitation_energies, spectra.state_offsets, rows)
    strength, _ = take_ragged(spectra.oscillator_strengths, spectra.state_offsets, rows)
    return {
        "uv": broadening.broaden_uv(energy, strength, state_offsets, config),
        "ir": ir_raman[0],
        "raman": ir_raman[1],
    }
