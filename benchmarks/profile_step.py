"""Where a denoising step's time goes: XLA ops by kind, the largest ops, and threads.

  python -m benchmarks.profile_step --config paper --batch 32
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python -m benchmarks.profile_step
  python -m benchmarks.profile_step --model=layout=dense --top 40

The step is `benchmarks.versus_torchmdnet`'s (our stage-1 denoising step, the same
sizes and `--model` overrides). After compilation and warm-up steps it traces `--steps`
steps with `jax.profiler` and reads the Perfetto trace back: op time per step summed
over threads, by kind (gather, scatter, concatenate, reduce, dot, elementwise/other),
the `--top` ops with their output shape and the JAX operation they come from, and the
busy time of each thread against the step's wall time (on CPU, how much of the cores
XLA's thunk runtime keeps busy). The last line is the summary as JSON.
"""

import collections
import glob
import gzip
import json
import re
import tempfile
import time

from absl import app, flags

from benchmarks import versus_torchmdnet as versus

_CONFIG = flags.DEFINE_enum("config", "small", list(versus.ET), "ET size.")
_BATCH = flags.DEFINE_integer("batch", 128, "Molecules per batch.")
_STEPS = flags.DEFINE_integer("steps", 5, "Traced steps (after 3 warm-up steps).")
_TOP = flags.DEFINE_integer("top", 25, "How many of the largest ops to list.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "", "Keep the trace here (default: a temp dir).")

# Events of the runtime, of dispatch and of Python, not ops of the program.
_NOT_OPS = ("ThunkExecutor", "$", "PjitFunction", "CommonPjRt", "ParseArguments")


def op_kind(name: str) -> str:
    """An XLA CPU thunk or fusion name -> its kind, by the ops its name is built from."""
    base = re.sub(r"\.\d+$", "", name)
    for kind in ("scatter", "gather", "concatenate"):
        if kind in base:
            return kind
    if base.startswith(("dot", "ynn")):
        return "dot"
    if "reduce" in base and "reduce-window" not in base:
        return "reduce"
    return "elementwise/other"


def op_events(trace_dir: str) -> list[dict]:
    """The complete ("X") op events of the newest Perfetto trace under `trace_dir`."""
    paths = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(paths[-1]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [e for e in events if e.get("ph") == "X" and not e["name"].startswith(_NOT_OPS)]


def hlo_origins(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Compiled HLO text -> {instruction: (output shape, the JAX op_name it came from)}."""
    origins = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        if match:
            op = re.search(r'op_name="([^"]+)"', line)
            origins[match.group(1)] = (match.group(2), op.group(1) if op else "")
    return origins


def summarise(events: list[dict], steps: int, wall_s: float) -> dict:
    """Per-step op time (ms) by op, by kind and by thread; the thread use of the cores."""
    by_op, by_kind, by_thread = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        ms = e.get("dur", 0) / 1000 / steps
        by_op[e["name"]] += ms
        by_kind[op_kind(e["name"])] += ms
        by_thread[e["tid"]] += ms
    step_ms = 1000 * wall_s / steps
    busy = [ms for ms in by_thread.values() if ms > 0.01 * step_ms]
    return {
        "step_ms": step_ms,
        "op_ms": sum(by_kind.values()),
        "kinds_ms": dict(by_kind.most_common()),
        "ops_ms": by_op,
        "busy_threads_ms": sorted(busy, reverse=True),
        "cores_busy": sum(busy) / step_ms,
    }


def main(argv):
    del argv
    import jax

    side = versus.OurSide(versus._OVERRIDES.value)
    name, batch = _CONFIG.value, _BATCH.value
    side.build(name, batch, 4)
    case = side.cases[name, batch]
    run, device = case["run"], case["device"]

    def steps(n):
        for i in range(n):
            case["state"], metrics = run.step_fn(case["state"], device[i % len(device)])
            jax.block_until_ready(metrics)

    steps(3)
    trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="profile_step_")
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    t0 = time.perf_counter()
    steps(_STEPS.value)
    wall_s = time.perf_counter() - t0
    jax.profiler.stop_trace()

    summary = summarise(op_events(trace_dir), _STEPS.value, wall_s)
    origins = hlo_origins(run.step_fn.lower(case["state"], device[0]).compile().as_text())
    print(
        f"{name} batch {batch}: {summary['step_ms']:.1f} ms per traced step, "
        f"{summary['op_ms']:.1f} ms of op time ({summary['cores_busy']:.2f} cores busy)"
    )
    for kind, ms in summary["kinds_ms"].items():
        print(f"  {kind:18s} {ms:9.1f} ms  {100 * ms / summary['op_ms']:5.1f}%")
    print(f"largest {_TOP.value} ops (ms per step, output shape, from):")
    for op, ms in summary["ops_ms"].most_common(_TOP.value):
        shape, origin = origins.get(op, ("?", ""))
        print(f"  {ms:8.2f} {op:34s} {shape[:36]:36s} {origin[-90:]}")
    print(f"trace: {trace_dir}")
    summary.pop("ops_ms")
    print(json.dumps(dict(config=name, batch=batch, steps=_STEPS.value, **summary)))


if __name__ == "__main__":
    app.run(main)
