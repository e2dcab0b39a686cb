"""QM9S spectra release (Zou et al. 2023) -> the project's binary format, joined by id.

The release ships `ir_boraden.csv`, `raman_boraden.csv` (3501 columns, 500-4000 cm^-1)
and `uv_boraden.csv` (701 columns, 1-15 eV): a header row of grid values, then one row
per molecule whose first column is the molecule's number **in QM9S** (0-based, the row
of `qm9s.pt`), not its QM9 index: QM9S keeps ~129.8k of QM9's 133,885 molecules. The
QM9 index of each QM9S number is in the per-molecule files of `qm9s_csv.zip` (line 0:
QM9S number, QM9 number, SMILES, atom count), so conversion reads those too.

The CSVs are ~8 GB, so they are streamed in chunks and converted once into float32
`.npy` files that are memory-mapped afterwards. Rows are matched **by id, never by row
order**: the files do not hold the same molecules (the release has a one-molecule gap);
molecules missing from any file are left out and listed in the conversion report.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import zipfile
from collections.abc import Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from molspectra_jax import files
from molspectra_jax.data.records import DataError, join_error
from molspectra_jax.spectra import SPECTRA

FORMAT_VERSION = "2"
KINDS = tuple(name for name, t in SPECTRA.items() if t.qm9s_file)  # ("uv", "ir", "raman")
FILES = {name: SPECTRA[name].qm9s_file for name in KINDS}
GRIDS = {name: SPECTRA[name].grid.points() for name in KINDS}
MOLECULE_FILES = ("qm9s_csv.zip", "qm9s_csv")  # the per-molecule files: zip or unpacked


@dataclasses.dataclass(frozen=True)
class MoleculeTable:
    """Line 0 of every QM9S molecule file: `qm9s_ids`, `qm9_ids`, `n_atoms` [M] int64 and
    `smiles` [M] str, sorted by `qm9s_ids`."""

    qm9s_ids: np.ndarray
    qm9_ids: np.ndarray
    n_atoms: np.ndarray
    smiles: np.ndarray


@dataclasses.dataclass(frozen=True)
class Qm9sSpectra:
    """Converted QM9S spectra, rows aligned: `ids [M]` QM9S numbers (sorted), `qm9_ids [M]`
    QM9 indices, `n_atoms [M]`; `uv [M, 701]`, `ir [M, 3501]`, `raman [M, 3501]` float32
    (memory-mapped)."""

    ids: np.ndarray
    qm9_ids: np.ndarray
    n_atoms: np.ndarray
    uv: np.ndarray
    ir: np.ndarray
    raman: np.ndarray


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def parse_molecule_header(lines: list[str], name: str) -> tuple[int, int, str, int]:
    """(QM9S number, QM9 number, SMILES, atom count) from a molecule file's first lines.

    Line 0 holds `number, QM9 number, SMILES, atoms`; the release writes the files with
    pandas, so a header row and a leading row-index column may come first. The SMILES is
    the first non-numeric field; the two numbers before it and the one after are read.
    """
    for line in lines:
        fields = [f.strip() for f in line.strip().split(",")]
        text = [i for i, f in enumerate(fields) if f and not _is_number(f)]
        if not text:
            continue  # a pandas header row of column numbers
        s = text[0]
        around = (s - 2, s - 1, s + 1)
        if s >= 2 and s + 1 < len(fields) and all(_is_number(fields[i]) for i in around):
            qm9s_id, qm9_id, n_atoms = (int(float(fields[i])) for i in around)
            return qm9s_id, qm9_id, fields[s], n_atoms
    raise DataError(f"{name}: no 'QM9S number, QM9 number, SMILES, atoms' line at the top")


def _molecule_files(path: str) -> Iterator[tuple[str, list[str]]]:
    """(name, first two lines) of every `.csv` in a folder or zip, in name order."""
    if os.path.isfile(path):
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path}: not a readable zip archive")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for name in sorted(n for n in names if n.endswith(".csv") and "__MACOSX" not in n):
                yield f"{path}:{name}", _first_lines(archive.open, name, f"{path}:{name}")
        return
    for name in sorted(n for n in os.listdir(path) if n.endswith(".csv")):
        full = os.path.join(path, name)
        yield full, _first_lines(functools.partial(open, mode="rb"), full, full)


def _first_lines(open_binary, member: str, name: str) -> list[str]:
    """First two lines of `open_binary(member)` as UTF-8; errors name the file."""
    try:
        with io.TextIOWrapper(open_binary(member), encoding="utf-8") as f:
            return [f.readline(), f.readline()]
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise DataError(f"{name}: unreadable ({type(e).__name__}: {e})") from None


def read_molecule_table(path: str, progress: bool = False) -> MoleculeTable:
    """Read line 0 of every molecule file in `qm9s_csv.zip` or an unpacked `qm9s_csv/`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"QM9S molecule files {path} not found")
    rows = [
        parse_molecule_header(lines, name)
        for name, lines in tqdm(
            _molecule_files(path), desc="molecule files", unit=" files", disable=not progress
        )
    ]
    if not rows:
        raise DataError(f"{path}: no molecule .csv files")
    qm9s_ids, qm9_ids, smiles, n_atoms = zip(*rows, strict=True)
    order = np.argsort(qm9s_ids, kind="stable")
    table = MoleculeTable(
        qm9s_ids=np.asarray(qm9s_ids, np.int64)[order],
        qm9_ids=np.asarray(qm9_ids, np.int64)[order],
        n_atoms=np.asarray(n_atoms, np.int64)[order],
        smiles=np.asarray(smiles, dtype=str)[order],
    )
    for field in ("qm9s_ids", "qm9_ids"):
        values, counts = np.unique(getattr(table, field), return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{path}: {field} {values[counts > 1][:5].tolist()} occur twice")
    return table


def _chunks(path: str, chunk_rows: int, **kwargs) -> Iterator[tuple[int, pd.DataFrame]]:
    """(1-based data row of its first line, chunk) of a release CSV, streamed; a row with
    more values than the header, or an unreadable file, raises DataError naming the file."""
    row = 1
    try:
        for chunk in pd.read_csv(path, chunksize=chunk_rows, **kwargs):
            yield row, chunk
            row += len(chunk)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: malformed CSV ({str(e).strip()})") from None


def _id_column(path: str, chunk: pd.DataFrame, row: int) -> np.ndarray:
    """[rows] int64 QM9S numbers of a chunk whose first data row is `row`."""
    ids = pd.to_numeric(chunk.iloc[:, 0], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(ids) | (ids != np.round(ids))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}, data row {row + r}: molecule number {chunk.iloc[r, 0]!r} is not an integer"
        )
    return ids.astype(np.int64)


def _spectra_values(path: str, chunk: pd.DataFrame, row: int) -> np.ndarray:
    """[rows, width] float32 spectra of a chunk; a short row (pandas pads it with NaN) or a
    value that is no number raises DataError naming the file, the row and the molecule."""
    columns = chunk.iloc[:, 1:]
    try:
        values = columns.to_numpy(np.float32)
    except (TypeError, ValueError):  # a text cell: find it below
        values = columns.apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    bad = ~np.isfinite(values)  # [rows, width]
    if bad.any():
        r = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(
            f"{path}, data row {row + r} (QM9S number {chunk.iloc[r, 0]}): "
            f"{int(bad[r].sum())} of {values.shape[1]} spectrum values missing or not numbers"
        )
    return values


def read_header(path: str, kind: str) -> int:
    """Check a release CSV's grid header; returns its number of spectrum columns."""
    try:
        header = pd.read_csv(path, nrows=0).columns[1:]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable CSV header ({e})") from None
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
    parts = [_id_column(path, chunk, row) for row, chunk in _chunks(path, chunk_rows, usecols=[0])]
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate molecule ids")
    return ids


def _find_molecule_files(release_dir: str) -> str:
    for name in MOLECULE_FILES:
        if os.path.exists(os.path.join(release_dir, name)):
            return os.path.join(release_dir, name)
    raise FileNotFoundError(
        f"{release_dir}: neither {' nor '.join(MOLECULE_FILES)} found; the per-molecule files "
        "map QM9S numbers (the spectra CSVs' first column) to QM9 indices"
    )


def _copy_rows(
    csv_path: str,
    npy_path: str,
    kept: np.ndarray,
    width: int,
    chunk_rows: int,
    total: int,
    progress: bool,
) -> None:
    """Stream the rows of `csv_path` whose id is in `kept` [M] (sorted) into `npy_path`
    [M, width] float32, in the order of `kept`."""
    name = os.path.basename(csv_path)
    bar = tqdm(total=total, desc=name, unit=" rows", disable=not progress)
    with files.atomic_path(npy_path) as tmp, bar:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(kept), width))
        for row, chunk in _chunks(csv_path, chunk_rows):
            ids = _id_column(csv_path, chunk, row)
            rows = np.searchsorted(kept, ids)
            found = (rows < len(kept)) & (kept[np.minimum(rows, len(kept) - 1)] == ids)
            out[rows[found]] = _spectra_values(csv_path, chunk, row)[found]
            bar.update(len(chunk))
        out.flush()
        del out  # closes the memory map before the rename


def convert_qm9s(
    release_dir: str, out_dir: str, chunk_rows: int = 2000, progress: bool = False
) -> dict:
    """Convert the release into `<out_dir>/{ids,qm9_ids,n_atoms,uv,ir,raman}.npy` (once).

    Keeps the molecules present in all three CSVs and in the molecule files. Two streaming
    passes per CSV (ids, then values), so memory stays at one chunk. Every file is written
    under a temporary name and renamed when complete; `report.json` is written last.

    Returns:
      report: {"molecules": M kept, "missing": {kind: QM9S ids absent from that CSV},
      "no_molecule_file": QM9S ids with spectra but no molecule file}.
    """
    paths = {k: os.path.join(release_dir, FILES[k]) for k in KINDS}
    for kind, path in paths.items():
        if not os.path.exists(path):
            raise FileNotFoundError(f"QM9S release file {path} not found ({kind} spectra)")
        read_header(path, kind)
    table = read_molecule_table(_find_molecule_files(release_dir), progress)
    file_ids = {k: read_ids(p, chunk_rows) for k, p in paths.items()}
    everything = np.unique(np.concatenate(list(file_ids.values())))
    kept = np.intersect1d(everything, table.qm9s_ids)
    for ids in file_ids.values():
        kept = np.intersect1d(kept, ids)
    missing = {k: np.setdiff1d(everything, ids).tolist() for k, ids in file_ids.items()}
    table_rows = np.searchsorted(table.qm9s_ids, kept)

    for kind, path in paths.items():
        npy = os.path.join(out_dir, f"{kind}.npy")
        _copy_rows(path, npy, kept, len(GRIDS[kind]), chunk_rows, len(file_ids[kind]), progress)
    files.write_npy(os.path.join(out_dir, "ids.npy"), kept)
    files.write_npy(os.path.join(out_dir, "qm9_ids.npy"), table.qm9_ids[table_rows])
    files.write_npy(os.path.join(out_dir, "n_atoms.npy"), table.n_atoms[table_rows])
    report = {
        "format": FORMAT_VERSION,
        "molecules": int(len(kept)),
        "missing": missing,
        "no_molecule_file": np.setdiff1d(everything, table.qm9s_ids).tolist(),
    }
    files.write_json(os.path.join(out_dir, "report.json"), report)  # last: marks completion
    return report


def load_qm9s(out_dir: str) -> Qm9sSpectra:
    """Memory-map a folder written by `convert_qm9s`."""
    report_path = os.path.join(out_dir, "report.json")
    if not os.path.exists(report_path):
        raise FileNotFoundError(f"{out_dir}: no converted QM9S spectra (run convert_qm9s)")
    with open(report_path) as f:
        version = json.load(f).get("format")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{out_dir}: converted with format {version}, this version reads "
            f"{FORMAT_VERSION}; convert the release again"
        )
    arrays = {k: np.load(os.path.join(out_dir, f"{k}.npy"), mmap_mode="r") for k in KINDS}
    index = {k: np.load(os.path.join(out_dir, f"{k}.npy")) for k in ("ids", "qm9_ids", "n_atoms")}
    return Qm9sSpectra(**index, **arrays)


def join_with_qm9(
    spectra: Qm9sSpectra, dataset, where: str = "QM9S"
) -> tuple[np.ndarray, np.ndarray]:
    """Molecules in both, matched by QM9 index: (dataset rows [K], spectra rows [K]).

    The converted release holds each molecule's atom count, not its elements, so the
    join checks the counts.

    Args:
      dataset: a `MoleculeDataset` (e.g. `load_qm9()`) whose `ids` are QM9 indices.
      where: the converted folder, named in the error.
    Raises:
      DataError: a joined molecule's atom count differs between QM9S and the dataset,
        i.e. the two number molecules differently.
    """
    _, dataset_rows, spectra_rows = np.intersect1d(
        np.asarray(dataset.ids), spectra.qm9_ids, return_indices=True
    )
    counts = np.diff(np.asarray(dataset.offsets))[dataset_rows]
    wrong = np.flatnonzero(counts != spectra.n_atoms[spectra_rows])
    if len(wrong):
        raise join_error(
            where,
            "joined by QM9 index differ in atom count",
            wrong,
            len(counts),
            lambda i: (
                f"QM9 {dataset.ids[dataset_rows[i]]}: {counts[i]} atoms in QM9, "
                f"{spectra.n_atoms[spectra_rows[i]]} in QM9S {spectra.ids[spectra_rows[i]]}"
            ),
            "the QM9S molecule files and this QM9 number molecules differently",
        )
    return dataset_rows, spectra_rows
