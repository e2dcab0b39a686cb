"""Every data source, registered once: its loader, targets, units and split rule.

A data config names its molecules with `data.source` and, for pre-training stage 2,
its spectra with `data.spectra`; both are `name` or `name:argument`:

- molecules: "qm9" (qm9pack), "md17" (the shipped ethanol frames) or "md17:<file.npz>",
  "sdf:<file>", "xyz:<file>", "smiles:<file.smi>", "molstore:<folder>" (a memory-mapped
  store written by `experiments.convert_molecules`, e.g. PCQM4Mv2);
- spectra (molecules + dense spectra): "embedded" (shipped with the package),
  "store:<folder>" (written by `experiments.generate_spectra`; a bare folder path means
  the same), "qm9s:<folder>" (the QM9S release converted by `experiments.convert_qm9s`).

Adding a dataset is one reader module plus one `register(Source(...))` line here. The
bottom of this file also lists the molecules spectra generation can start from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from molspectra_jax.data import md17, molfiles, molstore
from molspectra_jax.data.qm9 import (
    QM9_SPLIT_SIZES,
    TARGET_NAMES,
    TARGET_UNITS,
    default_cache_dir,
    load_qm9,
)
from molspectra_jax.data.records import (
    DataError,
    MappedRows,
    MoleculeDataset,
    different_atoms,
    from_records,
    join_error,
    split_indices,
)
from molspectra_jax.elements import formula
from molspectra_jax.files import write_npz

SPLITS = ("train", "valid", "test")
# Our split names -> the keys of TorchMD-Net's splits.npz.
SPLIT_FILE_KEYS = {"train": "idx_train", "valid": "idx_val", "test": "idx_test"}
FILE_READERS = {"sdf": molfiles.read_sdf, "xyz": molfiles.read_xyz, "smiles": molfiles.read_smiles}
# Files that carry labels: every numeric property a record has becomes a target column
# (NaN for records without it; `complete` leaves those out of a run on that target).
LABELLED_READERS = {"csv": molfiles.read_csv, "extxyz": molfiles.read_extxyz}


@dataclasses.dataclass(frozen=True)
class Source:
    """A registered data source.

    Attributes:
      name: what a config writes before the optional ":argument".
      load: (argument, data config) -> every molecule of the source, ids unique.
      targets: per-molecule target names it provides (`config.target` chooses among them).
      units: unit of each target (and of "forces" for per-atom force targets).
      split_sizes: (molecule count, data config) -> train and valid sizes for fine-tuning;
        the rest is the test split.
      argument: whether "name:argument" (a file or folder) is "required", "optional" or
        "none" (not accepted).
    """

    name: str
    load: Callable[[str, object], MoleculeDataset]
    targets: tuple[str, ...] = ()
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    split_sizes: Callable[[int, object], Sequence[int]] | None = None
    argument: str = "none"


REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    if source.name in REGISTRY:
        raise ValueError(f"data source {source.name!r} registered twice")
    REGISTRY[source.name] = source
    return source


def resolve(spec: str) -> tuple[Source, str]:
    """The registered source of `spec` ("name" or "name:argument") and its argument."""
    name, _, argument = spec.partition(":")
    if name not in REGISTRY and os.path.isdir(spec):
        name, argument = "store", spec  # a bare spectra store folder
    if name not in REGISTRY:
        raise ValueError(f"unknown data source {spec!r}; choose from {sorted(REGISTRY)}")
    source = REGISTRY[name]
    if source.argument == "required" and not argument:
        raise ValueError(f"data source {name!r} needs a path: {name}:<path>")
    if source.argument == "none" and argument:
        raise ValueError(f"data source {name!r} takes no argument (got {spec!r})")
    return source, argument


def load(spec: str, config) -> MoleculeDataset:
    """All molecules of the source `spec` (e.g. `config.source`), read with `config`."""
    source, argument = resolve(spec)
    return source.load(argument, config)


def parse_targets(target: str, spec: str, available: Sequence[str] = ()) -> tuple[str, ...]:
    """'gap' / 'homo,lumo' / 'all' -> target names, validated against the source's (or
    `available`: a labelled file's own, `MoleculeDataset.target_names`)."""
    available = tuple(available) or resolve(spec)[0].targets
    names = available if target == "all" else tuple(t.strip() for t in target.split(","))
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"unknown target(s) {unknown}; choose from {available} or 'all'")
    dotted = [n for n in names if "." in n]  # config keys (checkpoints keep target units)
    if dotted:
        raise ValueError(f"target names {dotted} contain '.'; rename those columns or tags")
    return names


def parse_units(text: str) -> dict[str, str]:
    """`data.units` "logS=mol/L, tpsa=Å^2" -> {"logS": "mol/L", "tpsa": "Å^2"}."""
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, equals, unit = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"data.units entry {item!r} is not name=unit (in {text!r})")
        out[name.strip()] = unit.strip()
    return out


def complete(dataset: MoleculeDataset, spec: str) -> MoleculeDataset:
    """`dataset` without the molecules that lack a value of one of its targets (a
    labelled file's empty cells), saying how many and which."""
    missing = ~np.isfinite(dataset.targets).all(axis=1)
    if not missing.any():
        return dataset
    gaps = ~np.isfinite(dataset.targets).all(axis=0)
    lacking = [n for n, gap in zip(dataset.target_names, gaps, strict=True) if gap]
    print(
        f"{spec}: {int(missing.sum())} of {len(dataset)} molecules lack a value of "
        f"{lacking} and are left out (ids {dataset.ids[missing][:5].tolist()}...)"
    )
    return dataset.subset(np.flatnonzero(~missing))


def target_units(spec: str, dataset: MoleculeDataset, config) -> dict[str, str]:
    """Unit of every target (and "forces"): the source's, then what the file says, then
    `config.units` ("" for a unit nobody gives). Units only label values, so a
    registered dataset's own are not overridden; a file's energy unit gives its forces'."""
    source = resolve(spec)[0]
    units = {**source.units, **dataset.target_units}
    given = parse_units(config.get("units", ""))
    fixed = sorted(set(given) & set(source.units)) if source.targets else []
    if fixed:
        raise ValueError(
            f"data.units cannot relabel {fixed}: {source.name} gives them in "
            f"{[source.units[n] for n in fixed]} (values are never converted)"
        )
    if "energy" in given and "forces" not in given:
        given["forces"] = f"{given['energy']}/Å"
    units.update(given)
    return {n: units.get(n, "") for n in (*dataset.target_names, "forces")}


def split_rows(
    n: int, sizes: Sequence[int], seed: int, limits: dict[str, int]
) -> dict[str, np.ndarray]:
    """The one split rule, as dataset rows: a seeded permutation of range(n) cut into
    `sizes` (train, valid; the rest is test), each part then cut to its prefix
    `limits[name]` (-1 = all).

    Cutting after the permutation keeps a small run's splits prefixes of the full ones:
    a 10k-molecule CPU run trains on part of the same train split and tests on part of
    the same test split a full run uses.
    """
    parts = dict(zip(SPLITS, split_indices(n, sizes, seed), strict=False))
    out = {}
    for name, limit in limits.items():
        out[name] = parts[name] if limit < 0 else parts[name][:limit]
        if len(out[name]) == 0:
            raise DataError(f"the {name} split is empty (n_{name}={limit}, {n} molecules)")
    return out


def split(
    dataset: MoleculeDataset, sizes: Sequence[int], seed: int, limits: dict[str, int]
) -> dict[str, MoleculeDataset]:
    """`split_rows` of `dataset`, each part copied out (`dataset.subset`)."""
    rows = split_rows(len(dataset), sizes, seed, limits)
    return {name: dataset.subset(r) for name, r in rows.items()}


def read_split_file(path: str, n: int) -> dict[str, np.ndarray]:
    """TorchMD-Net's `splits.npz` (`idx_train`, `idx_val`, `idx_test`: dataset rows) ->
    {"train", "valid", "test"} index arrays; a clear error for a missing key, rows outside
    0..n-1 or a row in two parts."""
    try:
        with np.load(path) as f:
            parts = {ours: np.asarray(f[theirs]) for ours, theirs in SPLIT_FILE_KEYS.items()}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz split file ({e})") from e
    except KeyError as e:
        needs = sorted(SPLIT_FILE_KEYS.values())
        raise DataError(f"{path}: split file lacks {e} (needs {needs})") from None
    for name, rows in parts.items():
        key = SPLIT_FILE_KEYS[name]
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise DataError(f"{path}: {key} must be 1-d integers, got {rows.dtype} {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise DataError(f"{path}: {key} has rows outside 0..{n - 1} (the dataset has {n})")
    every = np.concatenate(list(parts.values()))
    if len(np.unique(every)) != len(every):
        raise DataError(f"{path}: a row appears twice across idx_train/idx_val/idx_test")
    return parts


def with_spectra(dataset: MoleculeDataset, config) -> MoleculeDataset:
    """The molecules of `dataset` (a QM9 source) that `config.spectra` has spectra for,
    joined by QM9 index, with those spectra: what the paper's Table 1 trains on. The
    geometries stay `dataset`'s."""
    if resolve(config.source)[0].name != "qm9":
        raise ValueError(
            f"data.with_spectra joins spectra to molecules by QM9 index: data.source must be "
            f"'qm9', not {config.source!r}"
        )
    spectra_config = ml_collections.ConfigDict(config.to_dict())
    spectra_config.geometry = "qm9"  # the spectra store's molecules checked against QM9's
    spectra = load(config.spectra, spectra_config)
    row_of = {int(i): r for r, i in enumerate(dataset.ids)}
    keep = np.array([m for m, i in enumerate(spectra.ids) if int(i) in row_of], np.int64)
    if len(keep) == 0:
        raise DataError(f"{config.spectra}: none of its {len(spectra)} molecules is in QM9")
    print(f"{config.spectra}: {len(keep)} of {len(dataset)} molecules have spectra")
    joined = dataset.subset([row_of[int(i)] for i in spectra.ids[keep]])
    return dataclasses.replace(joined, spectra={k: v[keep] for k, v in spectra.spectra.items()})


def finetuning_rows(dataset: MoleculeDataset, config) -> dict[str, np.ndarray]:
    """Train/valid/test dataset rows by the source's split rule (QM9's proportions for
    `with_spectra` subsets), or from `config.split_file` (TorchMD-Net's splits.npz
    layout), cut to `n_train/n_valid/n_test`."""
    limits = {name: config[f"n_{name}"] for name in SPLITS}
    if config.get("split_file"):
        parts = read_split_file(config.split_file, len(dataset))
        return {k: v if limits[k] < 0 else v[: limits[k]] for k, v in parts.items()}
    if config.get("with_spectra"):
        sizes = _scaled_sizes(len(dataset), config)
    else:
        sizes = resolve(config.source)[0].split_sizes(len(dataset), config)
    return split_rows(len(dataset), sizes, config.split_seed, limits)


def finetuning_splits(dataset: MoleculeDataset, config) -> dict[str, MoleculeDataset]:
    """`finetuning_rows` of `dataset`, each part copied out."""
    return {k: dataset.subset(v) for k, v in finetuning_rows(dataset, config).items()}


def write_split_file(path: str, rows: dict[str, np.ndarray]) -> None:
    """The rows a run used, as TorchMD-Net's splits.npz (`read_split_file` reads it back)."""
    write_npz(path, {SPLIT_FILE_KEYS[k]: np.asarray(v, np.int64) for k, v in rows.items()})


def pretraining_rows(n: int, config) -> dict[str, np.ndarray]:
    """Rows of n molecules: all but `n_valid` for training (cut to `n_train`), `n_valid`
    to validate; or `config.split_file`'s idx_train / idx_val (its idx_test, e.g. the
    molecules a later fine-tuning tests on, are left out of pre-training). Rows, not
    copies: pre-training sets are read from memory-mapped stores."""
    if config.get("split_file"):
        parts = read_split_file(config.split_file, n)
        train = parts["train"] if config.n_train < 0 else parts["train"][: config.n_train]
        return {"train": train, "valid": parts["valid"]}
    if not 0 < config.n_valid < n:
        raise ValueError(f"n_valid={config.n_valid} must be between 1 and {n - 1} ({n} molecules)")
    limits = {"train": config.n_train, "valid": -1}
    return split_rows(n, (n - config.n_valid, config.n_valid), config.split_seed, limits)


# --- molecule sources -------------------------------------------------------------------


def _qm9_sizes(n: int, config) -> Sequence[int]:
    return QM9_SPLIT_SIZES  # 110k / 10k / rest, the official QM9 split sizes


def _md17_sizes(n: int, config) -> Sequence[int]:
    sizes = (config.n_train, config.n_valid)  # exactly 950 / 50 frames, the rest tests
    if min(sizes) < 1 or sum(sizes) >= n:
        raise DataError(
            f"{config.source}: MD17 needs n_train, n_valid >= 1 (e.g. 950, 50) "
            f"leaving test frames of {n}; got {sizes}"
        )
    return sizes


def _scaled_sizes(n: int, config) -> Sequence[int]:
    return int(n * 110 / 131), int(n * 10 / 131)  # a user's file: QM9's 110:10 proportions


def _load_file(kind: str) -> Callable[[str, object], MoleculeDataset]:
    def load_file(path: str, config) -> MoleculeDataset:
        reader = FILE_READERS.get(kind) or LABELLED_READERS[kind]
        options = {"add_hydrogens": True} if kind == "sdf" else {}
        records, skipped = reader(path, elements=config.elements, on_error="skip", **options)
        if skipped:
            print(f"{path}: skipped {len(skipped)} records, e.g. {skipped[0]}")
        labels = list(dict.fromkeys(k for r in records for k in r.properties))  # file order
        forces = all(r.forces is not None for r in records)
        return from_records(records, labels, source=path, forces=forces)

    return load_file


register(
    Source(
        "qm9",
        load=lambda _, config: load_qm9(config.cache_dir or None),
        targets=TARGET_NAMES,
        units=TARGET_UNITS,
        split_sizes=_qm9_sizes,
    )
)
register(
    Source(
        "md17",
        load=lambda path, _: md17.load_md17(path or md17.shipped_md17_path()),
        targets=md17.TARGETS,
        units=md17.UNITS,
        split_sizes=_md17_sizes,
        argument="optional",
    )
)
# A user's file: its targets are its numeric properties (CSV columns, SDF tags,
# extended-XYZ keys), units from "name [unit]" labels or `data.units`. SDF files of heavy
# atoms only (PCQM4Mv2's) get their hydrogens placed by RDKit.
for _kind in (*FILE_READERS, *LABELLED_READERS):
    _units = {"energy": "eV", "forces": "eV/Å"} if _kind == "extxyz" else {}  # ASE's units
    register(
        Source(
            _kind,
            load=_load_file(_kind),
            units=_units,
            split_sizes=_scaled_sizes,
            argument="required",
        )
    )
register(
    Source(
        "molstore",  # written once by experiments.convert_molecules (PCQM4Mv2), memory-mapped
        load=lambda path, _: molstore.open_store(path),
        split_sizes=_scaled_sizes,
        argument="required",
    )
)


# --- spectra sources: molecules with `spectra` filled -----------------------------------


def _load_spectra_store(folder: str, config) -> MoleculeDataset:
    """Sticks of a store folder ("": the shipped set) broadened onto the grids.

    Geometries come from QM9 by id (`config.geometry == "qm9"`, the equilibrium DFT
    structures denoising assumes) or from the store ("spectra": the GFN2 geometries the
    spectra were computed at). Joining by id is checked: a store made from another source
    is refused, and so is any molecule whose atoms differ from its QM9 molecule's.
    """
    from molspectra_jax.spectroscopy import identity
    from molspectra_jax.spectroscopy.embedded import (
        dense_spectra,
        embedded_spectra_dir,
        load_spectra,
    )

    where, root = folder or "the shipped spectra", folder or embedded_spectra_dir()
    sticks = load_spectra(root)

    def dense():  # broadened once per store into the cache, memory-mapped after
        return dense_spectra(root, sticks, config.cache_dir or default_cache_dir())

    if config.geometry == "spectra":
        return MoleculeDataset(
            ids=sticks.ids,
            atomic_numbers=sticks.atomic_numbers,
            positions=sticks.positions.astype(np.float32),
            offsets=sticks.atom_offsets,
            targets=np.zeros((len(sticks), 0)),
            spectra=dense(),
        )
    if config.geometry != "qm9":
        raise ValueError(f"unknown geometry {config.geometry!r}; use 'qm9' or 'spectra'")
    source = identity.read(root)["source"]
    if source.get("kind") not in (None, "qm9"):
        raise DataError(
            f"{where}: its molecules come from {source['label']}, so its ids are not QM9 "
            "indices; use the store's own geometries (geometry='spectra')"
        )
    qm9 = load_qm9(config.cache_dir or None).select_targets(())
    row_of = {int(i): r for r, i in enumerate(qm9.ids)}
    missing = [int(i) for i in sticks.ids if int(i) not in row_of]
    if missing:
        raise DataError(f"{where}: molecule ids {missing[:5]} are not QM9 indices")
    molecules = qm9.subset([row_of[int(i)] for i in sticks.ids])
    wrong = different_atoms(
        sticks.atomic_numbers, sticks.atom_offsets, molecules.atomic_numbers, molecules.offsets
    )
    if len(wrong):
        raise join_error(
            where,
            "differ in their atoms from the QM9 molecule of their id",
            wrong,
            len(sticks),
            lambda m: (
                f"id {sticks.ids[m]}: the store holds "
                f"{formula(sticks.molecule(m)[0])}, QM9 {sticks.ids[m]} is "
                f"{formula(molecules.molecule(m)[0])}"
            ),
            "the store was not made from QM9: use its own geometries (geometry='spectra')",
        )
    # Broadened last (the costly part, the first time), once the join is known good.
    return dataclasses.replace(molecules, spectra=dense())


def _load_qm9s(folder: str, config) -> MoleculeDataset:
    from molspectra_jax.data.qm9s import KINDS, join_with_qm9, load_qm9s

    spectra = load_qm9s(folder)
    qm9 = load_qm9(config.cache_dir or None).select_targets(())
    rows, spectra_rows = join_with_qm9(spectra, qm9, where=f"qm9s:{folder}")
    print(f"qm9s:{folder}: {len(rows)} of {len(spectra.ids)} QM9S molecules joined with QM9")
    # The converted arrays stay on disk: each batch reads its own rows (QM9S: ~4 GB).
    dense = {k: MappedRows(getattr(spectra, k).filename, spectra_rows) for k in KINDS}
    return dataclasses.replace(qm9.subset(rows), spectra=dense)


register(Source("embedded", load=_load_spectra_store))
register(Source("store", load=_load_spectra_store, argument="required"))
register(Source("qm9s", load=_load_qm9s, argument="required"))


# --- molecules for spectra generation ---------------------------------------------------

SOURCES = ("qm9", "sdf", "xyz", "smiles")  # what `experiments.generate_spectra` accepts
EMBEDDED_SEED = 0  # the shipped set is the first N molecules of this QM9 order


@dataclasses.dataclass(frozen=True)
class MoleculeSource:
    """Molecules to compute spectra for, in order.

    Attributes:
      ids: [M] int molecule ids (QM9 index, or 1-based record number for files).
      get: position in `ids` -> (atomic_numbers [n], positions [n, 3] Å).
      names: [M] record names (files), or None for QM9.
      label: description recorded in the shards' metadata.
      kind: "qm9", "sdf", "xyz" or "smiles"; path: the file (absolute), None for QM9;
        seed: the QM9 order seed, None for files.
      skipped: one message per unreadable record left out (files read with "skip").
    """

    ids: np.ndarray
    get: Callable[[int], tuple[np.ndarray, np.ndarray]]
    names: list[str] | None
    label: str
    kind: str = ""
    path: str | None = None
    seed: int | None = None
    skipped: tuple[str, ...] = ()

    @property
    def identity(self) -> dict:
        """What a spectra store records of its source (`spectroscopy.identity`)."""
        return {"kind": self.kind, "path": self.path, "seed": self.seed, "label": self.label}


def qm9_order(all_ids: np.ndarray, seed: int = EMBEDDED_SEED) -> np.ndarray:
    """The fixed seeded order of QM9 ids; the shipped set is its first N entries."""
    return np.asarray(all_ids)[np.random.default_rng(seed).permutation(len(all_ids))]


def qm9_source(limit: int | None = None, seed: int = EMBEDDED_SEED) -> MoleculeSource:
    """The first `limit` QM9 molecules of the seeded order (B3LYP geometries from qm9pack)."""
    dataset = load_qm9()
    order = qm9_order(dataset.ids, seed)[:limit]
    row = {int(i): r for r, i in enumerate(dataset.ids)}
    positions = [row[int(i)] for i in order]
    return MoleculeSource(
        ids=order,
        get=lambda p: dataset.molecule(positions[p]),
        names=None,
        label=f"qm9pack QM9, seeded order (seed {seed})",
        kind="qm9",
        seed=int(seed),
    )


def file_source(
    kind: str, path: str, limit: int | None = None, on_error: str = "raise"
) -> MoleculeSource:
    """The first `limit` molecules of an SDF, XYZ or SMILES file; ids are their 1-based
    record numbers, so a record skipped (`on_error="skip"`) leaves a gap, not a shift."""
    if kind not in FILE_READERS:
        raise ValueError(f"unknown molecule source {kind!r}; choose from {list(SOURCES)}")
    records, skipped = FILE_READERS[kind](path, on_error=on_error)
    records = records[:limit]
    return MoleculeSource(
        ids=np.array([r.number for r in records], np.int64),
        get=lambda p: (records[p].atomic_numbers, records[p].positions),
        names=[r.name for r in records],
        label=f"{kind} file {path}",
        kind=kind,
        path=os.path.abspath(path),
        skipped=tuple(skipped),
    )


def make_source(
    kind: str,
    path: str | None = None,
    limit: int | None = None,
    seed: int = EMBEDDED_SEED,
    on_error: str = "raise",
) -> MoleculeSource:
    """Dispatch on `kind` ("qm9", "sdf", "xyz", "smiles"); files need `path` and are read
    with `on_error` ("raise": the first unreadable record stops; "skip": it is listed)."""
    if kind == "qm9":
        return qm9_source(limit, seed)
    if path is None:
        raise ValueError(f"--source {kind} needs --input FILE")
    return file_source(kind, path, limit, on_error)
