"""From a `config.data` section to split datasets and batch iterators."""

from __future__ import annotations

import numpy as np

from molspectra_jax.data.batching import BatchIterator, Budget, candidate_edges, make_budget
from molspectra_jax.data.qm9 import QM9_SPLIT_SIZES, TARGET_NAMES, load_qm9
from molspectra_jax.data.records import DataError, MoleculeDataset, check_molecule, split_indices

SPLITS = ("train", "valid", "test")


def load_source(config) -> MoleculeDataset:
    """The whole molecule set named by `config.source` (only QM9 has property targets)."""
    if config.source == "qm9":
        return load_qm9(config.cache_dir or None)
    raise ValueError(f"unknown data source {config.source!r}; choose from ['qm9']")


def parse_targets(target: str) -> tuple[str, ...]:
    """'gap' / 'homo,lumo' / 'all' -> target names, validated against QM9's."""
    names = TARGET_NAMES if target == "all" else tuple(t.strip() for t in target.split(","))
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown target(s) {unknown}; choose from {TARGET_NAMES} or 'all'")
    return names


def split_dataset(dataset: MoleculeDataset, config) -> dict[str, MoleculeDataset]:
    """QM9's seeded 110k/10k/rest split, each part cut to `n_train/n_valid/n_test` (-1 = all).

    The split is fixed by `split_seed` before cutting, so a 10k-molecule CPU run trains
    on a prefix of the same train split a full run uses, and tests on the same test set.
    """
    sizes = QM9_SPLIT_SIZES if len(dataset) > sum(QM9_SPLIT_SIZES) else _scaled_sizes(len(dataset))
    parts = dict(zip(SPLITS, split_indices(len(dataset), sizes, config.split_seed), strict=True))
    out = {}
    for name in SPLITS:
        limit = config[f"n_{name}"]
        indices = parts[name] if limit < 0 else parts[name][:limit]
        if len(indices) == 0:
            raise DataError(
                f"the {name} split is empty (n_{name}={limit}, {len(dataset)} molecules)"
            )
        out[name] = dataset.subset(indices)
    return out


def _scaled_sizes(n: int) -> tuple[int, int]:
    # Small sources (a user's SDF): same 110:10 proportions as QM9.
    return int(n * 110 / 131), int(n * 10 / 131)


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
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[dict[str, BatchIterator], dict[str, Budget]]:
    """Train (shuffled, endless) and eval (one pass) iterators with static budgets.

    `n_shards` is the global shard count; this process builds its share of every batch.
    """
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
    eval_budget = Budget(
        n_shards,
        *(
            max(getattr(b, f) for n, b in budgets.items() if n != "train")
            for f in ("graphs", "atoms", "edges")
        ),
    )
    budgets.update({name: eval_budget for name in budgets if name != "train"})
    iterators = {
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
    return iterators, budgets


def mean_predictor_mae(splits: dict[str, MoleculeDataset], split: str) -> np.ndarray:
    """[T] MAE on `split` of always predicting the train mean: the floor any model must beat."""
    return np.abs(splits[split].targets - splits["train"].targets.mean(0)).mean(0)
