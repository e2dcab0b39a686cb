"""The fine-tuning task: data -> model -> `Run` -> fit -> test MAE table.

Effects live here and in the loop (files, logs, progress bar); the math is in models/,
losses and finetune_step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable

import jax
import numpy as np

from molspectra_jax import figures
from molspectra_jax.data import pipeline, sources
from molspectra_jax.data.records import MoleculeDataset, concat_ranges
from molspectra_jax.data.statistics import (
    TargetStats,
    composition_matrix,
    fit_target_stats,
    target_offsets,
)
from molspectra_jax.files import atomic_open, write_npz
from molspectra_jax.models import build_encoder
from molspectra_jax.models.heads import MOLECULE_LEVEL
from molspectra_jax.models.property_model import PropertyModel
from molspectra_jax.train import loop, sharding
from molspectra_jax.train.finetune_step import predict, train_step
from molspectra_jax.train.handoff import initialiser
from molspectra_jax.train.metrics import MetricWriter
from molspectra_jax.train.neighbors import candidate_check
from molspectra_jax.train.optim import current_learning_rate, make_optimizer
from molspectra_jax.train.spectra_terms import contrast_specformer
from molspectra_jax.train.state import TrainState, init_variables


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
    """What a fine-tuning run predicts and how it reports (`Run.task`).

    `splits` hold the targets as loaded; the iterators' batches hold them minus the
    host-side offsets (mean + atomref sum, float64), and `predict_fn(params, batch)`
    returns predictions minus the same offsets. `stats` are the train-split statistics.
    """

    targets: tuple[str, ...]
    metrics: tuple[str, ...]  # targets, then "forces" when trained on forces
    units: dict[str, str]
    splits: dict[str, MoleculeDataset]
    rows: dict[str, np.ndarray]  # the splits' dataset rows (written as splits.npz)
    stats: TargetStats
    model: PropertyModel
    predict_fn: Callable


def build_model(config, targets, embedding: bool = False) -> PropertyModel:
    """PropertyModel with one head per target: TorchMD-Net's physical heads for mu and r2
    if enabled, `config.heads.output` for the others; `embedding` adds the molecule
    embedding (the contrastive partner of `spectra_aux`)."""
    kinds = tuple(
        "dipole"
        if (t == "mu" and config.heads.dipole)
        else "spatial_extent"
        if (t == "r2" and config.heads.spatial_extent)
        else config.heads.output
        for t in targets
    )
    return PropertyModel(
        encoder=build_encoder(config.model),
        heads=kinds,
        noise_head=config.loss.noise_weight > 0,
        activation=config.model.activation,
        reduce_op=config.heads.reduce_op,
        embedding=embedding,
    )


def evaluate(predict_fn, params, iterator, mesh, n_targets: int, keep=None) -> np.ndarray:
    """MAE over one pass of `iterator` (all hosts' molecules): [T] per target in target
    units, then the force-component MAE if `predict_fn` returns forces. `keep` (a list)
    receives this host's (molecule_index, graph_mask, atom_mask, properties, forces or
    None) of every batch."""
    # |error| sums of the T targets and of force components, molecule and component counts
    totals, with_forces = np.zeros(n_targets + 3), False
    for batch in iterator.one_pass():
        out = predict_fn(params, sharding.global_batch(batch, mesh))
        pred = sharding.host_local(out["properties"], mesh)
        forces = sharding.host_local(out["forces"], mesh) if "forces" in out else None
        if keep is not None:  # what test_predictions needs, not the whole padded batch
            graph = batch.graph
            keep.append((batch.molecule_index, graph.graph_mask, graph.atom_mask, pred, forces))
        graph_mask, atom_mask = batch.graph.graph_mask, batch.graph.atom_mask
        totals[:n_targets] += np.abs(pred - batch.targets)[graph_mask].sum(0)
        totals[-2] += graph_mask.sum()
        if forces is not None:
            with_forces = True
            totals[n_targets] += np.abs(forces - batch.atom_targets)[atom_mask].sum()
            totals[-1] += 3 * atom_mask.sum()
    totals = sharding.sum_over_hosts(totals)
    mae = totals[:n_targets] / max(totals[-2], 1)
    return np.append(mae, totals[n_targets] / max(totals[-1], 1)) if with_forces else mae


def format_table(names, units: dict[str, str], rows: dict[str, np.ndarray]) -> str:
    """Markdown table: one column per metric (with unit), one row per named MAE vector."""
    header = "| | " + " | ".join(f"{t} ({units[t]})" if units[t] else t for t in names) + " |"
    lines = [header, "|---" * (len(names) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in values) + " |")
    return "\n".join(lines)


def setup(config, mesh) -> loop.Run:
    """Data, statistics, model, fresh state and step for `config`: a `Run` for `loop.fit`."""
    spec = config.data.source
    source = sources.resolve(spec)[0]
    with_forces = config.loss.force_weight > 0
    n_shards = sharding.shard_count(config.data.n_shards)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, shards: {n_shards}")

    dataset = sources.load(spec, config.data)
    # A user's labelled file brings its own targets (and maybe units); registered
    # sources declare theirs.
    targets = sources.parse_targets(config.target, spec, source.targets or dataset.target_names)
    dataset = sources.complete(dataset.select_targets(targets), spec)
    aux = config.spectra_aux.mpr > 0 or config.spectra_aux.contrast > 0
    if aux and not config.data.with_spectra:
        raise ValueError(
            "spectra_aux needs spectra: set data.with_spectra=True (fine-tune on the "
            f"molecules of data.spectra={config.data.spectra!r})"
        )
    if config.data.with_spectra:
        dataset = sources.with_spectra(dataset, config.data)
    units = sources.target_units(spec, dataset, config.data)
    if with_forces and (dataset.atom_targets is None or targets[0] != "energy"):
        raise ValueError(
            f"loss.force_weight > 0 needs energies and forces (e.g. MD17); "
            f"{config.data.source} target {targets[0]!r} has none"
        )
    rows = sources.finetuning_rows(dataset, config.data)
    splits = {name: dataset.subset(r) for name, r in rows.items()}
    use_atomref = [t in config.heads.atomref for t in targets]
    stats = fit_target_stats(splits["train"], targets, use_atomref, config.model.max_z)
    model = build_model(config, targets, embedding=aux)
    specformer = contrast_specformer(config) if aux else None
    # The device sees targets minus their float64 offsets (mean + atomref sum), and the
    # model predicts the same residuals: errors are unchanged, float32 precision is not.
    molecule_level = [kind in MOLECULE_LEVEL for kind in model.heads]
    residuals = {
        name: dataclasses.replace(
            part,
            targets=part.targets - target_offsets(part, stats.mean, stats.atomref, molecule_level),
            # Spectra reach the train step only, and only when it reads them.
            spectra=part.spectra if (aux and name == "train") else {},
        )
        for name, part in splits.items()
    }
    noise_sigma = config.loss.noise_sigma if config.loss.noise_weight > 0 else 0.0
    iterators = pipeline.make_iterators(
        residuals,
        config.data,
        config.model.cutoff,
        n_shards,
        label=source.name,
        noise_sigma=noise_sigma,
        layout=config.model.get("layout", "sparse"),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    print("molecules: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    print(f"train budget per shard: {iterators['train'].budget}")

    key = jax.random.PRNGKey(config.seed)
    params, batch_stats = init_variables(
        model,
        next(iterators["train"]),
        key,
        specformer=specformer,
        specformer_key=jax.random.fold_in(key, 2),
    )
    iterators["train"].restore({"epoch": 0, "cursor": 0})
    tx = make_optimizer(config.optim, config.train.num_steps)
    state = TrainState.create(params, tx, jax.random.fold_in(key, 1), batch_stats)
    print(f"parameters: {sum(x.size for x in jax.tree.leaves(params)):,}")

    std = jax.numpy.asarray(stats.std, jax.numpy.float32)
    metrics = targets + (("forces",) if with_forces else ())
    step = functools.partial(
        train_step,
        learning_rate=functools.partial(
            current_learning_rate, config.optim, config.train.num_steps
        ),
        model=model,
        std=std,
        mesh=mesh,
        loss_kind=config.loss.kind,
        noise_sigma=config.loss.noise_sigma,
        noise_weight=config.loss.noise_weight,
        energy_weight=config.loss.energy_weight,
        force_weight=config.loss.force_weight,
        check=candidate_check(config.model, iterators["train"], noise_sigma),
        names=metrics,
        specformer=specformer,
        spectra_aux=config.spectra_aux if aux else None,
    )
    predict_fn = jax.jit(
        functools.partial(predict, model=model, std=std, mesh=mesh, forces=with_forces)
    )
    # Standardized MAEs weigh metrics of different units alike in "best" (forces: by E std).
    scale = np.append(stats.std, stats.std[:1]) if with_forces else stats.std

    def evaluate_valid(state):
        mae = evaluate(predict_fn, state.params, iterators["valid"], mesh, len(targets))
        return float(np.mean(mae / scale)), _named("mae", metrics, mae)

    return loop.Run(
        name="fine-tune",
        mesh=mesh,
        state=state,
        train_step=step,
        iterators=iterators,
        evaluate=evaluate_valid,
        init_from=initialiser(config),
        # float32 as ever: checkpoints written before stay readable
        extra_arrays={"stats": {k: np.float32(v) for k, v in stats._asdict().items()}},
        # What `molspectra_jax.load` needs without the data source (a user's file may be
        # gone): saved with the config in every checkpoint.
        facts={"targets": list(targets), "units": {m: units[m] for m in metrics}},
        task=FinetuneTask(
            targets=targets,
            metrics=metrics,
            units=units,
            splits=splits,
            rows=rows,
            stats=stats,
            model=model,
            predict_fn=predict_fn,
        ),
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Fine-tune on `config.target`; returns {"test_mae": {...}, "mean_predictor_mae": {...}}."""
    mesh = loop.start(config, workdir)
    with loop.workdir_lock(workdir):
        return _train_and_report(setup(config, mesh), config, workdir)


def _train_and_report(run: loop.Run, config, workdir: str) -> dict:
    """Fit `run`, then test the best checkpoint: the MAE table and `results.json`."""
    mesh, task = run.mesh, run.task
    split_file = os.path.join(workdir, SPLITS)
    fresh = not os.path.isdir(os.path.join(workdir, "checkpoints", "latest"))
    if fresh and jax.process_index() == 0:  # a resumed run's split is checked first (fit)
        sources.write_split_file(split_file, task.rows)
    state, _ = loop.fit(run, config, workdir)
    if jax.process_index() == 0:
        sources.write_split_file(split_file, task.rows)
    steps = int(state.step)  # num_steps, or where early stopping ended the run
    best, which = loop.restore_best(run, workdir)
    kept = []
    test = evaluate(
        task.predict_fn, best["params"], run.iterators["test"], mesh, len(task.targets), kept
    )
    baseline = pipeline.mean_predictor_mae(task.splits, "test", forces="forces" in task.metrics)
    with MetricWriter(workdir) as writer:
        writer.write(steps, _named("mae", task.metrics, test), "test")
    label = "best valid checkpoint" if which == "best" else f"{which} checkpoint"
    rows = {f"test MAE ({label})": test, "mean-predictor MAE": baseline}
    table = format_table(task.metrics, task.units, rows)
    result = {
        "test_mae": dict(zip(task.metrics, test.tolist(), strict=True)),
        "mean_predictor_mae": dict(zip(task.metrics, baseline.tolist(), strict=True)),
        "checkpoint": which,
        "n_train": len(task.splits["train"]),
        "steps": steps,
    }
    if jax.process_index() == 0:
        print(f"\n{table}\n")
        with atomic_open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(result, f, indent=2)
        if kept:
            write_npz(os.path.join(workdir, PREDICTIONS), test_predictions(task, kept))
        try:  # the figures are a view of what is written: never worth failing the run
            for path in figures.draw(workdir):
                print(f"wrote {path}")
        except (OSError, ValueError, RuntimeError) as e:
            print(f"warning: the figures were not drawn ({type(e).__name__}: {e}); "
                  f"redraw them with experiments.figures --workdir {workdir}")  # fmt: skip
    return result


PREDICTIONS = "test_predictions.npz"
SPLITS = "splits.npz"  # the dataset rows of each split, TorchMD-Net's layout


def test_predictions(task: FinetuneTask, kept: list) -> dict[str, np.ndarray]:
    """This host's test molecules from `evaluate(..., keep=kept)` as `test_predictions.npz`
    arrays: `ids` [M], `true` and `predicted` [M, T] in target units (float64),
    `atomref_sum` [M, T] (the composition's share, to plot without it), `names` and
    `units` [T (+1)], and for force models `forces_true` / `forces_predicted` [A, 3]."""
    test, stats = task.splits["test"], task.stats
    rows = np.concatenate([index[graphs] for index, graphs, _, _, _ in kept])
    residual = np.concatenate([pred[graphs] for _, graphs, _, pred, _ in kept])
    molecule_level = [kind in MOLECULE_LEVEL for kind in task.model.heads]
    offsets = target_offsets(test, stats.mean, stats.atomref, molecule_level)
    atomref_sum = composition_matrix(test, stats.atomref.shape[0]) @ stats.atomref
    out = {
        "ids": test.ids[rows],
        "true": test.targets[rows],
        "predicted": residual.astype(np.float64) + offsets[rows],
        "atomref_sum": atomref_sum[rows],
        "names": np.asarray(task.metrics),
        "units": np.asarray([task.units[m] for m in task.metrics]),
    }
    if kept[0][4] is not None:
        out["forces_predicted"] = np.concatenate([f[atoms] for _, _, atoms, _, f in kept])
        atoms = concat_ranges(test.offsets[rows], test.n_atoms[rows])  # in batch atom order
        out["forces_true"] = test.atom_targets[atoms]
    return out


def _named(prefix: str, names, values) -> dict[str, float]:
    return {f"{prefix}_{t}": float(v) for t, v in zip(names, values, strict=True)}
