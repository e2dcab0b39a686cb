"""Speed side by side: torchmd-net's ET and ours, the same denoising step on the same molecules.

  python -m benchmarks.versus_torchmdnet --out benchmarks/results/cpu_versus_torchmdnet.json
  python -m benchmarks.versus_torchmdnet --cases small:32 --repeats 1   # a quick look
  python -m benchmarks.versus_torchmdnet --impls molspectra-jax --model=layout=dense  # ours only

The step (Coord's stage 1, as both codebases train it): Gaussian noise (sigma 0.04 Å) on
QM9 equilibrium coordinates, the ET forward on the noisy molecules, the equivariant
vector head (torchmd-net's `EquivariantVectorOutput`, ours `VectorHead`), MSE against
the noise, backward, AdamW. Ours is `experiments.pretrain`'s stage-1 step (config
`pretrain_qm9s`, stage 1); torchmd-net's is its own ET (`create_model`, neighbour list
on the fly, as it trains). Both ETs are upstream (no fork norms), with the same sizes:
`small` 64 hidden, 3 layers, 4 heads, 32 RBF; `paper` 256, 8, 8, 64; cutoff 5 Å.

Each implementation runs in its own worker process pinned to the same `--threads` cores
(torchmd-net with the malloc settings it needs here). The workers build every case
once (compilation, warm-up), then the measurements alternate between them, the other
idle, and each reports molecules/s over `--seconds` of steps cycling over the same
batches: ours draws them from its training iterator (with its padding) and hands their
molecule rows to torchmd-net. `step` times the step alone (batches ready on the
device); `loop` includes the input pipeline (ours: candidate pairs and collation in the
prefetch thread; torchmd-net: tensors built from the rows each step). The table and
the JSON lines give medians over `--repeats`.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import app, flags, logging

from benchmarks.warmup import compile_every_shape, sample_batches

_CASES = flags.DEFINE_list("cases", ["small:32", "small:128", "paper:32"], "config:batch pairs.")
_IMPLS = flags.DEFINE_list("impls", ["torchmd-net", "molspectra-jax"], "Which sides to run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating measurements per case and side.")
_SECONDS = flags.DEFINE_float("seconds", 6.0, "Minimum timed seconds per measurement.")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU cores (and threads) given to each side.")
_BATCHES = flags.DEFINE_integer("batches", 8, "Distinct batches per case, cycled.")
_OUT = flags.DEFINE_string("out", "", "Write all measurements and the summary as JSON here.")
_WORKER = flags.DEFINE_enum("worker", "", ["", "torchmd-net", "molspectra-jax"], "(internal)")
_OVERRIDES = flags.DEFINE_multi_string(
    "model", [], "Our side's config.model overrides, e.g. --model=layout=dense."
)

ET = {
    "small": dict(hidden=64, num_layers=3, num_heads=4, num_rbf=32),
    "paper": dict(hidden=256, num_layers=8, num_heads=8, num_rbf=64),
}
UPSTREAM = dict(cutoff=5.0, max_num_neighbors=32, layernorm_on_vec="none", layer_norms=False)
SIGMA = 0.04  # Å
LR = 4e-4
TORCH_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def _timed(run_step, seconds: float) -> float:
    """Molecules/s of `run_step(i)` (one step, blocking; returns its molecule count)
    repeated for at least `seconds`."""
    i, molecules, t0 = 0, 0, time.perf_counter()
    while True:
        molecules += run_step(i)
        i += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and i >= 3:
            return molecules / elapsed


def _parse(text: str, like):
    """`text` as the type of the config value `like` (bools from true/false)."""
    if isinstance(like, bool):
        return text.lower() in ("1", "true", "yes")
    return type(like)(text)


class OurSide:
    """Our stage-1 pre-training step, built per case by `pretrain.setup`."""

    def __init__(self, overrides: list[str]):
        import jax

        from molspectra_jax.train import sharding

        self.jax, self.sharding = jax, sharding
        self.overrides = [o.split("=", 1) for o in overrides]
        self.cases = {}

    def build(self, config_name: str, batch: int, n_batches: int) -> dict:
        from molspectra_jax.configs import pretrain_qm9s
        from molspectra_jax.train import pretrain

        c = pretrain_qm9s.get_config()
        c.stage = 1
        c.data.update(source="qm9", batch_size=batch, n_valid=64, eval_batch_size=64)
        c.model.update(**ET[config_name], **UPSTREAM)
        for key, value in self.overrides:
            c.model[key] = _parse(value, c.model[key])
        c.optim.update(learning_rate=LR, clip_norm=0.0)
        c.loss.noise_sigma = SIGMA
        mesh = self.sharding.make_mesh()
        run = pretrain.setup(c, mesh)
        host = sample_batches(run.iterators["train"], n_batches)
        device = [self.sharding.global_batch(b, mesh) for b in host]
        state = self.sharding.replicate(run.state, mesh)
        t0 = time.perf_counter()
        state, metrics = run.step_fn(state, device[0])
        self.jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        # The dense layout compiles one program per size bucket: all before the clock.
        state = compile_every_shape(run, state, device)
        molecules = [int(b.graph.graph_mask.sum()) for b in host]
        self.cases[config_name, batch] = dict(
            run=run, mesh=mesh, device=device, state=state, molecules=molecules, config=c
        )
        rows = [b.molecule_index[b.graph.graph_mask].tolist() for b in host]
        return {
            "rows": rows,
            "compile_s": compile_s,
            "programs": run.step_fn._cache_size(),
            "model": c.model.to_dict(),
        }

    def measure(self, config_name: str, batch: int, seconds: float) -> dict:
        from molspectra_jax.data.prefetch import Prefetcher

        case = self.cases[config_name, batch]
        run, device = case["run"], case["device"]

        def step(i):
            case["state"], metrics = run.step_fn(case["state"], device[i % len(device)])
            self.jax.block_until_ready(metrics)
            return case["molecules"][i % len(device)]

        step_mol_s = _timed(step, seconds)
        feed = Prefetcher(
            run.iterators["train"],
            case["config"].data.prefetch,
            transform=lambda b: (
                self.sharding.global_batch(b, case["mesh"]),
                int(b.graph.graph_mask.sum()),
            ),
        )

        def loop(i):
            batch, molecules = next(feed)
            case["state"], metrics = run.step_fn(case["state"], batch)
            self.jax.block_until_ready(metrics)
            return molecules

        loop_mol_s = _timed(loop, seconds)
        feed.close()
        return {"step_mol_s": step_mol_s, "loop_mol_s": loop_mol_s}


class TorchSide:
    """torchmd-net's ET + EquivariantVectorOutput, its neighbour list found in the forward."""

    def __init__(self, threads: int):
        import torch

        from molspectra_jax.data.qm9 import load_qm9

        torch.set_num_threads(threads)
        self.torch = torch
        self.data = load_qm9()
        self.cases = {}

    def build(self, config_name: str, batch: int, rows: list[list[int]]) -> dict:
        from torchmdnet.models.model import create_model

        from molspectra_jax.interop.torchmdnet import hyperparameters

        torch = self.torch
        torch.manual_seed(0)
        args = hyperparameters(
            dict(name="et", **ET[config_name], **UPSTREAM), output_model="VectorOutput"
        )
        model = create_model(args)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        tensors = [self.tensors(r) for r in rows]
        case = dict(model=model, optimizer=optimizer, tensors=tensors, rows=rows, batch=batch)
        self.cases[config_name, batch] = case
        t0 = time.perf_counter()
        self.step(case, tensors[0])
        return {"compile_s": time.perf_counter() - t0, "torch": torch.__version__}

    def tensors(self, rows: list[int]):
        torch, data = self.torch, self.data
        molecules = [data.molecule(m) for m in rows]
        z = np.concatenate([m[0] for m in molecules]).astype(np.int64)
        pos = np.concatenate([m[1] for m in molecules]).astype(np.float32)
        index = np.repeat(np.arange(len(rows)), [len(m[0]) for m in molecules])
        return torch.from_numpy(z), torch.from_numpy(pos), torch.from_numpy(index)

    def step(self, case, tensors) -> None:
        torch, model = self.torch, case["model"]
        z, pos, index = tensors
        noise = SIGMA * torch.randn_like(pos)
        x, v, z, noisy, index = model.representation_model(z, pos + noise, index)
        predicted = model.output_model.pre_reduce(x, v, z, noisy, index)  # [N, 3]
        loss = ((predicted - noise / SIGMA) ** 2).mean()
        case["optimizer"].zero_grad()
        loss.backward()
        case["optimizer"].step()

    def measure(self, config_name: str, batch: int, seconds: float) -> dict:
        case = self.cases[config_name, batch]
        tensors, rows = case["tensors"], case["rows"]

        def step(i):
            self.step(case, tensors[i % len(tensors)])
            return len(rows[i % len(rows)])

        def loop(i):
            self.step(case, self.tensors(rows[i % len(rows)]))
            return len(rows[i % len(rows)])

        step_mol_s, loop_mol_s = _timed(step, seconds), _timed(loop, seconds)
        return {"step_mol_s": step_mol_s, "loop_mol_s": loop_mol_s}


def worker_main(impl: str) -> None:
    """Serve build/measure requests, one JSON line each way, until stdin closes."""
    side = TorchSide(_THREADS.value) if impl == "torchmd-net" else OurSide(_OVERRIDES.value)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "build":
            args = request["rows"] if impl == "torchmd-net" else _BATCHES.value
            reply = side.build(request["config"], request["batch"], args)
        else:
            reply = side.measure(request["config"], request["batch"], request["seconds"])
        print(json.dumps(reply), flush=True)


class Worker:
    """A side in its own process on cores [0, threads), spoken to by JSON lines."""

    def __init__(self, impl: str, threads: int, overrides: list[str]):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
        if impl == "torchmd-net":
            env.update(TORCH_ENV)
        command = [sys.executable, "-m", "benchmarks.versus_torchmdnet", f"--worker={impl}"]
        command += [f"--threads={threads}", f"--batches={_BATCHES.value}"]
        command += [f"--model={o}" for o in overrides]
        cores = sorted(os.sched_getaffinity(0))[:threads]
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        )
        self.impl = impl
        self._read()

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the {self.impl} worker exited ({self.process.wait()})")

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _WORKER.value:
        return worker_main(_WORKER.value)
    cases = [(name, int(batch)) for name, batch in (c.split(":") for c in _CASES.value)]
    impls = [i for i in ("torchmd-net", "molspectra-jax") if i in _IMPLS.value]
    if "molspectra-jax" not in impls:
        raise app.UsageError("--impls needs molspectra-jax: it draws the batches both sides run")
    print(f"starting workers: {', '.join(impls)} ({_THREADS.value} cores each)", flush=True)
    workers = {i: Worker(i, _THREADS.value, _OVERRIDES.value) for i in impls}
    builds = {}
    for name, batch in cases:
        # Ours draws the batches (its iterator, its padding); torchmd-net gets their rows.
        reply = Worker.ask(workers["molspectra-jax"], op="build", config=name, batch=batch)
        builds[name, batch] = {"molspectra-jax": reply}
        if "torchmd-net" in workers:
            builds[name, batch]["torchmd-net"] = workers["torchmd-net"].ask(
                op="build", config=name, batch=batch, rows=reply["rows"]
            )
        print(f"built {name} batch {batch}", flush=True)
    measurements = []
    for repeat in range(_REPEATS.value):
        for name, batch in cases:
            order = impls if repeat % 2 == 0 else impls[::-1]  # alternate who goes first
            for impl in order:
                reply = workers[impl].ask(
                    op="measure", config=name, batch=batch, seconds=_SECONDS.value
                )
                measurements.append(dict(impl=impl, config=name, batch=batch, **reply))
                print(
                    f"  {impl:15s} {name:6s} batch {batch:4d}: step {reply['step_mol_s']:8.1f}"
                    f" mol/s, loop {reply['loop_mol_s']:8.1f} mol/s",
                    flush=True,
                )
    for worker in workers.values():
        worker.close()

    summary = []
    for name, batch in cases:
        row = {}
        for impl in impls:
            mine = [
                m
                for m in measurements
                if (m["impl"], m["config"], m["batch"]) == (impl, name, batch)
            ]
            row[impl] = {
                "impl": impl,
                "config": name,
                "batch": batch,
                "median_mol_s": statistics.median(m["step_mol_s"] for m in mine),
                "median_loop_mol_s": statistics.median(m["loop_mol_s"] for m in mine),
                "repeats": len(mine),
            }
            summary.append(row[impl])
        if len(impls) == 2:
            ratio = row["molspectra-jax"]["median_mol_s"] / row["torchmd-net"]["median_mol_s"]
            loop_ratio = (
                row["molspectra-jax"]["median_loop_mol_s"] / row["torchmd-net"]["median_loop_mol_s"]
            )
            row["molspectra-jax"].update(ratio=ratio, loop_ratio=loop_ratio)

    print("\n| config | batch | torchmd-net mol/s | molspectra-jax mol/s | ratio | loop ratio |")
    print("|---|---|---|---|---|---|")
    for name, batch in cases:
        cells = {s["impl"]: s for s in summary if (s["config"], s["batch"]) == (name, batch)}
        tmd, ours = cells.get("torchmd-net"), cells.get("molspectra-jax")
        fmt = lambda s, k: f"{s[k]:.1f}" if s else "-"  # noqa: E731
        ratio = f"{ours['ratio']:.2f}" if ours and "ratio" in ours else "-"
        loop = f"{ours['loop_ratio']:.2f}" if ours and "loop_ratio" in ours else "-"
        print(
            f"| {name} | {batch} | {fmt(tmd, 'median_mol_s')} | {fmt(ours, 'median_mol_s')} "
            f"| {ratio} | {loop} |"
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {_THREADS.value} per side",
        "seconds_per_measurement": _SECONDS.value,
        "overrides": _OVERRIDES.value,
        "builds": {
            f"{k[0]}:{k[1]}": {i: {x: y for x, y in v.items() if x != "rows"} for i, v in b.items()}
            for k, b in builds.items()
        },
        "measurements": measurements,
        "summary": summary,
    }
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)
    for s in summary:
        print(json.dumps(s))


if __name__ == "__main__":
    app.run(main)
