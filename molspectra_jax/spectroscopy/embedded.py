"""Spectra sets for pre-training: the shipped QM9 subset or any generated store folder.

    spectra = load_embedded_spectra()            # sticks + GFN2 geometries, no downloads
    batch = broaden_batch(spectra, indices)      # {"uv": [B, 701], "ir": [B, 3501], ...}

Sticks are small (~1-2 kB per molecule); the dense spectra (~31 kB per molecule in
float32, ~2.5 ms per molecule to broaden on one core) are made once per store and table
by `dense_spectra` into a memory-mapped cache that later runs open at once.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.resources
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from molspectra_jax import files
from molspectra_jax.data.records import MappedRows
from molspectra_jax.spectra import SPECTRA, SpectrumType
from molspectra_jax.spectroscopy import broadening, components
from molspectra_jax.spectroscopy.store import SpectraStore, select, take_ragged


@dataclasses.dataclass(frozen=True)
class SpectraSet:
    """M molecules with the sticks of every joined component, ragged arrays back to back.

    Attributes:
      ids: [M] int64 molecule ids (QM9 index for the shipped set).
      atomic_numbers: [A] int32; positions: [A, 3] float32 Å; atom_offsets: [M + 1]: the
        geometry stored by `geometry` (the GFN2-optimised one of "vib").
      arrays: component -> its store arrays of these M molecules in `ids` order
        (`store.select`): each ragged field [K, ...] with its `<group>_offsets [M + 1]`
        and each scalar [M]; names, dtypes and units are in `components.py`, e.g.
        `arrays["vib"]["frequencies"]` [K] cm^-1 (unscaled GFN2), `arrays["uv"]
        ["state_offsets"]` [M + 1], `arrays["vib"]["n_imaginary"]` [M].
      metadata: component -> method, settings and package versions of its shards.
      geometry: the component the geometry comes from, e.g. "vib".
    """

    ids: np.ndarray
    atomic_numbers: np.ndarray
    positions: np.ndarray
    atom_offsets: np.ndarray
    arrays: dict[str, dict[str, np.ndarray]]
    metadata: dict
    geometry: str

    def __len__(self) -> int:
        return len(self.ids)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic_numbers [n], positions [n, 3] Å) of the i-th molecule."""
        lo, hi = self.atom_offsets[i : i + 2]
        return self.atomic_numbers[lo:hi], self.positions[lo:hi]

    def ragged(self, component: str, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(values [K, ...], offsets [M + 1]) of a ragged field: molecule m owns
        `values[offsets[m]:offsets[m + 1]]`."""
        if component not in self.arrays:
            raise KeyError(f"no component {component!r} in this set: {list(self.arrays)}")
        arrays = self.arrays[component]
        return arrays[field], arrays[components.get(component).offsets_name(field)]


def load_spectra(root: str, names: Sequence[str] | None = None) -> SpectraSet:
    """Join a store folder's shards of components `names` (default: all) by molecule id.

    Only molecules with every component (and no failure) are kept, in the shard order
    of the component that stores the geometry (`components.geometry_component`).
    Raises FileNotFoundError naming `root` if it holds no shards of one of them.
    """
    names = tuple(names or components.names())
    geometry = components.geometry_component(names)
    store = SpectraStore(root)
    for component in names:
        if not store.shard_paths(component):
            raise FileNotFoundError(f"{root}: no {component!r} spectra shards (*.npz)")
    loaded = {c: store.load(c) for c in names}
    ids = loaded[geometry]["ids"]
    keep = np.ones(len(ids), bool)
    for c in names:
        keep &= np.isin(ids, loaded[c]["ids"])
    ids = ids[keep]
    arrays = {}
    for c in names:
        row_of = {int(i): r for r, i in enumerate(loaded[c]["ids"])}
        rows = np.array([row_of[int(i)] for i in ids], np.int64)
        arrays[c] = select(c, loaded[c], rows)
    atoms = arrays[geometry]
    return SpectraSet(
        ids=ids,
        atomic_numbers=atoms["atomic_numbers"].astype(np.int32),
        positions=atoms["positions"],
        atom_offsets=atoms[f"{components.GEOMETRY_GROUP}_offsets"],
        arrays=arrays,
        metadata={c: loaded[c]["metadata"] for c in names},
        geometry=geometry,
    )


def embedded_spectra_dir() -> str:
    """Folder of the spectra shipped inside the package (molspectra_jax/assets/spectra)."""
    return str(importlib.resources.files("molspectra_jax") / "assets" / "spectra")


def load_embedded_spectra() -> SpectraSet:
    """The shipped QM9 subset (first N of the seeded order), with GFN2 geometries."""
    return load_spectra(embedded_spectra_dir())


def broaden_batch(
    spectra: SpectraSet,
    indices: np.ndarray | None = None,
    types: Mapping[str, SpectrumType] = SPECTRA,
) -> dict[str, np.ndarray]:
    """Dense spectra of molecules `indices` (default: all), one per row of `types`.

    Returns {"uv": [B, 701], "ir": [B, 3501], "raman": [B, 3501]} float32 for the
    default table; pass rows changed with `dataclasses.replace` for other widths/scales.
    """
    rows = np.arange(len(spectra)) if indices is None else np.asarray(indices, np.int64)
    dense = {}
    # One call per component: `broaden_spectra` names fields without their component.
    for component in dict.fromkeys(t.sticks.component for t in types.values()):
        of_component = {k: t for k, t in types.items() if t.sticks.component == component}
        fields, offsets = {}, {}
        for t in of_component.values():
            for field in (t.sticks.centers, t.sticks.weights):
                if field not in fields:
                    values, group_offsets = spectra.ragged(component, field)
                    fields[field], offsets[field] = take_ragged(values, group_offsets, rows)
        dense.update(broadening.broaden_spectra(fields, offsets, of_component))
    return {name: dense[name] for name in types}


DENSE_FORMAT = 1


def dense_spectra(
    root: str,
    spectra: SpectraSet,
    cache_dir: str,
    types: Mapping[str, SpectrumType] = SPECTRA,
    chunk: int = 512,
    progress: bool = True,
) -> dict[str, MappedRows]:
    """{name: [M, L] dense spectra of `spectra` (the sticks of store `root`)}, broadened
    once into `<cache_dir>/dense_spectra/<key>/<name>.npy` and memory-mapped.

    The key covers the store (its identity and shard files), the molecules and their
    order, and the table's grids and broadening, so a grown store or another table gets
    its own cache. Broadening runs `chunk` molecules at a time (memory: one chunk), with
    a progress bar; concurrent runs wait for the first to write it.
    """
    shards = sorted(glob.glob(os.path.join(root, "*.npz")))
    identity = os.path.join(root, "store.json")
    key = {
        "format": DENSE_FORMAT,
        "store": open(identity).read() if os.path.exists(identity) else "",
        "shards": [(os.path.basename(p), os.path.getsize(p)) for p in shards],
        "ids": hashlib.sha256(np.ascontiguousarray(spectra.ids, np.int64)).hexdigest(),
        "types": repr(sorted(types.items())),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = os.path.join(cache_dir, "dense_spectra", digest)
    paths = {name: os.path.join(folder, f"{name}.npy") for name in types}
    with files.exclusive_folder(folder, wait=True):
        if not all(os.path.exists(p) for p in paths.values()):
            _broaden_into(paths, spectra, types, chunk, progress)
    return {name: MappedRows(path) for name, path in paths.items()}


def _broaden_into(paths, spectra: SpectraSet, types, chunk: int, progress: bool) -> None:
    m = len(spectra)
    shapes = {paths[name]: ((m, t.grid.length), np.float32) for name, t in types.items()}
    bar = tqdm(total=m, unit="mol", desc="broadening spectra (once)", disable=not progress)
    with files.new_npy_memmaps(shapes) as out:
        for start in range(0, m, chunk):
            rows = np.arange(start, min(start + chunk, m))
            for name, dense in broaden_batch(spectra, rows, types).items():
                out[paths[name]][rows] = dense
            bar.update(len(rows))
    bar.close()
