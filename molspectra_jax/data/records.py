"""One record format for every molecule source: flat arrays + offsets.

A `MoleculeDataset` holds M molecules as contiguous arrays (atomic numbers and
positions of all atoms back to back, `offsets[m]:offsets[m+1]` slicing molecule m),
so a 130k-molecule set is a handful of numpy arrays that save to one `.npz` file and
load in well under a second. Readers (QM9, SDF/XYZ/SMILES, MD17, QM9S) all produce
this; batching consumes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from molspectra_jax import files
from molspectra_jax.elements import ELEMENT_SYMBOLS

# Elements the default models embed (QM9: H C N O F, plus the other organic elements
# that PCQM4Mv2 and drug-like SDF files bring); this list is what readers accept.
# Embedding tables are sized by `model.max_z` in the config.
DEFAULT_ELEMENTS = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)


class DataError(ValueError):
    """A molecule source is malformed or unsupported; the message names file and record."""


@dataclasses.dataclass(frozen=True)
class MoleculeRecord:
    """One molecule as read from a file: `atomic_numbers [n]`, `positions [n, 3]` (Å);
    `number`: its 1-based record number in the file (0 if not from one).

    Labelled files fill `properties` ({column or tag as written, e.g. "logS [mol/L]":
    value}) and, for extended XYZ, `forces` [n, 3]; `from_records` turns chosen
    properties into targets.
    """

    name: str
    atomic_numbers: np.ndarray
    positions: np.ndarray
    targets: np.ndarray | None = None
    number: int = 0
    properties: dict[str, float] = dataclasses.field(default_factory=dict)
    forces: np.ndarray | None = None


class MappedRows:
    """Rows `rows` (default: all) of a `.npy` file [M, ...], memory-mapped: indexing reads
    only the rows asked for, and pickling sends the path, so a worker process maps the
    file again instead of receiving gigabytes (QM9S's dense spectra: ~4 GB).
    """

    def __init__(self, path: str, rows: np.ndarray | None = None):
        self.path = path
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        self._array = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self._array) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    def __getitem__(self, index) -> np.ndarray:
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        rows = rows if self.rows is None else self.rows[rows]
        return np.asarray(self._array[(rows, *rest)])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[:], dtype)

    def __reduce__(self):
        return MappedRows, (self.path, self.rows)


@dataclasses.dataclass(frozen=True)
class MoleculeDataset:
    """M molecules in flat arrays.

    Attributes:
      ids: [M] int64, the source's molecule id (QM9 index, record number, ...).
      atomic_numbers: [A] int32, all atoms back to back.
      positions: [A, 3] float32, Å.
      offsets: [M + 1] int64, molecule m is `offsets[m]:offsets[m + 1]`.
      targets: [M, T] float64 per-molecule targets in `target_names` units, or [M, 0].
      target_names: names of the T target columns.
      atom_targets: optional [A, K] per-atom targets (e.g. forces, kcal/mol/Å).
      spectra: {name: [M, L] float32} dense spectra on the grids of `molspectra_jax.spectra`
        (pre-training), arrays or `MappedRows`; empty when the source has none.
      store: the molecule-store folder (`data.molstore`) the arrays are memory-mapped
        from, where caches of per-molecule counts live; "" for arrays in memory.
      target_units: units the data itself gives ({name: unit}, e.g. from a CSV header
        "logS [mol/L]"); empty when the source declares them (`sources.Source.units`).
    """

    ids: np.ndarray
    atomic_numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    targets: np.ndarray
    target_names: tuple[str, ...] = ()
    atom_targets: np.ndarray | None = None
    spectra: dict[str, np.ndarray | MappedRows] = dataclasses.field(default_factory=dict)
    store: str = ""
    target_units: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        m = len(self.ids)
        if self.offsets.shape != (m + 1,) or self.offsets[-1] != len(self.atomic_numbers):
            raise DataError(f"offsets {self.offsets.shape} do not match {m} molecules")
        if self.positions.shape != (len(self.atomic_numbers), 3):
            raise DataError(
                f"positions {self.positions.shape} do not match {len(self.atomic_numbers)} atoms"
            )
        if self.targets.shape[:1] != (m,) or self.targets.shape[1] != len(self.target_names):
            raise DataError(f"targets {self.targets.shape} vs names {self.target_names}")
        for name, values in self.spectra.items():
            if len(values) != m:
                raise DataError(f"spectra[{name!r}] has {len(values)} rows for {m} molecules")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_atoms(self) -> np.ndarray:
        """[M] number of atoms per molecule."""
        return np.diff(self.offsets)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic_numbers [n], positions [n, 3]) of molecule i."""
        s, e = self.offsets[i], self.offsets[i + 1]
        return self.atomic_numbers[s:e], self.positions[s:e]

    def target(self, name: str) -> np.ndarray:
        """[M] one target column by name."""
        if name not in self.target_names:
            raise KeyError(f"unknown target {name!r}; this dataset has {self.target_names}")
        return self.targets[:, self.target_names.index(name)]

    def select_targets(self, names: Sequence[str]) -> MoleculeDataset:
        """The same molecules with only the target columns `names`, in that order."""
        columns = np.stack([self.target(n) for n in names], axis=1) if names else None
        return dataclasses.replace(
            self,
            targets=columns if columns is not None else np.zeros((len(self), 0)),
            target_names=tuple(names),
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> MoleculeDataset:
        """The molecules at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.n_atoms[indices]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        atom_index = concat_ranges(self.offsets[indices], counts)
        return MoleculeDataset(
            ids=self.ids[indices],
            atomic_numbers=self.atomic_numbers[atom_index],
            positions=self.positions[atom_index],
            offsets=offsets,
            targets=self.targets[indices],
            target_names=self.target_names,
            atom_targets=None if self.atom_targets is None else self.atom_targets[atom_index],
            spectra={k: v[indices] for k, v in self.spectra.items()},
            target_units=self.target_units,
        )

    def save(self, path: str, **metadata: str) -> None:
        """Write to `path` (.npz) atomically: readers see the old file or the new one."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del arrays["store"], arrays["target_units"]  # a store's own; units: the source's
        arrays.update({f"spectrum_{k}": v for k, v in arrays.pop("spectra").items()})
        arrays["target_names"] = np.array(self.target_names, dtype=str)
        if self.atom_targets is None:
            del arrays["atom_targets"]
        arrays.update({f"meta_{k}": np.array(v) for k, v in metadata.items()})
        # Uncompressed, as np.savez was: the QM9 cache is read on every run.
        files.write_npz(path, arrays, compress=False)

    @classmethod
    def load(cls, path: str) -> tuple[MoleculeDataset, dict[str, str]]:
        """Inverse of `save`: (dataset, metadata)."""
        with np.load(path) as f:
            meta = {k[5:]: str(f[k]) for k in f.files if k.startswith("meta_")}
            dataset = cls(
                ids=f["ids"],
                atomic_numbers=f["atomic_numbers"],
                positions=f["positions"],
                offsets=f["offsets"],
                targets=f["targets"],
                target_names=tuple(str(n) for n in f["target_names"]),
                atom_targets=f["atom_targets"] if "atom_targets" in f.files else None,
                spectra={k[9:]: f[k] for k in f.files if k.startswith("spectrum_")},
            )
        return dataset, meta


def from_records(
    records: Sequence[MoleculeRecord],
    target_names: Sequence[str] = (),
    source: str = "",
    forces: bool = False,
) -> MoleculeDataset:
    """Pack a list of records into a dataset: ids are the records' 1-based numbers in
    their file, or 0..M-1 in list order for records not from one.

    `target_names` name the records' `targets` columns or, for labelled files, are read
    from each record's `properties` by the label as written ("logS [mol/L]") or bare
    ("logS"); the bracket is the unit (`split_unit`), and a record without a value has
    NaN there (`sources.complete` leaves it out of a run on that target). `forces`:
    the records' `forces` become `atom_targets`; a record without them raises a
    DataError naming `source` and the record.
    """
    if not records:
        raise DataError("no molecules to pack")
    counts = [len(r.atomic_numbers) for r in records]
    names = tuple(split_unit(n)[0] for n in target_names)
    units = {}
    if any(r.properties for r in records):
        columns = [_property_column(records, name) for name in target_names]
        targets = np.stack([c for c, _ in columns], axis=1) if columns else None
        units = {n: u for n, (_, u) in zip(names, columns, strict=True) if u}
    else:
        targets = np.array([r.targets if r.targets is not None else [] for r in records])
    targets = np.zeros((len(records), 0)) if targets is None else targets.astype(np.float64)
    targets = targets.reshape(len(records), len(names))
    atom_targets = None
    if forces:
        missing = [r for r in records if r.forces is None]
        if missing:
            raise DataError(f"{source}, record {missing[0].number} ({missing[0].name}): no forces")
        atom_targets = np.concatenate([r.forces for r in records]).astype(np.float32)
    numbers = np.array([r.number for r in records], np.int64)
    from_file = numbers.min() > 0 and len(np.unique(numbers)) == len(numbers)
    return MoleculeDataset(
        ids=numbers if from_file else np.arange(len(records), dtype=np.int64),
        atomic_numbers=np.concatenate([r.atomic_numbers for r in records]).astype(np.int32),
        positions=np.concatenate([r.positions for r in records]).astype(np.float32),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        targets=targets,
        target_names=names,
        atom_targets=atom_targets,
        target_units=units,
    )


def split_unit(label: str) -> tuple[str, str]:
    """ "logS [mol/L]" -> ("logS", "mol/L"); a label without a bracket has no unit ("")."""
    label = label.strip()
    if label.endswith("]") and "[" in label:
        name, _, unit = label[:-1].rpartition("[")
        return name.strip(), unit.strip()
    return label, ""


def _property_column(records, name: str) -> tuple[np.ndarray, str]:
    """([M] float64 values of target `name` over `records`, NaN where a record has none;
    its unit from the label)."""
    wanted = split_unit(name)[0]
    values, unit = np.full(len(records), np.nan), ""
    for i, record in enumerate(records):
        for label, value in record.properties.items():
            bare, label_unit = split_unit(label)
            if bare == wanted:
                values[i], unit = value, label_unit or unit
    return values, unit


def check_molecule(
    source: str,
    record: str,
    atomic_numbers: np.ndarray,
    positions: np.ndarray,
    *,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    max_atoms: int | None = None,
    min_distance: float | None = None,
) -> None:
    """Raise DataError naming `source` and `record` if the molecule cannot be modelled.

    `min_distance` (Å): refuse two atoms closer than this (coincident atoms: a file whose
    coordinates were lost, e.g. every atom at the origin).
    """
    where = f"{source}, record {record}"
    if len(atomic_numbers) == 0:
        raise DataError(f"{where}: molecule has no atoms")
    if positions.shape != (len(atomic_numbers), 3):
        raise DataError(
            f"{where}: positions shape {positions.shape} for {len(atomic_numbers)} atoms"
        )
    if not np.all(np.isfinite(positions)):
        raise DataError(f"{where}: non-finite coordinates")
    unsupported = sorted(set(int(z) for z in atomic_numbers) - set(elements))
    if unsupported:
        names = ", ".join(
            ELEMENT_SYMBOLS[z] if z < len(ELEMENT_SYMBOLS) else str(z) for z in unsupported
        )
        raise DataError(
            f"{where}: unsupported element(s) {names}; the model embeds {list(elements)}"
        )
    if max_atoms is not None and len(atomic_numbers) > max_atoms:
        raise DataError(f"{where}: {len(atomic_numbers)} atoms exceeds the budget of {max_atoms}")
    if min_distance is not None and len(atomic_numbers) > 1:
        from scipy.spatial import cKDTree

        pairs = sorted(cKDTree(positions).query_pairs(min_distance))
        if pairs:
            i, j = pairs[0]
            d = float(np.linalg.norm(positions[i] - positions[j]))
            raise DataError(
                f"{where}: atoms {i + 1} and {j + 1} are {d:.3f} Å apart (closer than "
                f"{min_distance} Å: coincident atoms; {len(pairs)} such pairs)"
            )


def different_atoms(
    atomic_numbers: np.ndarray, offsets: np.ndarray, other: np.ndarray, other_offsets: np.ndarray
) -> np.ndarray:
    """Molecules m whose atoms differ between two flat layouts of M molecules: [K] rows.

    Args:
      atomic_numbers, other: [A], [A'] int atoms back to back; offsets, other_offsets:
        [M + 1] each. Atom order is free: molecule m differs if its atom count or its
        multiset of elements does.
    """
    counts, other_counts = np.diff(offsets), np.diff(other_offsets)
    rows = np.flatnonzero(counts == other_counts)
    n = counts[rows]
    segment = np.repeat(np.arange(len(rows), dtype=np.int64), n)  # [A_same]
    # Sorting segment * 256 + z sorts each molecule's elements and keeps molecules apart.
    key = np.sort(segment * 256 + atomic_numbers[concat_ranges(offsets[rows], n)])
    other_key = np.sort(segment * 256 + other[concat_ranges(other_offsets[rows], n)])
    differs = np.zeros(len(rows), bool)
    differs[key[key != other_key] // 256] = True
    return np.sort(np.concatenate([np.flatnonzero(counts != other_counts), rows[differs]]))


def join_error(
    where: str, problem: str, wrong: np.ndarray, total: int, describe, advice: str
) -> DataError:
    """The error of a join by id whose rows `wrong` [K] (of `total`) hold other molecules:
    names `where`, the count, up to three rows (`describe(row) -> str`) and the way on."""
    examples = "; ".join(describe(int(row)) for row in wrong[:3])
    return DataError(f"{where}: {len(wrong)} of {total} molecules {problem} ({examples}); {advice}")


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Seeded permutation of range(n) cut into consecutive parts of `sizes`; the rest last.

    QM9's standard split is sizes=(110_000, 10_000): train, valid, and the rest test.
    """
    if sum(sizes) > n:
        raise ValueError(f"split sizes {list(sizes)} exceed the {n} molecules available")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(sizes)
    return np.split(perm, cuts)


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), vectorised."""
    total = int(counts.sum())
    shifts = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total, dtype=np.int64) + shifts
