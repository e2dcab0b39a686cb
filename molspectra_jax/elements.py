"""Element symbols and Hill formulas (no dependencies: data, spectroscopy and the
experiments all name molecules with them)."""

from __future__ import annotations

import collections

import numpy as np

# Index = atomic number; "X" at 0 (padding). Up to Xe: the readers accept organic
# elements only, anything beyond is written "Z<number>".
ELEMENT_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe"
).split()


def symbol(z: int) -> str:
    """ "C" for 6; "Z<z>" outside the table."""
    return ELEMENT_SYMBOLS[z] if 0 < z < len(ELEMENT_SYMBOLS) else f"Z{z}"


def formula(atomic_numbers) -> str:
    """Hill formula, e.g. [6, 6, 8, 1, 1, 1, 1, 1, 1] -> "C2H6O" (C, H first when there is
    carbon; otherwise alphabetical)."""
    counts = collections.Counter(symbol(z) for z in np.asarray(atomic_numbers, np.int64).tolist())
    first = [s for s in ("C", "H") if s in counts] if "C" in counts else []
    order = first + sorted(s for s in counts if s not in first)
    return "".join(s + (str(counts[s]) if counts[s] > 1 else "") for s in order)
