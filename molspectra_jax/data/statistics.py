"""Target statistics from the train split: per-element reference values, mean, std."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from molspectra_jax.data.records import MoleculeDataset


class TargetStats(NamedTuple):
    """Train-split statistics of T targets (host, float64): `mean [T]` and `std [T]` of the
    residuals after the per-element reference values `atomref [Z, T]`."""

    mean: np.ndarray
    std: np.ndarray
    atomref: np.ndarray


def fit_target_stats(
    train: MoleculeDataset, targets: Sequence[str], use_atomref: Sequence[bool], max_z: int
) -> TargetStats:
    """Atomref (where `use_atomref`), then mean and std of the residuals, on `train`."""
    atomref = fit_atomref(train, targets, use_atomref, max_z)
    mean, std = target_statistics(train, targets, atomref)
    return TargetStats(mean, std, atomref)


def composition_matrix(dataset: MoleculeDataset, max_z: int) -> np.ndarray:
    """[M, max_z] count of each element in each molecule."""
    molecule = np.repeat(np.arange(len(dataset)), dataset.n_atoms)
    counts = np.zeros((len(dataset), max_z))
    np.add.at(counts, (molecule, dataset.atomic_numbers), 1.0)
    return counts


def fit_atomref(
    dataset: MoleculeDataset, targets: Sequence[str], use_atomref: Sequence[bool], max_z: int
) -> np.ndarray:
    """[max_z, T] least-squares per-element contributions (zero where not used).

    Fitting y ~ sum_z n_z a_z on the train split removes most of the variance of
    extensive energies (U0/U/H/G), so the network learns the small remainder.
    """
    counts = composition_matrix(dataset, max_z)
    present = counts.sum(0) > 0
    atomref = np.zeros((max_z, len(targets)))
    for t, (name, use) in enumerate(zip(targets, use_atomref, strict=True)):
        if use:
            coef, *_ = np.linalg.lstsq(counts[:, present], dataset.target(name), rcond=None)
            atomref[present, t] = coef
    return atomref


def target_statistics(
    dataset: MoleculeDataset, targets: Sequence[str], atomref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mean [T], std [T]) of each target after subtracting its atomref sum."""
    y = np.stack([dataset.target(name) for name in targets], axis=1)  # [M, T]
    residual = y - composition_matrix(dataset, atomref.shape[0]) @ atomref
    std = residual.std(0)
    return residual.mean(0), np.where(std > 0, std, 1.0)


def target_offsets(
    dataset: MoleculeDataset, mean: np.ndarray, atomref: np.ndarray, molecule_level: Sequence[bool]
) -> np.ndarray:
    """[M, T] float64 per-molecule offsets: the mean (not for norm heads such as the dipole)
    plus the atomref sum.

    Subtracted from the targets on the host, so the device only ever sees residuals of
    order `std`: absolute energies (QM9 U0 ~ -1e7 meV, MD17 ethanol ~ -1e5 kcal/mol) have
    a float32 spacing of ~1 meV / ~0.008 kcal/mol, comparable to the errors being measured.
    """
    base = np.where(np.asarray(molecule_level), 0.0, mean)
    return base + composition_matrix(dataset, atomref.shape[0]) @ atomref
