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


# Standard atomic weights (u, IUPAC, as ASE and TorchMD-Net tabulate them) for Z = 1..99;
# 0 at index 0 (padding). Centres of mass of the dipole and spatial-extent heads.
ATOMIC_MASSES = np.array(
    [0.0]
    + """
    1.008 4.002602 6.94 9.0121831 10.81 12.011 14.007 15.999 18.998403163 20.1797
    22.98976928 24.305 26.9815385 28.085 30.973761998 32.06 35.45 39.948 39.0983 40.078
    44.955908 47.867 50.9415 51.9961 54.938044 55.845 58.933194 58.6934 63.546 65.38
    69.723 72.63 74.921595 78.971 79.904 83.798 85.4678 87.62 88.90584 91.224 92.90637
    95.95 97.90721 101.07 102.9055 106.42 107.8682 112.414 114.818 118.71 121.76 127.6
    126.90447 131.293 132.90545196 137.327 138.90547 140.116 140.90766 144.242 144.91276
    150.36 151.964 157.25 158.92535 162.5 164.93033 167.259 168.93422 173.054 174.9668
    178.49 180.94788 183.84 186.207 190.23 192.217 195.084 196.966569 200.592 204.38
    207.2 208.9804 208.98243 209.98715 222.01758 223.01974 226.02541 227.02775 232.0377
    231.03588 238.02891 237.04817 244.06421 243.06138 247.07035 247.07031 251.07959
    252.083
""".split(),
    float,
)


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
