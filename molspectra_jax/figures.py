"""Figures of a fine-tuning workdir, drawn from what it wrote (PNG under `figures/`):

- `learning_curves.png`: train and valid MAE per target against the step
  (`metrics.jsonl`; train = means over each log interval of the training batches);
- `parity.png`: predicted against true on the test split, MAE in the corner
  (`test_predictions.npz`, written at the end of fine-tuning). Targets fitted with
  atomrefs are drawn without the composition's share (an absolute energy otherwise
  spans the whole range by atom count alone, hiding the errors).

`draw(workdir)` redraws both; `python -m experiments.figures --workdir W` calls it.
Uses matplotlib's object API (no pyplot state, no backend switch).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from molspectra_jax.files import atomic_open

FOLDER = "figures"


def save_png(figure, out: str) -> str:
    """Write a matplotlib figure to `out` as PNG, atomically; returns `out`."""
    with atomic_open(out, "wb") as f:  # never a half-written PNG
        figure.savefig(f, format="png", dpi=110)
    return out


def read_metrics(workdir: str) -> list[dict]:
    """The rows of `<workdir>/metrics.jsonl`; a clear error when there is none."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir}: no metrics.jsonl (not a training workdir?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def learning_curve_series(rows: list[dict]) -> dict[str, dict[str, tuple[list, list]]]:
    """{metric: {split: (steps, values)}} of every `mae_<metric>` in the train and valid rows."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for row in rows:
        if row["split"] not in ("train", "valid"):
            continue
        for key, value in row.items():
            if key.startswith("mae_"):
                steps, values = series.setdefault(key[4:], {}).setdefault(row["split"], ([], []))
                steps.append(row["step"])
                values.append(value)
    return series


def _grid(n: int):
    """(figure, axes list) of n panels, up to 4 per row."""
    from matplotlib.figure import Figure

    cols = min(n, 4)
    rows = math.ceil(n / cols)
    figure = Figure(figsize=(3.6 * cols, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, axes[:n]


def draw_learning_curves(series: dict, units: dict[str, str], out: str) -> str | None:
    """Train/valid MAE per metric (`learning_curve_series`) against the step (log
    scale); None if nothing was logged."""
    if not series:
        return None
    figure, axes = _grid(len(series))
    for ax, (name, splits) in zip(axes, series.items(), strict=True):
        for split, style in (("train", "-"), ("valid", "o-")):
            if split in splits:
                ax.plot(*splits[split], style, label=split, markersize=3)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(f"MAE ({units[name]})" if name in units else "MAE")
        ax.legend(fontsize=8)
    return save_png(figure, out)


def draw_parity(predictions: dict[str, np.ndarray], out: str) -> str:
    """Predicted vs true per target (and force components), the MAE in each panel."""
    names, units = [str(n) for n in predictions["names"]], [str(u) for u in predictions["units"]]
    panels = []
    for i, name in enumerate(names):
        if name == "forces":
            true = predictions["forces_true"].ravel()
            predicted = predictions["forces_predicted"].ravel()
            label = "force components"
        else:
            share = predictions["atomref_sum"][:, i]
            true = predictions["true"][:, i] - share
            predicted = predictions["predicted"][:, i] - share
            label = f"{name} - atomref sum" if np.any(share) else name
        panels.append((label, units[i], true, predicted))
    figure, axes = _grid(len(panels))
    for ax, (label, unit, true, predicted) in zip(axes, panels, strict=True):
        low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
        if len(true) > 5000:
            ax.hexbin(true, predicted, gridsize=60, bins="log", mincnt=1, cmap="viridis")
        else:
            ax.scatter(true, predicted, s=4, alpha=0.5, linewidths=0)
        ax.plot([low, high], [low, high], "k--", linewidth=0.8)
        mae = float(np.mean(np.abs(predicted - true)))
        ax.text(
            0.04, 0.96, f"MAE {mae:.4g} {unit}\nn = {len(true)}", transform=ax.transAxes,
            va="top", fontsize=8, bbox=dict(facecolor="white", alpha=0.8, linewidth=0),
        )  # fmt: skip
        ax.set_title(label)
        ax.set_xlabel(f"true ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
    return save_png(figure, out)


def draw(workdir: str) -> list[str]:
    """Redraw every figure the workdir has the data for; the paths written."""
    series = learning_curve_series(read_metrics(workdir))  # not a workdir: nothing made
    folder = os.path.join(workdir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(workdir, "test_predictions.npz")
    predictions, units = None, {}
    if os.path.exists(path):
        with np.load(path) as f:
            predictions = {k: f[k] for k in f.files}
        names, unit_names = predictions["names"].tolist(), predictions["units"].tolist()
        units = dict(zip(names, unit_names, strict=True))
    written = [draw_learning_curves(series, units, os.path.join(folder, "learning_curves.png"))]
    if predictions is not None:
        written.append(draw_parity(predictions, os.path.join(folder, "parity.png")))
    return [w for w in written if w]
