"""Metric sinks: JSON lines (machine-readable) and TensorBoard, written by process 0."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from molspectra_jax.files import atomic_open


class MetricWriter:
    """`write(step, {name: value}, prefix)` to `<workdir>/metrics.jsonl` and TensorBoard.

    `resumed_from=step`: a resumed run first drops what the interrupted one logged after
    `step` (it is logged again) and the final "test" lines, so no step appears twice.
    """

    def __init__(self, workdir: str, tensorboard: bool = True, resumed_from: int | None = None):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if self.active and resumed_from is not None and os.path.exists(self.path):
            with open(self.path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            kept = [r for r in rows if r["step"] <= resumed_from and r["split"] != "test"]
            with atomic_open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        if self.active and tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resumed_from is None else resumed_from + 1
            self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

    def write(self, step: int, metrics: dict, prefix: str = "train") -> None:
        if not self.active:
            return
        values = {k: float(np.asarray(v)) for k, v in metrics.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "split": prefix, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, int(step))
            self.tb.flush()

    def hyperparameters(self, flat: dict[str, tuple]) -> None:
        """The run's config ({"section.field": (_, value)}, `loop.config_changes({}, ...)`)
        as a TensorBoard text table beside the curves (config.json holds it too)."""
        if self.tb is None:
            return
        rows = "\n".join(f"| {k} | {v!r} |" for k, (_, v) in sorted(flat.items()))
        self.tb.add_text("hyperparameters", "| field | value |\n|---|---|\n" + rows, 0)
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
