"""Trained models as objects: `load(workdir)` -> `Model` with `predict` and `embed`.

Works on fine-tuning workdirs and on workdirs written by `experiments.import_torchmdnet`
(both hold an Orbax checkpoint with params, target statistics and the run's config).
Molecules are a `MoleculeDataset`, records from the readers, or a path (.sdf, .xyz,
.smi, .csv, .extxyz). Batches have one static budget per call (one compile), and
padding never changes a result: each molecule's prediction is the same alone or in
any batch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from molspectra_jax.data import sources
from molspectra_jax.data.batching import candidate_edges, collate, make_budget, pack_shard
from molspectra_jax.data.records import MoleculeDataset, MoleculeRecord, from_records
from molspectra_jax.data.statistics import target_offsets
from molspectra_jax.models import COMPUTE_FIELDS, ENCODERS, build_encoder
from molspectra_jax.models.heads import MOLECULE_LEVEL
from molspectra_jax.models.pretrain_model import molecule_embedding
from molspectra_jax.train.checkpoint import CheckpointError, read_checkpoint_arrays

# File suffix -> reader of `sources.FILE_READERS` / `LABELLED_READERS` (labels unused).
SUFFIXES = {
    ".sdf": "sdf",
    ".xyz": "xyz",
    ".smi": "smiles",
    ".smiles": "smiles",
    ".csv": "csv",
    ".extxyz": "extxyz",
}


def read_molecules(
    path: str, elements: Sequence[int], on_error: str = "raise"
) -> tuple[list[MoleculeRecord], list[str]]:
    """(records, skipped messages) of an .sdf / .xyz / .smi / .csv / .extxyz file, by
    its suffix."""
    kind = SUFFIXES.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"{path}: unknown molecule file type; use one of {sorted(SUFFIXES)}")
    reader = sources.FILE_READERS.get(kind) or sources.LABELLED_READERS[kind]
    return reader(path, elements=elements, on_error=on_error)


def as_dataset(molecules, elements, on_error: str = "raise") -> tuple[MoleculeDataset, list[str]]:
    """(dataset, names) of a `MoleculeDataset`, records from the readers, or a path."""
    if isinstance(molecules, MoleculeDataset):
        return molecules, [str(i) for i in molecules.ids]
    if isinstance(molecules, (str, os.PathLike)):
        molecules, skipped = read_molecules(os.fspath(molecules), elements, on_error)
        for message in skipped:
            print(f"skipped: {message}")
    records = list(molecules)
    return from_records(records), [r.name for r in records]


def molecule_batches(dataset: MoleculeDataset, cutoff: float, batch_size: int):
    """(rows, one-shard GraphBatch) covering `dataset` in order, one static budget (one
    compile), candidate edges within `cutoff` (nothing moves: no skin)."""
    edges = candidate_edges(dataset, cutoff)
    budget = make_budget(dataset, edges, min(batch_size, len(dataset)), 1, 1.0)
    order = np.arange(len(dataset))
    start = 0
    while start < len(order):
        stop = pack_shard(order, start, dataset.n_atoms, edges.n_edges, budget)
        yield order[start:stop], collate(dataset, edges, [order[start:stop]], budget)
        start = stop


def pooled_embedding(model_config):
    """Jitted (encoder params, Graph) -> [G, F]: the encoder's scalars summed over each
    molecule's atoms (the molecule embedding pre-training contrasts with spectra)."""
    encoder = build_encoder(model_config)

    def embed(params, graph):
        x, _ = encoder.apply({"params": params}, graph)
        return molecule_embedding(x, graph)

    return jax.jit(embed)


def embed_dataset(embed_fn, params, dataset, cutoff, batch_size, width) -> np.ndarray:
    """[M, width] float32: `embed_fn(params, graph)` ([G, width]) over `dataset` in order."""
    out = np.zeros((len(dataset), width), np.float32)
    for rows, batch in molecule_batches(dataset, cutoff, batch_size):
        graph = jax.tree.map(lambda x: jnp.asarray(x[0]), batch.graph)
        out[rows] = np.asarray(embed_fn(params, graph))[: len(rows)]
    return out


def checkpoint_folder(workdir: str) -> str:
    for name in ("best", "latest"):
        folder = os.path.join(workdir, "checkpoints", name)
        if os.path.isdir(folder) and any(p.isdigit() for p in os.listdir(folder)):
            return folder
    raise CheckpointError(f"{workdir}: no checkpoint (expected checkpoints/best or latest)")


@dataclasses.dataclass
class Model:
    """A property model with its parameters and target statistics (host float64)."""

    config: ml_collections.ConfigDict
    targets: tuple[str, ...]
    units: dict[str, str]
    params: dict
    mean: np.ndarray  # [T]
    std: np.ndarray  # [T]
    atomref: np.ndarray  # [max_z, T]
    batch_size: int = 32

    @functools.cached_property
    def _model(self):
        from molspectra_jax.train.finetune import build_model

        return build_model(self.config, self.targets)

    @property
    def forces(self) -> bool:
        """Whether target 0 is an energy whose -gradient `predict` returns as forces."""
        return self.config.loss.force_weight > 0

    @functools.cached_property
    def _mesh(self) -> Mesh:
        return Mesh(np.array(jax.devices()[:1]), ("data",))

    def _dataset(self, molecules, on_error: str = "raise") -> tuple[MoleculeDataset, list[str]]:
        return as_dataset(molecules, self.config.data.elements, on_error)

    def _batches(self, dataset: MoleculeDataset):
        return molecule_batches(dataset, self.config.model.cutoff, self.batch_size)

    @functools.cached_property
    def predict_fn(self):
        """Jitted (params, one-shard GraphBatch) -> {"properties": [1, G, T] residuals in
        target units (add `offsets`), "forces": [1, N, 3] for energy models}; one compile
        per batch shape."""
        from molspectra_jax.train.finetune_step import predict

        std = jnp.asarray(self.std, jnp.float32)
        fn = functools.partial(
            predict, model=self._model, std=std, mesh=self._mesh, forces=self.forces
        )
        return jax.jit(fn)

    def offsets(self, dataset: MoleculeDataset) -> np.ndarray:
        """[M, T] what `predict_fn`'s residuals lack: the mean and atomref sums."""
        molecule_level = [kind in MOLECULE_LEVEL for kind in self._model.heads]
        return target_offsets(dataset, self.mean, self.atomref, molecule_level)

    def predict(self, molecules, on_error: str = "raise") -> dict[str, np.ndarray]:
        """{target: [M] in its units} (+ "forces": [A, 3] per atom, back to back in
        molecule order, energy units / Å, for energy models) and "name": [M]."""
        dataset, names = self._dataset(molecules, on_error)
        offsets = self.offsets(dataset)  # [M, T]
        values = np.zeros((len(dataset), len(self.targets)))
        forces = np.zeros((len(dataset.atomic_numbers), 3))
        for rows, batch in self._batches(dataset):
            out = self.predict_fn(self.params, jax.tree.map(jnp.asarray, batch))
            values[rows] = np.asarray(out["properties"][0, : len(rows)], np.float64)
            if self.forces:
                n = int(dataset.n_atoms[rows].sum())
                start = dataset.offsets[rows[0]]
                forces[start : start + n] = np.asarray(out["forces"][0, :n])
        values += offsets
        result = {"name": np.asarray(names, object)}
        result.update({t: values[:, i] for i, t in enumerate(self.targets)})
        if self.forces:
            result["forces"] = forces
        return result

    @functools.cached_property
    def _embed_fn(self):
        return pooled_embedding(self.config.model)

    def embed(self, molecules, on_error: str = "raise") -> np.ndarray:
        """[M, F] per-molecule representations: the encoder's scalars summed over atoms."""
        dataset, _ = self._dataset(molecules, on_error)
        cutoff, width = self.config.model.cutoff, self.config.model.hidden
        params = self.params["encoder"]
        return embed_dataset(self._embed_fn, params, dataset, cutoff, self.batch_size, width)


def check_model_fields(workdir: str, config) -> None:
    """Refuse a checkpoint whose saved model config lacks a field today's encoder has."""
    fields = set(ENCODERS[config.model.name].__dataclass_fields__) - {"parent", "name"}
    fields -= set(COMPUTE_FIELDS)  # defaults (float32) are right for any checkpoint
    missing = sorted(fields - set(config.model))
    if missing:
        raise CheckpointError(
            f"{workdir}: written by an older molspectra-jax whose model lacks {missing}; "
            "its predictions would not be reproduced"
        )


def load(workdir: str, batch_size: int = 32) -> Model:
    """The model of a fine-tuning (best checkpoint, else latest) or imported workdir."""
    arrays, saved = read_checkpoint_arrays(checkpoint_folder(workdir))
    config = ml_collections.ConfigDict(saved)
    check_model_fields(workdir, config)
    if "stats" not in arrays:
        raise CheckpointError(f"{workdir}: not a property model (no target statistics)")
    if "targets" in config:
        targets, units = tuple(config.targets), dict(config.units)
    else:
        targets = sources.parse_targets(config.target, config.data.source)
        units = sources.resolve(config.data.source)[0].units
    stats = {k: np.asarray(v, np.float64) for k, v in arrays["stats"].items()}
    params = jax.tree.map(np.asarray, arrays["params"])
    # Prediction batches carry candidate edges (molecules of any size, one program): the
    # sparse layout, whatever the run trained with (the same parameters).
    config.model.layout = "sparse"
    return Model(config, targets, units, params, batch_size=batch_size, **stats)
