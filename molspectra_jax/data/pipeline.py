"""Split datasets -> validated, static-budget batch iterators: the one input path of every
task (fine-tuning and pre-training alike).
"""

from __future__ import annotations

import numpy as np

from molspectra_jax.data.batching import (
    BatchIterator,
    Budget,
    CandidateEdges,
    candidate_edges,
    candidate_radius,
    dense_buckets,
    dense_budget,
    make_budget,
)
from molspectra_jax.data.records import MoleculeDataset, check_molecule


def validate(
    dataset: MoleculeDataset, source: str, elements, max_atoms: int | None, chunk: int = 1 << 22
) -> None:
    """Every molecule modelable: atoms, supported elements, finite coordinates, within the
    per-molecule atom budget. Vectorized (chunks of `chunk` atoms); the first bad
    molecule raises `check_molecule`'s DataError naming it."""
    n_atoms = dataset.n_atoms
    bad = (n_atoms == 0) if max_atoms is None else (n_atoms == 0) | (n_atoms > max_atoms)
    allowed = np.zeros(256, bool)
    allowed[[z for z in elements if 0 <= z < 256]] = True
    for start in range(0, len(dataset.atomic_numbers), chunk):
        z = np.asarray(dataset.atomic_numbers[start : start + chunk])
        pos = np.asarray(dataset.positions[start : start + chunk])
        wrong = ~allowed[np.clip(z, 0, 255)] | (z > 255) | ~np.isfinite(pos).all(axis=1)
        atoms = start + np.flatnonzero(wrong)
        bad[np.searchsorted(dataset.offsets, atoms, side="right") - 1] = True
    for m in np.flatnonzero(bad)[:1]:
        z, pos = dataset.molecule(int(m))
        check_molecule(source, str(dataset.ids[m]), z, pos, elements=elements, max_atoms=max_atoms)
        raise AssertionError(f"{source}: molecule {dataset.ids[m]} flagged but passes its check")


def make_iterators(
    splits: dict[str, MoleculeDataset],
    config,
    cutoff: float,
    n_shards: int,
    *,
    label: str,
    rows: dict[str, np.ndarray] | None = None,
    noise_sigma: float = 0.0,
    layout: str = "sparse",
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, BatchIterator]:
    """Validated train (shuffled, endless) and eval (one pass) iterators, static budgets.

    Args:
      splits: {"train": ..., "valid": ..., ...} molecules (with spectra when they have them).
      config: the `data` config section (batch sizes, skin, budget slack, elements, seed).
      cutoff: the encoder's cutoff (Å); candidate edges reach `cutoff + config.skin`
        (`batching.candidate_radius`: skin None follows `noise_sigma`).
      n_shards: the global shard count; this process builds its share of every batch.
      label: the source's name for error messages (e.g. "qm9").
      rows: {split: dataset rows} when the splits are rows of one dataset too large to
        copy (`splits[name]` is then that whole dataset, validated and counted once).
      noise_sigma: Å per coordinate the train step adds to the positions (0: none).
      layout: the encoder's ("sparse": candidate edges within budgets; "dense": molecule
        blocks in `config.buckets` size buckets, shared by every split, no edges).
    """
    if layout not in ("sparse", "dense"):
        raise ValueError(f"unknown layout {layout!r}; choose sparse or dense")
    radius = candidate_radius(cutoff, config.skin, noise_sigma)
    edges, checked = {}, {}
    for name, dataset in splits.items():
        if id(dataset) not in checked:  # a dataset shared by several splits: once
            validate(dataset, f"{label}:{name}", config.elements, None)
            if layout == "dense":  # every pair of a block: nothing to count
                checked[id(dataset)] = CandidateEdges(np.zeros(len(dataset), np.int32), 0.0)
            else:
                checked[id(dataset)] = candidate_edges(dataset, radius)
        edges[name] = checked[id(dataset)]
    rows = rows or {}
    if layout == "dense":
        budgets, buckets = _dense_budgets(splits, rows, config, n_shards)
    else:
        budgets, buckets = _sparse_budgets(splits, edges, rows, config, n_shards), ()
    return {
        name: BatchIterator(
            dataset,
            edges[name],
            budgets[name],
            rows=rows.get(name),
            seed=config.shuffle_seed,
            shuffle=name == "train",
            process_index=process_index,
            process_count=process_count,
            buckets=buckets,
        )
        for name, dataset in splits.items()
    }


def _batch_size(config, name: str) -> int:
    return config.batch_size if name == "train" else config.eval_batch_size


def _sparse_budgets(splits, edges, rows, config, n_shards) -> dict[str, Budget]:
    """Per-split budgets from the data; one eval budget for every eval split (one
    compilation of the prediction function)."""
    budgets = {
        name: make_budget(
            dataset,
            edges[name],
            _batch_size(config, name),
            n_shards,
            config.budget_slack,
            rows.get(name),
        )
        for name, dataset in splits.items()
    }
    evals = [b for n, b in budgets.items() if n != "train"]
    if evals:
        fields = ("graphs", "atoms", "edges")
        eval_budget = Budget(n_shards, *(max(getattr(b, f) for b in evals) for f in fields))
        budgets.update({name: eval_budget for name in budgets if name != "train"})
    return budgets


def _dense_budgets(splits, rows, config, n_shards) -> tuple[dict[str, Budget], tuple[int, ...]]:
    """Per-split budgets of the largest bucket (the iterators derive the others), and one
    set of size buckets over every split's molecules."""
    sizes = np.concatenate(
        [d.n_atoms if rows.get(n) is None else d.n_atoms[rows[n]] for n, d in splits.items()]
    )
    buckets = dense_buckets(sizes, config.buckets)
    budgets = {}
    for name in splits:
        batch = _batch_size(config, name)
        if batch % n_shards:
            raise ValueError(f"batch size {batch} is not divisible by {n_shards} shards")
        budgets[name] = dense_budget(Budget(n_shards, batch // n_shards, 0, 2), buckets[-1])
    return budgets, buckets


def mean_predictor_mae(
    splits: dict[str, MoleculeDataset], split: str, forces: bool = False
) -> np.ndarray:
    """[T] (+ forces) MAE on `split` of always predicting the train mean: the floor any
    model must beat."""
    mae = np.abs(splits[split].targets - splits["train"].targets.mean(0)).mean(0)
    if forces:
        mean_force = splits["train"].atom_targets.mean(0)
        mae = np.append(mae, np.abs(splits[split].atom_targets - mean_force).mean())
    return mae
