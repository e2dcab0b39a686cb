"""The fine-tuning run: data -> model -> jitted step loop -> eval -> checkpoints -> MAE table.

Effects live here (files, logs, progress bar); the math is in models/, losses and step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from molspectra_jax.data import pipeline
from molspectra_jax.data.statistics import fit_atomref, target_offsets, target_statistics
from molspectra_jax.models import build_encoder
from molspectra_jax.models.property_model import PropertyModel, TargetStats
from molspectra_jax.train import sharding
from molspectra_jax.train.loop import checkpoint_arrays, fit
from molspectra_jax.train.optim import make_optimizer
from molspectra_jax.train.state import TrainState
from molspectra_jax.train.step import predict, train_step


def build_model(config, targets) -> tuple[PropertyModel, tuple[bool, ...]]:
    """PropertyModel for `targets` and which of its heads are molecule-level (dipole)."""
    kinds = tuple(
        "dipole"
        if (t == "mu" and config.heads.dipole)
        else "spatial_extent"
        if (t == "r2" and config.heads.spatial_extent)
        else "scalar"
        for t in targets
    )
    model = PropertyModel(
        encoder=build_encoder(config.model), heads=kinds, noise_head=config.loss.noise_weight > 0
    )
    return model, tuple(k == "dipole" for k in kinds)


def init_params(model: PropertyModel, batch, key):
    """Parameters from one shard of a batch, initialised inside jit (3x faster than eager)."""
    shard = jax.tree.map(lambda x: x[0], batch)
    n_graphs = shard.graph_mask.shape[0]

    @jax.jit
    def init(key, shard):
        return model.init(
            key,
            shard.atomic_numbers,
            shard.positions,
            shard.senders,
            shard.receivers,
            shard.edge_mask,
            shard.atom_mask,
            shard.graph_index,
            n_graphs,
        )["params"]

    return init(key, shard)


def evaluate(predict_fn, params, iterator, mesh, n_targets: int) -> np.ndarray:
    """MAE over one pass of `iterator` (all hosts' molecules): [T] per target in target
    units, then the force-component MAE if `predict_fn` returns forces."""
    # |error| sums of the T targets and of force components, molecule and component counts
    totals, with_forces = np.zeros(n_targets + 3), False
    for batch in iterator.one_pass():
        out = predict_fn(params, sharding.global_batch(batch, mesh))
        pred = sharding.host_local(out["properties"], mesh)
        totals[:n_targets] += np.abs(pred - batch.targets)[batch.graph_mask].sum(0)
        totals[-2] += batch.graph_mask.sum()
        if "forces" in out:
            with_forces = True
            forces = sharding.host_local(out["forces"], mesh)
            totals[n_targets] += np.abs(forces - batch.atom_targets)[batch.atom_mask].sum()
            totals[-1] += 3 * batch.atom_mask.sum()
    totals = sharding.sum_over_hosts(totals)
    mae = totals[:n_targets] / max(totals[-2], 1)
    return np.append(mae, totals[n_targets] / max(totals[-1], 1)) if with_forces else mae


def format_table(names, units: dict[str, str], rows: dict[str, np.ndarray]) -> str:
    """Markdown table: one column per metric (with unit), one row per named MAE vector."""
    header = "| | " + " | ".join(f"{t} ({units[t]})" for t in names) + " |"
    lines = [header, "|---" * (len(names) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in values) + " |")
    return "\n".join(lines)


@dataclasses.dataclass
class FinetuneSetup:
    """Everything a fine-tuning run (or a benchmark of it) needs, built from a config.

    `splits` hold the targets as loaded; the iterators' batches hold them minus
    `target_offsets` (mean + atomref sum, float64 on the host), and `predict_fn` returns
    predictions minus the same offsets. `stats` are the full statistics (checkpointed).
    """

    targets: tuple[str, ...]
    metrics: tuple[str, ...]  # targets, then "forces" when trained on forces
    units: dict[str, str]
    splits: dict
    iterators: dict
    budgets: dict
    stats: TargetStats
    model: PropertyModel
    state: TrainState
    step_fn: Callable
    predict_fn: Callable


def setup(config, mesh) -> FinetuneSetup:
    """Data, statistics, model, fresh state and the jitted step/predict for `config`."""
    targets = pipeline.parse_targets(config.target, config.data.source)
    units = pipeline.source_targets(config.data.source)[1]
    with_forces = config.loss.force_weight > 0
    n_shards = config.data.n_shards or jax.device_count()
    if n_shards % jax.device_count():
        raise ValueError(
            f"data.n_shards={n_shards} must be a multiple of {jax.device_count()} devices"
        )
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, shards: {n_shards}")

    dataset = pipeline.load_source(config.data).select_targets(targets)
    if with_forces and (dataset.atom_targets is None or targets[0] != "energy"):
        raise ValueError(f"loss.force_weight > 0 needs energies and forces (e.g. MD17); "
                         f"{config.data.source} target {targets[0]!r} has none")  # fmt: skip
    splits = pipeline.split_dataset(dataset, config.data)
    for name, part in splits.items():
        pipeline.validate(part, f"{config.data.source}:{name}", config.data.elements, None)
    use_atomref = [t in config.heads.atomref for t in targets]
    atomref = fit_atomref(splits["train"], targets, use_atomref, config.model.max_z)
    mean, std = target_statistics(splits["train"], targets, atomref)
    stats = TargetStats(*(jnp.asarray(a, jnp.float32) for a in (mean, std, atomref)))
    model, molecule_level = build_model(config, targets)
    # The device sees targets minus their float64 offsets (mean + atomref sum), and the
    # model predicts the same residuals: errors are unchanged, float32 precision is not.
    residuals = {
        name: dataclasses.replace(
            part, targets=part.targets - target_offsets(part, mean, atomref, molecule_level)
        )
        for name, part in splits.items()
    }
    device_stats = stats._replace(mean=jnp.zeros_like(stats.mean),
                                  atomref=jnp.zeros_like(stats.atomref))  # fmt: skip
    iterators, budgets = pipeline.make_iterators(
        residuals, config.data, config.model.cutoff, n_shards,
        jax.process_index(), jax.process_count(),
    )  # fmt: skip
    print("molecules: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    print(f"train budget per shard: {budgets['train']}")

    key = jax.random.PRNGKey(config.seed)
    params = init_params(model, next(iterators["train"]), key)
    iterators["train"].restore({"epoch": 0, "cursor": 0})
    tx = make_optimizer(config.optim, config.train.num_steps)
    state = TrainState.create(params, tx, jax.random.fold_in(key, 1))
    print(f"parameters: {sum(x.size for x in jax.tree.leaves(params)):,}")

    common = dict(model=model, stats=device_stats, molecule_level=molecule_level, mesh=mesh)
    step = functools.partial(
        train_step,
        loss_kind=config.loss.kind,
        noise_sigma=config.loss.noise_sigma,
        noise_weight=config.loss.noise_weight,
        energy_weight=config.loss.energy_weight,
        force_weight=config.loss.force_weight,
        **common,
    )
    return FinetuneSetup(
        targets=targets,
        metrics=targets + (("forces",) if with_forces else ()),
        units=units,
        splits=splits,
        iterators=iterators,
        budgets=budgets,
        stats=stats,
        model=model,
        state=state,
        step_fn=sharding.jit_step(step, mesh),
        predict_fn=jax.jit(functools.partial(predict, forces=with_forces, **common)),
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Fine-tune on `config.target`; returns {"test_mae": {...}, "mean_predictor_mae": {...}}."""
    sharding.initialize_distributed(**config.distributed)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh()
    run = setup(config, mesh)
    n_targets = len(run.targets)
    # Standardized MAEs weigh metrics of different units alike in "best" (forces: by E std).
    std = np.asarray(run.stats.std)
    scale = np.append(std, std[:1]) if "forces" in run.metrics else std

    def evaluate_valid(state):
        val = evaluate(run.predict_fn, state.params, run.iterators["valid"], mesh, n_targets)
        return float(np.mean(val / scale)), _named("mae", run.metrics, val)

    def load_pretrained(state):
        from molspectra_jax.train.handoff import load_pretrained_params

        return state.replace(
            params=load_pretrained_params(state.params, config.init_from, config.model.to_dict())
        )

    extra = {"stats": run.stats._asdict()}
    state, ckpt, writer = fit(
        state=run.state, step_fn=run.step_fn, train_iterator=run.iterators["train"], mesh=mesh,
        config=config, workdir=workdir, desc="fine-tune", extra_arrays=extra,
        init_fn=load_pretrained if config.init_from else None, evaluate_fn=evaluate_valid,
    )  # fmt: skip

    best, _, _ = ckpt.restore("best", checkpoint_arrays(state, extra))
    test = evaluate(run.predict_fn, best["params"], run.iterators["test"], mesh, n_targets)
    baseline = pipeline.mean_predictor_mae(run.splits, "test", forces="forces" in run.metrics)
    writer.write(config.train.num_steps, _named("mae", run.metrics, test), "test")
    rows = {"test MAE (best valid checkpoint)": test, "mean-predictor MAE": baseline}
    table = format_table(run.metrics, run.units, rows)
    result = {
        "test_mae": dict(zip(run.metrics, test.tolist(), strict=True)),
        "mean_predictor_mae": dict(zip(run.metrics, baseline.tolist(), strict=True)),
        "n_train": len(run.splits["train"]),
        "steps": config.train.num_steps,
    }
    if jax.process_index() == 0:
        print(f"\n{table}\n")
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(result, f, indent=2)
    writer.close()
    ckpt.close()
    return result


def _named(prefix: str, targets, values) -> dict[str, float]:
    return {f"{prefix}_{t}": float(v) for t, v in zip(targets, values, strict=True)}
