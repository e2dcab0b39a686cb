"""Molecules users bring: SDF (3D conformers, numeric tags as properties), XYZ (single
or multi-frame), SMILES, CSV (a SMILES column and property columns) and extended XYZ
(energies, forces and per-frame properties, read with ASE).

Every reader returns `(records, skipped)`: the molecules read, and one message per
record that was skipped. With `on_error="raise"` (default) the first bad record raises
a `DataError` naming the file and the record; with `on_error="skip"` bad records are
collected in `skipped` so the caller can report the count. Nothing is ever silently
dropped or guessed. Each record read keeps its 1-based record `number` in the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

from molspectra_jax.data.records import (
    DEFAULT_ELEMENTS,
    DataError,
    MoleculeRecord,
    check_molecule,
)
from molspectra_jax.elements import ELEMENT_SYMBOLS

_Z = {s: z for z, s in enumerate(ELEMENT_SYMBOLS) if z > 0}
# Two atoms closer than this are one atom written twice (or coordinates lost, all at the
# origin): the shortest real bond, H2, is 0.74 Å.
MIN_DISTANCE = 0.1


def read_sdf(
    path: str,
    *,
    add_hydrogens: bool = False,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    max_atoms: int | None = None,
    on_error: str = "raise",
) -> tuple[list[MoleculeRecord], list[str]]:
    """3D molecules of an SDF file, hydrogens kept, in file order.

    Records with implicit hydrogens (heavy atoms only, common in docking SDFs) raise,
    since the model needs every atom in 3D; `add_hydrogens=True` places them with
    RDKit's `AddHs(addCoords=True)` instead.
    """
    from rdkit import Chem

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DataError(f"{path}: no SDF records found")  # RDKit: "Invalid input file"
    try:
        supplier = Chem.SDMolSupplier(path, removeHs=False, sanitize=True)
    except OSError as e:  # RDKit raises "File error: Bad input file" for a missing file
        raise DataError(f"{path}: cannot read ({e})") from e
    if supplier is None or len(supplier) == 0:
        raise DataError(f"{path}: no SDF records found")

    def parse(i: int):
        return sdf_record(supplier[i], path, i + 1, add_hydrogens)

    return _collect(path, range(len(supplier)), parse, elements, max_atoms, on_error)


def sdf_record(mol, path: str, number: int, add_hydrogens: bool) -> MoleculeRecord:
    """One parsed SDF record (an RDKit molecule, None if RDKit could not parse it) -> its
    record; `number` is 1-based. Raises DataError naming `path` and `number`."""
    from rdkit import Chem

    if mol is None:
        raise DataError(f"{path}, record {number}: RDKit cannot parse this SDF record")
    name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        raise DataError(f"{path}, record {number} ({name}): no 3D coordinates")
    implicit = sum(a.GetNumImplicitHs() for a in mol.GetAtoms())
    if implicit and not add_hydrogens:
        raise DataError(
            f"{path}, record {number} ({name}): {implicit} implicit hydrogens without "
            "coordinates; pass add_hydrogens=True to place them"
        )
    if implicit:
        mol = Chem.AddHs(mol, addCoords=True)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int32)
    pos = np.asarray(mol.GetConformer().GetPositions(), np.float32)
    tags = mol.GetPropsAsDict().items()  # RDKit's own start with "_"
    properties = {k: x for k, v in tags if k[:1] != "_" and (x := _float_or_none(v)) is not None}
    return MoleculeRecord(name or f"{path}:{number}", z, pos, number=number, properties=properties)


def read_sdf_blocks(
    path: str,
    first_number: int,
    blocks: Sequence[str],
    *,
    add_hydrogens: bool = False,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
) -> tuple[list[MoleculeRecord], list[str]]:
    """Records of consecutive SDF record texts (`blocks`, record `first_number` first), as
    `read_sdf(..., on_error="skip")` reads them: (records, one message per skipped one).

    The streaming path for files too large to hold (`data.molstore.sdf_chunks`)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # the skipped records' messages say why
    records, skipped = [], []
    for offset, block in enumerate(blocks):
        number = first_number + offset
        try:
            mol = Chem.MolFromMolBlock(block, removeHs=False, sanitize=True)
            record = sdf_record(mol, path, number, add_hydrogens)
            _check(path, number, record, elements, None)
        except DataError as e:
            skipped.append(str(e))
            continue
        records.append(record)
    return records, skipped


def read_xyz(
    path: str,
    *,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    max_atoms: int | None = None,
    on_error: str = "raise",
) -> tuple[list[MoleculeRecord], list[str]]:
    """Frames of a (multi-frame) XYZ file: count line, comment line, `El x y z` lines (Å)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text XYZ file (byte {e.start}: {e.reason})") from None
    frames, cursor = [], 0
    while cursor < len(lines):
        if not lines[cursor].strip():
            cursor += 1
            continue
        try:
            n = int(lines[cursor].split()[0])
            if n < 0:  # would move the cursor backwards (n = -2: forever)
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path}, record {len(frames) + 1} (line {cursor + 1}): "
                f"expected an atom count, got {lines[cursor]!r}"
            ) from None
        # A blank or a lone-count line among the atom lines: this frame has fewer atoms
        # than it declares and the next frame starts there; blame this one, read the next.
        body = lines[cursor + 2 : cursor + n + 2]
        end = next((j for j, line in enumerate(body) if _ends_frame(line)), len(body))
        frames.append((cursor, lines[cursor : cursor + 2 + end], end < len(body)))
        cursor += 2 + end

    def parse(i: int):
        start, block, cut = frames[i]
        n = int(block[0].split()[0])
        where = f"{path}, record {i + 1} (line {start + 1})"
        if cut:
            raise DataError(
                f"{where}: declares {n} atoms but has {len(block) - 2} atom lines before "
                f"line {start + len(block) + 1}"
            )
        if len(block) != n + 2:
            raise DataError(f"{where}: file ends after {max(len(block) - 2, 0)} of {n} atoms")
        z, pos = [], []
        for j, line in enumerate(block[2:]):
            fields = line.split()
            try:
                symbol = fields[0]
                number = int(symbol) if symbol.isdigit() else _Z[symbol.capitalize()]
                pos.append([float(v.replace("*^", "e")) for v in fields[1:4]])
            except (IndexError, KeyError, ValueError):
                raise DataError(f"{where}, line {start + 3 + j}: bad atom line {line!r}") from None
            if len(pos[-1]) != 3:
                raise DataError(f"{where}, line {start + 3 + j}: bad atom line {line!r}")
            z.append(number)
        name = block[1].strip() or f"{path}:{i + 1}"
        return MoleculeRecord(name, np.array(z, np.int32), np.array(pos, np.float32))

    if not frames:
        raise DataError(f"{path}: no XYZ frames found")
    return _collect(path, range(len(frames)), parse, elements, max_atoms, on_error)


def _ends_frame(line: str) -> bool:
    """Whether an XYZ line cannot be an atom line: blank, or an atom count alone."""
    fields = line.split()
    return not fields or (len(fields) == 1 and fields[0].isdigit())


def read_smiles(
    source: str | Sequence[str],
    *,
    seed: int = 0,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    max_atoms: int | None = None,
    on_error: str = "raise",
) -> tuple[list[MoleculeRecord], list[str]]:
    """3D molecules from SMILES: a `.smi` file (SMILES [name] per line) or a list.

    Hydrogens are added, a conformer embedded with ETKDGv3 (seeded) and relaxed with
    MMFF94 (UFF when MMFF has no parameters).
    """
    if isinstance(source, str):
        try:
            with open(source) as f:
                entries = [line.split() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise DataError(f"{source}: cannot read ({e})") from e
        label = source
    else:
        entries = [[s] for s in source]
        label = "<SMILES list>"

    def parse(i: int):
        smiles = entries[i][0]
        name = entries[i][1] if len(entries[i]) > 1 else smiles
        return embed_smiles(smiles, name, f"{label}, record {i + 1}", seed)

    if not entries:
        raise DataError(f"{label}: no SMILES found")
    return _collect(label, range(len(entries)), parse, elements, max_atoms, on_error)


def embed_smiles(smiles: str, name: str, where: str, seed: int = 0) -> MoleculeRecord:
    """One molecule in 3D from SMILES: hydrogens added, an ETKDGv3 conformer (seeded)
    relaxed with MMFF94 (UFF when MMFF has no parameters). Errors name `where`."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"{where}: invalid SMILES {smiles!r}")
    if mol.GetNumAtoms() == 0:  # RDKit parses "" to a molecule without atoms
        raise DataError(f"{where}: empty SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    try:
        status = AllChem.EmbedMolecule(mol, params)
        if status == 0 and AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol)
        elif status == 0:
            AllChem.UFFOptimizeMolecule(mol)
    except (RuntimeError, ValueError) as e:  # RDKit's own, e.g. "Bad Conformer Id"
        raise DataError(f"{where}: RDKit failed on {smiles!r} ({e})") from None
    if status != 0:
        raise DataError(f"{where}: RDKit could not embed {smiles!r} in 3D")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int32)
    pos = np.asarray(mol.GetConformer().GetPositions(), np.float32)
    return MoleculeRecord(name, z, pos)


def read_csv(
    path: str,
    *,
    smiles_column: str = "smiles",
    name_column: str = "",
    seed: int = 0,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    max_atoms: int | None = None,
    on_error: str = "raise",
) -> tuple[list[MoleculeRecord], list[str]]:
    """Molecules of a CSV table: 3D from the `smiles_column` (case-insensitive; as
    `read_smiles`), every column of numbers a property (header "name" or "name [unit]";
    empty cells stay missing, text in a column of numbers is an error; columns of text
    are not properties). `name_column` (default: a column "name" or "id" if there is
    one) names the records."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV file (byte {e.start}: {e.reason})") from None
    table = [row for row in table if any(cell.strip() for cell in row)]
    if len(table) < 2:
        raise DataError(f"{path}: no CSV rows below the header")
    header = [h.strip() for h in table[0]]
    lower = [h.lower() for h in header]
    if smiles_column.lower() not in lower:
        raise DataError(f"{path}: no SMILES column {smiles_column!r} in the header {header}")
    smiles_at = lower.index(smiles_column.lower())
    name_at = next((lower.index(c) for c in (name_column.lower(), "name", "id") if c in lower), -1)
    if name_column and name_at < 0:
        raise DataError(f"{path}: no name column {name_column!r} in the header {header}")
    # A property column: one whose first filled cell is a number (text columns such as a
    # formula or an InChI are not properties; text later in a number column is an error).
    columns = [
        j
        for j in range(len(header))
        if j not in (smiles_at, name_at) and _float_or_none(_first_filled(table[1:], j)) is not None
    ]

    def parse(i: int):
        row, where = table[i + 1], f"{path}, record {i + 1} (line {i + 2})"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} cells for {len(header)} columns")
        properties = {}
        for j in columns:
            cell = row[j].strip()
            if not cell:
                continue
            try:
                properties[header[j]] = float(cell)
            except ValueError:
                message = f"{where}: column {header[j]!r} holds {cell!r}, not a number"
                raise DataError(message) from None
        name = row[name_at].strip() if name_at >= 0 else row[smiles_at].strip()
        record = embed_smiles(row[smiles_at].strip(), name, where, seed)
        return dataclasses.replace(record, properties=properties)

    return _collect(path, range(len(table) - 1), parse, elements, max_atoms, on_error)


def read_extxyz(
    path: str,
    *,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    max_atoms: int | None = None,
    on_error: str = "raise",
) -> tuple[list[MoleculeRecord], list[str]]:
    """Frames of an extended XYZ file (ASE's reader): positions (Å), the frame's
    `energy` and `forces` (ASE's convention: eV, eV/Å) when it has them, and its other
    numeric scalar keys as properties. Periodic frames are refused (molecules only)."""
    try:
        from ase.io import read
    except ImportError as e:
        raise ImportError("extended XYZ needs ASE: pip install 'molspectra-jax[ase]'") from e
    try:
        frames = read(path, index=":", format="extxyz")
    except FileNotFoundError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except Exception as e:  # ASE raises bare ValueError/IndexError/XYZError by line
        message = f"{path}: not a readable extended XYZ file ({type(e).__name__}: {e})"
        raise DataError(message) from None
    if not frames:
        raise DataError(f"{path}: no extended XYZ frames found")

    def parse(i: int):
        atoms, where = frames[i], f"{path}, record {i + 1}"
        if atoms.pbc.any():
            raise DataError(f"{where}: periodic (pbc={atoms.pbc.tolist()}); molecules only")
        results = atoms.calc.results if atoms.calc is not None else {}
        scalars = {**results, **{k: v for k, v in atoms.info.items() if k not in results}}.items()
        properties = {k: float(v) for k, v in scalars if _is_number(v)}
        forces = results.get("forces", atoms.arrays.get("forces"))
        name = str(atoms.info.get("name", f"{path}:{i + 1}"))
        return MoleculeRecord(
            name,
            atoms.numbers.astype(np.int32),
            atoms.positions.astype(np.float32),
            properties=properties,
            forces=None if forces is None else np.asarray(forces, np.float32),
        )

    return _collect(path, range(len(frames)), parse, elements, max_atoms, on_error)


def _first_filled(rows, j: int) -> str:
    return next((row[j].strip() for row in rows if j < len(row) and row[j].strip()), "")


def _float_or_none(value) -> float | None:
    """`float(value)` of a number or numeric text; None for a bool or anything else."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _collect(source, indices: Iterable[int], parse, elements, max_atoms, on_error):
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    records, skipped = [], []
    for i in indices:
        try:
            record = parse(i)
            _check(source, i + 1, record, elements, max_atoms)
        except DataError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            continue
        records.append(dataclasses.replace(record, number=i + 1))
    if not records:
        raise DataError(f"{source}: no usable molecules ({len(skipped)} skipped: {skipped[:3]})")
    return records, skipped


def _check(source: str, number: int, record: MoleculeRecord, elements, max_atoms) -> None:
    check_molecule(
        source,
        f"{number} ({record.name})",
        record.atomic_numbers,
        record.positions,
        elements=elements,
        max_atoms=max_atoms,
        min_distance=MIN_DISTANCE,
    )
