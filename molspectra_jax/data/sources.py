"""Molecule sources for spectra generation: QM9 (seeded order) or SDF/XYZ/SMILES files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

SOURCES = ("qm9", "sdf", "xyz", "smiles")
EMBEDDED_SEED = 0  # the shipped set is the first N molecules of this QM9 order


@dataclasses.dataclass(frozen=True)
class MoleculeSource:
    """Molecules to process, in order.

    Attributes:
      ids: [M] int molecule ids (QM9 index, or 1-based record number for files).
      get: position in `ids` -> (atomic_numbers [n], positions [n, 3] Å).
      names: [M] record names (files), or None for QM9.
      label: description recorded in the shards' metadata.
    """

    ids: np.ndarray
    get: Callable[[int], tuple[np.ndarray, np.ndarray]]
    names: list[str] | None
    label: str


def qm9_order(all_ids: np.ndarray, seed: int = EMBEDDED_SEED) -> np.ndarray:
    """The fixed seeded order of QM9 ids; the shipped set is its first N entries."""
    return np.asarray(all_ids)[np.random.default_rng(seed).permutation(len(all_ids))]


def qm9_source(limit: int | None = None, seed: int = EMBEDDED_SEED) -> MoleculeSource:
    """The first `limit` QM9 molecules of the seeded order (B3LYP geometries from qm9pack)."""
    from molspectra_jax.data.qm9 import load_qm9

    dataset = load_qm9()
    order = qm9_order(dataset.ids, seed)[:limit]
    row = {int(i): r for r, i in enumerate(dataset.ids)}
    positions = [row[int(i)] for i in order]
    return MoleculeSource(
        ids=order,
        get=lambda p: dataset.molecule(positions[p]),
        names=None,
        label=f"qm9pack QM9, seeded order (seed {seed})",
    )


def file_source(kind: str, path: str, limit: int | None = None) -> MoleculeSource:
    """Molecules of an SDF, XYZ or SMILES file (ids = 1-based record numbers)."""
    from molspectra_jax.data import molfiles

    readers = {"sdf": molfiles.read_sdf, "xyz": molfiles.read_xyz, "smiles": molfiles.read_smiles}
    if kind not in readers:
        raise ValueError(f"unknown molecule source {kind!r}; choose from {list(SOURCES)}")
    records, _ = readers[kind](path)
    records = records[:limit]
    return MoleculeSource(
        ids=np.arange(1, len(records) + 1),
        get=lambda p: (records[p].atomic_numbers, records[p].positions),
        names=[r.name for r in records],
        label=f"{kind} file {path}",
    )


def make_source(
    kind: str, path: str | None = None, limit: int | None = None, seed: int = EMBEDDED_SEED
) -> MoleculeSource:
    """Dispatch on `kind` ("qm9", "sdf", "xyz", "smiles"); files need `path`."""
    if kind == "qm9":
        return qm9_source(limit, seed)
    if path is None:
        raise ValueError(f"--source {kind} needs --input FILE")
    return file_source(kind, path, limit)
