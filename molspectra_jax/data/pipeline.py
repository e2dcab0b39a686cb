"""From a `config.data` section to split datasets and batch iterators."""

from __future__ import annotations

import numpy as np

from molspectra_jax.data import md17
from molspectra_jax.data.batching import BatchIterator, Budget, candidate_edges, make_budget
from molspectra_jax.data.qm9 import QM9_SPLIT_SIZES, TARGET_NAMES, TARGET_UNITS, load_qm9
from molspectra_jax.data.records import DataError, MoleculeDataset, check_molecule, split_indices

SPLITS = ("train", "valid", "test")


def load_source(config) -> MoleculeDataset:
    """The whole molecule set named by `config.source`: "qm9", "md17" (the shipped
    ethanol sample) or "md17:<file.npz>" (a file of the MD17 release)."""
    if config.source == "qm9":
        return load_qm9(config.cache_dir or None)
    if config.source == "md17":
        return md17.load_md17(md17.shipped_md17_path())
    if _is_md17(config.source):
        return md17.load_md17(config.source[5:])
    raise ValueError(
        f"unknown data source {config.source!r}; use 'qm9', 'md17' or 'md17:<file.npz>'"
    )


def _is_md17(source: str) -> bool:
    return source.split(":")[0] == "md17"


def source_targets(source: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(target names, units of targets and forces) of a data source."""
    if _is_md17(source):
        return md17.TARGETS, md17.UNITS
    return TARGET_NAMES, TARGET_UNITS


def parse_targets(target: str, source: str = "qm9") -> tuple[str, ...]:
    """'gap' / 'homo,lumo' / 'all' -> target names, validated against the source's."""
    available = source_targets(source)[0]
    names = available if target == "all" else tuple(t.strip() for t in target.split(","))
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"unknown target(s) {unknown}; choose from {available} or 'all'")
    return names


def split_dataset(dataset: MoleculeDataset, config) -> dict[str, MoleculeDataset]:
    """Seeded train/valid/test split, each part cut to `n_train/n_valid/n_test` (-1 = all).

    QM9: 110k/10k/rest, fixed by `split_seed` before cutting, so a 10k-molecule CPU run
    trains on a prefix of the same train split a full run uses, and tests on the same
    test set. MD17: exactly `n_train`/`n_valid` frames (950/50), the rest for testing.
    Other sources: QM9's 110:10:11 proportions.
    """
    if config.source == "qm9":
        sizes = QM9_SPLIT_SIZES
    elif _is_md17(config.source):
        sizes = (config.n_train, config.n_valid)
        if min(sizes) < 1 or sum(sizes) >= len(dataset):
            raise DataError(f"{config.source}: MD17 needs n_train, n_valid >= 1 (e.g. 950, 50) "
                            f"leaving test frames of {len(dataset)}; got {sizes}")  # fmt: skip
    else:
        sizes = _scaled_sizes(len(dataset))
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
