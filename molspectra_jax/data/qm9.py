"""QM9 (134k small organic molecules, B3LYP/6-31G(2df,p)) from the PyPI package qm9pack.

qm9pack ships all 130,831 molecules as CSV inside its wheel, so nothing is downloaded
at run time. The CSVs are parsed once (~10 s) into a `MoleculeDataset` with the 12
targets converted to the units of the MolSpectra paper (Table 2), cached as one
`.npz` with an atomic write, and reused until the source or the format changes.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import zipfile
from collections.abc import Iterable

import numpy as np

from molspectra_jax.data.records import DataError, MoleculeDataset

HARTREE_TO_MEV = 27211.386245988
FORMAT_VERSION = "1"

# (name used in configs, qm9pack column, factor to the paper's unit, unit)
TARGETS = (
    ("mu", "Dipole_debye", 1.0, "D"),
    ("alpha", "Polarizability_bohr3", 1.0, "a0^3"),
    ("homo", "HOMO_au", HARTREE_TO_MEV, "meV"),
    ("lumo", "LUMO_au", HARTREE_TO_MEV, "meV"),
    ("gap", "HOMO_LUMO_gap_au", HARTREE_TO_MEV, "meV"),
    ("r2", "R2_bohr2", 1.0, "a0^2"),
    ("zpve", "ZPVE_au", HARTREE_TO_MEV, "meV"),
    ("u0", "InternalEnergy_0K_au", HARTREE_TO_MEV, "meV"),
    ("u", "InternalEnergy_298K_au", HARTREE_TO_MEV, "meV"),
    ("h", "Enthalphy_298K_au", HARTREE_TO_MEV, "meV"),  # sic, qm9pack's spelling
    ("g", "GibbsFreeEnergy_298K_au", HARTREE_TO_MEV, "meV"),
    ("cv", "Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol/K"),
)
TARGET_NAMES = tuple(t[0] for t in TARGETS)
TARGET_UNITS = {t[0]: t[3] for t in TARGETS}
QM9_SPLIT_SIZES = (110_000, 10_000)  # train, valid; the rest is test (Coord, MolSpectra)

_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


def default_cache_dir() -> str:
    """$MOLSPECTRA_CACHE, else ~/.cache/molspectra_jax."""
    return os.environ.get(
        "MOLSPECTRA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "molspectra_jax")
    )


def load_qm9(cache_dir: str | None = None, *, verbose: bool = True) -> MoleculeDataset:
    """All of QM9 as a `MoleculeDataset` (ids = QM9 index, 1-based; targets in paper units).

    The first call parses qm9pack's CSVs and writes `<cache_dir>/qm9_v<FORMAT>.npz`;
    later calls load that file unless qm9pack's files or FORMAT_VERSION changed. Where
    qm9pack is not installed (e.g. a machine that was handed only the cache file), a
    readable cache is used as it is.
    """
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"qm9_v{FORMAT_VERSION}.npz")
    has_source = importlib.util.find_spec("qm9pack") is not None
    fingerprint = _source_fingerprint() if has_source else None
    if os.path.exists(path):
        try:
            dataset, meta = MoleculeDataset.load(path)
            if fingerprint is None or meta.get("source") == fingerprint:
                return dataset
        # Corrupt cache: rebuild it. An empty file raises EOFError and a truncated
        # one BadZipFile, neither of which is an OSError or ValueError.
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            if verbose:
                print(f"QM9 cache {path} unreadable ({e}); rebuilding")
    if verbose:
        print(f"Converting QM9 from qm9pack into {path} (once, ~10 s) ...", flush=True)
    dataset = parse_qm9pack_csvs(_qm9pack_data_dir())
    dataset.save(path, source=fingerprint, format=FORMAT_VERSION)
    return dataset


def parse_qm9pack_csvs(data_dir: str) -> MoleculeDataset:
    """Parse qm9pack's CSV parts (columns Index, Elements, XYZ_Ang and the 12 targets)."""
    columns = ["Index", "Elements", "XYZ_Ang"] + [t[1] for t in TARGETS]
    df = _read_csvs(data_dir, columns)
    atomic_numbers, positions, counts = [], [], []
    for index, elements, xyz in zip(df["Index"], df["Elements"], df["XYZ_Ang"], strict=True):
        z = [_SYMBOL_TO_Z[s.strip(" '\"")] for s in elements.strip("[]").split(",")]
        # Not JSON ("0." occurs), but a flat list of Python floats once unbracketed.
        pos = np.array(xyz.replace("[", "").replace("]", "").split(","), np.float32)
        pos = pos.reshape(-1, 3)
        if pos.shape != (len(z), 3):
            raise DataError(f"qm9pack molecule {index}: {len(z)} elements but coords {pos.shape}")
        atomic_numbers.append(z)
        positions.append(pos)
        counts.append(len(z))
    targets = np.stack(
        [df[column].to_numpy(np.float64) * factor for _, column, factor, _ in TARGETS], axis=1
    )
    return MoleculeDataset(
        ids=df["Index"].to_numpy(np.int64),
        atomic_numbers=np.concatenate([np.asarray(z, np.int32) for z in atomic_numbers]),
        positions=np.concatenate(positions),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        targets=targets,
        target_names=TARGET_NAMES,
    )


def harmonic_frequencies(ids: Iterable[int]) -> dict[int, np.ndarray]:
    """QM9's B3LYP/6-31G(2df,p) harmonic frequencies of molecules `ids` (QM9 indices).

    Read from qm9pack's CSVs (column Harmonic_Freq_cmi), which `load_qm9` does not keep.

    Returns:
      {QM9 index: [3N-6] cm^-1} for those of `ids` that QM9 has.
    """
    wanted = {int(i) for i in ids}
    table = _read_csvs(_qm9pack_data_dir(), ["Index", "Harmonic_Freq_cmi"])
    table = table[table["Index"].isin(wanted)]
    return {
        int(index): np.array(ast.literal_eval(freqs), float)
        for index, freqs in zip(table["Index"], table["Harmonic_Freq_cmi"], strict=True)
    }


def _read_csvs(data_dir: str, columns: list[str]):
    """`columns` of all of qm9pack's CSV parts as one pandas DataFrame."""
    import pandas as pd  # heavy; only the one-off conversions need it

    frames = []
    for name in _CSV_FILES:
        file = os.path.join(data_dir, name)
        try:
            frames.append(pd.read_csv(file, usecols=columns))
        except (OSError, ValueError) as e:
            raise DataError(f"{file}: cannot read QM9 CSV ({e})") from e
    return pd.concat(frames, ignore_index=True)


def _qm9pack_data_dir() -> str:
    # find_spec locates the package without importing it: qm9pack's __init__ imports
    # pkg_resources, which setuptools >= 81 no longer ships.
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("QM9 needs the PyPI package qm9pack: pip install qm9pack")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _source_fingerprint() -> str:
    data_dir = _qm9pack_data_dir()
    sizes = [os.path.getsize(os.path.join(data_dir, f)) for f in _CSV_FILES]
    return f"qm9pack=={importlib.metadata.version('qm9pack')};sizes={sizes}"
