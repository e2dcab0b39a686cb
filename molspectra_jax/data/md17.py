"""MD17 trajectories (Chmiela et al. 2017) in the sGDML npz layout, as fine-tuning data.

One file per molecule, unchanged from the release: `R [M, n, 3]` Å, `E [M]` or `[M, 1]`
kcal/mol, `F [M, n, 3]` kcal/mol/Å, `z [n]` atomic numbers. Each frame becomes one
molecule of a `MoleculeDataset` whose target is "energy" and whose per-atom targets are
the forces. The package ships the first 2,000 frames of ethanol (`assets/md17/`, from the
MIT-licensed mlff project) for demos and tests.
"""

from __future__ import annotations

import importlib.resources
import zipfile

import numpy as np

from molspectra_jax.data.records import DataError, MoleculeDataset

TARGETS = ("energy",)
UNITS = {"energy": "kcal/mol", "forces": "kcal/mol/Å"}


def shipped_md17_path() -> str:
    """The shipped sample: MD17 ethanol, first 2,000 frames, sGDML layout."""
    return str(importlib.resources.files("molspectra_jax") / "assets" / "md17" / "ethanol_2000.npz")


def load_md17(path: str) -> MoleculeDataset:
    """Every frame of an MD17 npz; raises DataError naming the file and the problem."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("R", "E", "F", "z") if k in f.files}
            present = f.files
    except FileNotFoundError:
        raise FileNotFoundError(f"MD17 file {path} not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable npz ({type(e).__name__}: {e})") from None
    missing = [k for k in ("R", "E", "F", "z") if k not in arrays]
    if missing:
        raise DataError(
            f"{path}: arrays {missing} missing (has {sorted(present)}); "
            "expected the sGDML layout R, E, F, z"
        )
    z, r, f_, energy = arrays["z"], arrays["R"], arrays["F"], arrays["E"]
    if z.ndim != 1 or z.dtype.kind not in "iuf":
        raise DataError(f"{path}: z {z.dtype} {z.shape} is not a vector of atomic numbers")
    bad = ~np.isfinite(z) | (z != np.round(z)) | (z < 1) | (z > 118)  # a cast would truncate
    if bad.any():
        raise DataError(
            f"{path}: z holds {z[bad][:5].tolist()} at atoms {np.flatnonzero(bad)[:5].tolist()}, "
            "not atomic numbers (integers 1..118)"
        )
    z = z.astype(np.int32)
    n = len(z)
    if r.ndim != 3 or r.shape[1:] != (n, 3) or f_.shape != r.shape or energy.size != len(r):
        raise DataError(
            f"{path}: shapes R {r.shape}, F {f_.shape}, E {arrays['E'].shape} do "
            f"not fit {n} atoms (z) per frame"
        )
    if len(r) == 0:
        raise DataError(f"{path}: no frames")
    if not (np.isfinite(r).all() and np.isfinite(f_).all() and np.isfinite(energy).all()):
        raise DataError(f"{path}: non-finite coordinates, energies or forces")
    m = len(r)
    return MoleculeDataset(
        ids=np.arange(m, dtype=np.int64),
        atomic_numbers=np.tile(z, m),
        positions=r.reshape(-1, 3).astype(np.float32),
        offsets=np.arange(m + 1, dtype=np.int64) * n,
        targets=energy.reshape(m, 1).astype(np.float64),
        target_names=TARGETS,
        atom_targets=f_.reshape(-1, 3).astype(np.float32),
    )
