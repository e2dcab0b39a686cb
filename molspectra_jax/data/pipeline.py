"""Split datasets -> validated, static-budget batch iterators: the one input path of every
task (fine-tuning and pre-training alike).
"""

from __future__ import annotations

import numpy as np

from molspectra_jax.data.batching import BatchIterator, Budget, candidate_edges, make_budget
from molspectra_jax.data.records import MoleculeDataset, check_molecule


def validate(dataset: MoleculeDataset, source: str, elements, max_atoms: int) -> None:
    """Every molecule modelable: supported elements, within the per-molecule atom budget."""
    for m in range(len(dataset)):
        z, pos = dataset.molecule(m)
        check_molecule(source, str(dataset.ids[m]), z, pos, elements=elements, max_atoms=max_atoms)


def make_iterators(
    splits: dict[str, MoleculeDataset],
    config,
    cutoff: float,
    n_shards: int,
    *,
    label: str,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, BatchIterator]:
    """Validated train (shuffled, endless) and eval (one pass) iterators, static budgets.

    Args:
      splits: {"train": ..., "valid": ..., ...} molecules (with spectra when they have them).
      config: the `data` config section (batch sizes, skin, budget slack, elements, seed).
      cutoff: the encoder's cutoff (Å); candidate edges reach `cutoff + config.skin`.
      n_shards: the global shard count; this process builds its share of every batch.
      label: the source's name for error messages (e.g. "qm9").
    """
    for name, part in splits.items():
        validate(part, f"{label}:{name}", config.elements, None)
    radius = cutoff + config.skin
    edges = {name: candidate_edges(dataset, radius) for name, dataset in splits.items()}
    budgets = {
        name: make_budget(
            dataset,
            edges[name],
            config.batch_size if name == "train" else config.eval_batch_size,
            n_shards,
            config.budget_slack,
        )
        for name, dataset in splits.items()
    }
    # One eval budget for every eval split: one compilation of the prediction function.
    evals = [b for n, b in budgets.items() if n != "train"]
    if evals:
        fields = ("graphs", "atoms", "edges")
        eval_budget = Budget(n_shards, *(max(getattr(b, f) for b in evals) for f in fields))
        budgets.update({name: eval_budget for name in budgets if name != "train"})
    return {
        name: BatchIterator(
            dataset,
            edges[name],
            budgets[name],
            seed=config.shuffle_seed,
            shuffle=name == "train",
            process_index=process_index,
            process_count=process_count,
        )
        for name, dataset in splits.items()
    }


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
