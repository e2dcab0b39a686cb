"""Molecules users bring: SDF (3D conformers), XYZ (single or multi-frame), SMILES.

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
    return MoleculeRecord(name or f"{path}:{number}", z, pos, number=number)


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
        from rdkit import Chem
        from rdkit.Chem import AllChem

        smiles = entries[i][0]
        name = entries[i][1] if len(entries[i]) > 1 else smiles
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise DataError(f"{label}, record {i + 1}: invalid SMILES {smiles!r}")
        if mol.GetNumAtoms() == 0:  # RDKit parses "" to a molecule without atoms
            raise DataError(f"{label}, record {i + 1}: empty SMILES {smiles!r}")
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
            raise DataError(f"{label}, record {i + 1}: RDKit failed on {smiles!r} ({e})") from None
        if status != 0:
            raise DataError(f"{label}, record {i + 1}: RDKit could not embed {smiles!r} in 3D")
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int32)
        pos = np.asarray(mol.GetConformer().GetPositions(), np.float32)
        return MoleculeRecord(name, z, pos)

    if not entries:
        raise DataError(f"{label}: no SMILES found")
    return _collect(label, range(len(entries)), parse, elements, max_atoms, on_error)


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
