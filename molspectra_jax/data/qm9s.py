"""QM9S spectra release (Zou et al. 2023) -> the project's binary format, joined by id.

The release ships `ir_boraden.csv`, `raman_boraden.csv` (3501 columns, 500-4000 cm^-1)
and `uv_boraden.csv` (701 columns, 1-15 eV): a header row of grid values, then one row
per molecule whose first column is the molecule id. The files are ~8 GB, so they are
streamed in chunks and converted once into float32 `.npy` files that are memory-mapped
afterwards. Rows are matched **by id, never by row order**: the files do not hold the
same molecules (the release has a one-molecule gap between them); molecules missing
from any file are left out and listed in the conversion report.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd

FORMAT_VERSION = "1"
KINDS = ("uv", "ir", "raman")
FILES = {"uv": "uv_boraden.csv", "ir": "ir_boraden.csv", "raman": "raman_boraden.csv"}
GRIDS = {
    "uv": np.round(np.linspace(1.0, 15.0, 701), 6),
    "ir": np.linspace(500.0, 4000.0, 3501),
    "raman": np.linspace(500.0, 4000.0, 3501),
}


@dataclasses.dataclass(frozen=True)
class Qm9sSpectra:
    """Converted QM9S spectra: `ids [M]` int64 sorted; `uv [M, 701]`, `ir [M, 3501]`,
    `raman [M, 3501]` float32 (memory-mapped), rows aligned with `ids`."""

    ids: np.ndarray
    uv: np.ndarray
    ir: np.ndarray
    raman: np.ndarray


def read_header(path: str, kind: str) -> int:
    """Check a release CSV's grid header; returns its number of spectrum columns."""
    header = pd.read_csv(path, nrows=0).columns[1:]
    try:
        grid = np.array([float(c) for c in header])
    except ValueError as e:
        raise ValueError(f"{path}: header is not a grid of numbers ({e})") from None
    expected = GRIDS[kind]
    if grid.shape != expected.shape or not np.allclose(grid, expected, atol=1e-6):
        raise ValueError(
            f"{path}: grid {grid[:1]}..{grid[-1:]} ({len(grid)} points) is not the QM9S "
            f"{kind} grid {expected[0]}..{expected[-1]} ({len(expected)} points)"
        )
    return len(grid)


def read_ids(path: str, chunk_rows: int) -> np.ndarray:
    """First column of a release CSV, streamed: [rows] int64 in file order."""
    parts = [
        chunk.iloc[:, 0].to_numpy(np.int64)
        for chunk in pd.read_csv(path, usecols=[0], chunksize=chunk_rows)
    ]
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate molecule ids")
    return ids


def convert_qm9s(release_dir: str, out_dir: str, chunk_rows: int = 2000) -> dict:
    """Convert the three release CSVs into `<out_dir>/{ids,uv,ir,raman}.npy` (once).

    Two streaming passes per file (ids, then values), so memory stays at one chunk.
    Output files are written under temporary names and renamed when complete.

    Returns:
      report: {"molecules": M kept, "missing": {kind: ids absent from that file}}.
    """
    paths = {k: os.path.join(release_dir, FILES[k]) for k in KINDS}
    for kind, path in paths.items():
        if not os.path.exists(path):
            raise FileNotFoundError(f"QM9S release file {path} not found ({kind} spectra)")
        read_header(path, kind)
    file_ids = {k: read_ids(p, chunk_rows) for k, p in paths.items()}
    everything = np.unique(np.concatenate(list(file_ids.values())))
    kept = everything
    for ids in file_ids.values():
        kept = np.intersect1d(kept, ids)
    missing = {k: np.setdiff1d(everything, ids).tolist() for k, ids in file_ids.items()}

    os.makedirs(out_dir, exist_ok=True)
    for kind, path in paths.items():
        tmp = os.path.join(out_dir, f"{kind}.tmp.npy")
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(len(kept), len(GRIDS[kind]))
        )
        for chunk in pd.read_csv(path, chunksize=chunk_rows):
            ids = chunk.iloc[:, 0].to_numpy(np.int64)
            rows = np.searchsorted(kept, ids)
            found = (rows < len(kept)) & (kept[np.minimum(rows, len(kept) - 1)] == ids)
            out[rows[found]] = chunk.iloc[:, 1:].to_numpy(np.float32)[found]
        out.flush()
        del out
        os.replace(tmp, os.path.join(out_dir, f"{kind}.npy"))
    np.save(os.path.join(out_dir, "ids.tmp.npy"), kept)
    os.replace(os.path.join(out_dir, "ids.tmp.npy"), os.path.join(out_dir, "ids.npy"))
    report = {"format": FORMAT_VERSION, "molecules": int(len(kept)), "missing": missing}
    with open(os.path.join(out_dir, "report.tmp.json"), "w") as f:
        json.dump(report, f)
    os.replace(os.path.join(out_dir, "report.tmp.json"), os.path.join(out_dir, "report.json"))
    return report


def load_qm9s(out_dir: str) -> Qm9sSpectra:
    """Memory-map a folder written by `convert_qm9s`."""
    report_path = os.path.join(out_dir, "report.json")
    if not os.path.exists(report_path):
        raise FileNotFoundError(f"{out_dir}: no converted QM9S spectra (run convert_qm9s)")
    arrays = {k: np.load(os.path.join(out_dir, f"{k}.npy"), mmap_mode="r") for k in KINDS}
    return Qm9sSpectra(ids=np.load(os.path.join(out_dir, "ids.npy")), **arrays)


def join_with_qm9(spectra: Qm9sSpectra, dataset):
    """Molecules present in both; returns (dataset rows [K], spectra rows [K]) by id.

    Args:
      dataset: a `MoleculeDataset` (e.g. `load_qm9()`) whose `ids` are QM9 indices.
    """
    _, dataset_rows, spectra_rows = np.intersect1d(
        np.asarray(dataset.ids), spectra.ids, return_indices=True
    )
    return dataset_rows, spectra_rows
