"""Molecules (and their spectra) for pre-training.

Stage 1 (denoising only) needs geometries: QM9's, or any SDF (e.g. PCQM4Mv2's
`pcqm4m-v2-train.sdf`, heavy atoms only: hydrogens are placed by RDKit). Stage 2 needs
spectra on the QM9S grids, joined with geometries by QM9 index:
- "embedded": the spectra this package ships (computed by `molspectra_jax.spectroscopy`
  for a seeded QM9 subset), broadened onto the grids here;
- a folder written by `experiments.generate_spectra` (same format);
- "qm9s:<folder>": the real QM9S release converted by `molspectra_jax.data.qm9s`.
"""

from __future__ import annotations

import numpy as np

from molspectra_jax.data.molfiles import read_sdf
from molspectra_jax.data.qm9 import load_qm9
from molspectra_jax.data.records import DataError, MoleculeDataset, from_records


def load_geometries(config) -> MoleculeDataset:
    """`config.source`: "qm9" or "sdf:<path>" -> molecules without targets."""
    if config.source == "qm9":
        return load_qm9(config.cache_dir or None).select_targets(())
    if config.source.startswith("sdf:"):
        path = config.source[4:]
        records, skipped = read_sdf(path, add_hydrogens=True, elements=config.elements,
                                    on_error="skip")  # fmt: skip
        if skipped:
            print(f"{path}: skipped {len(skipped)} records, e.g. {skipped[0]}")
        return from_records(records)
    raise ValueError(f"unknown geometry source {config.source!r}; use 'qm9' or 'sdf:<path>'")


def load_spectra_set(config) -> tuple[MoleculeDataset, dict[str, np.ndarray]]:
    """(molecules, {"uv": [M, 701], "ir": [M, 3501], "raman": [M, 3501]}) aligned by row.

    Geometries come from QM9 by id (`config.geometry == "qm9"`, the equilibrium DFT
    structures denoising assumes) or from the spectra set itself ("spectra": the GFN2
    geometries the spectra were computed at; not available for QM9S).
    """
    source = config.spectra
    if source.startswith("qm9s:"):
        from molspectra_jax.data.qm9s import join_with_qm9, load_qm9s

        spectra = load_qm9s(source[5:])
        qm9 = load_qm9(config.cache_dir or None).select_targets(())
        rows, spectra_rows = join_with_qm9(spectra, qm9)
        print(f"{source}: {len(rows)} of {len(spectra.ids)} QM9S molecules joined with QM9")
        dense = {k: np.asarray(getattr(spectra, k)[spectra_rows], np.float32)
                 for k in ("uv", "ir", "raman")}  # fmt: skip
        return qm9.subset(rows), dense

    from molspectra_jax.spectroscopy.embedded import (
        broaden_batch,
        load_embedded_spectra,
        load_spectra,
    )

    sticks = load_embedded_spectra() if source == "embedded" else load_spectra(source)
    dense = broaden_batch(sticks)
    if config.geometry == "spectra":
        counts = np.diff(sticks.atom_offsets)
        dataset = MoleculeDataset(
            ids=sticks.ids, atomic_numbers=sticks.atomic_numbers,
            positions=sticks.positions.astype(np.float32), offsets=sticks.atom_offsets,
            targets=np.zeros((len(counts), 0)),
        )  # fmt: skip
        return dataset, dense
    if config.geometry != "qm9":
        raise ValueError(f"unknown geometry {config.geometry!r}; use 'qm9' or 'spectra'")
    qm9 = load_qm9(config.cache_dir or None).select_targets(())
    row_of = {int(i): r for r, i in enumerate(qm9.ids)}
    missing = [int(i) for i in sticks.ids if int(i) not in row_of]
    if missing:
        raise DataError(f"{source}: molecule ids {missing[:5]} are not QM9 indices")
    return qm9.subset([row_of[int(i)] for i in sticks.ids]), dense


def split_train_valid(n: int, n_valid: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation of range(n): (train rows, the last `n_valid` rows)."""
    if not 0 < n_valid < n:
        raise ValueError(f"n_valid={n_valid} must be between 1 and {n - 1} ({n} molecules)")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:-n_valid], perm[-n_valid:]
