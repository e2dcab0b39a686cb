"""Pre-training -> fine-tuning hand-off: copy matching parameter subtrees by name.

The pre-trained checkpoint's params are {"encoder", "noise_head", "specformer"}; a
fine-tuning model has {"encoder", "head_<t>_<kind>", "noise_head"?}. Every top-level
subtree present in both with identical structure and shapes is copied; everything
else keeps its fresh initialisation, and the report says which is which. A copied
SpecFormer brings its BatchNorm running statistics (`start_from`, which stage 2 and
fine-tuning call through `initialiser(config)`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import numpy as np

from molspectra_jax.models import COMPUTE_FIELDS
from molspectra_jax.train.checkpoint import CheckpointError, read_checkpoint_arrays


def _checkpoint_dir(path: str) -> str:
    """A pre-training workdir or a checkpoint folder -> the folder holding step dirs."""
    for candidate in (os.path.join(path, "checkpoints", "latest"), path):
        if os.path.isdir(candidate) and any(p.isdigit() for p in os.listdir(candidate)):
            return candidate
    raise CheckpointError(f"{path}: no checkpoint found (expected <workdir>/checkpoints/latest)")


def _size(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def _same_layout(a, b) -> bool:
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.shape(x) == np.shape(y) for x, y in pairs)


def load_pretrained_params(params: dict, path: str, model_config: dict) -> dict:
    """`params` with every subtree that matches the checkpoint at `path` replaced by it.

    Raises CheckpointError if the encoder architectures differ or nothing of the encoder
    can be loaded. Prints what was loaded and what was not.
    """
    return _load(params, path, model_config)[0]


def initialiser(config) -> Callable | None:
    """`state -> start_from(state, config.init_from, ...)` for `loop.Run.init_from`; None
    when the config starts from scratch."""
    if not config.init_from:
        return None
    return functools.partial(start_from, path=config.init_from, model_config=config.model.to_dict())


def _cast_like(template, source):
    """`source`'s arrays (same tree as `template`) in `template`'s dtypes, on the host."""
    return jax.tree.map(lambda x, y: np.asarray(y, np.asarray(x).dtype), template, source)


def start_from(state, path: str, model_config: dict):
    """`state` (a fresh `TrainState`) from the checkpoint at `path`: its matching params
    (`load_pretrained_params`), SpecFormer's BatchNorm statistics with its weights, and a
    fresh optimizer state of these weights (a weight EMA starts from them too)."""
    params, loaded, arrays = _load(state.params, path, model_config)
    batch_stats = state.batch_stats  # SpecFormer's: {} without one
    pretrained_stats = arrays.get("batch_stats") or {}
    if "specformer" in loaded and batch_stats and _same_layout(batch_stats, pretrained_stats):
        batch_stats = _cast_like(batch_stats, pretrained_stats)
        print("loaded with the specformer: its BatchNorm running statistics")
    return state.replace(params=params, opt_state=state.tx.init(params), batch_stats=batch_stats)


def _load(params: dict, path: str, model_config: dict) -> tuple[dict, list[str], dict]:
    """(params with the checkpoint's matching subtrees, their names, the checkpoint's
    arrays)."""
    directory = _checkpoint_dir(path)
    arrays, config = read_checkpoint_arrays(directory)
    pretrained_model = config.get("model", {})
    differ = {
        k: (pretrained_model.get(k), v)
        for k, v in model_config.items()
        if pretrained_model.get(k) != v
        and not isinstance(v, (list, tuple))
        and k not in COMPUTE_FIELDS
    }
    if differ:
        raise CheckpointError(
            f"{directory}: encoder config differs from this run's (pre-trained, here): {differ}"
        )
    pretrained = arrays["params"]
    loaded, skipped = [], []
    out = dict(params)
    for name, subtree in params.items():
        if name in pretrained and _same_layout(subtree, pretrained[name]):
            out[name] = _cast_like(subtree, pretrained[name])
            loaded.append(name)
        else:
            skipped.append(name)
    if "encoder" not in loaded:
        raise CheckpointError(f"{directory}: no encoder parameters matching this model")
    unused = sorted(set(pretrained) - set(loaded))
    print(
        f"loaded from {directory}: " + ", ".join(f"{n} ({_size(out[n]):,} params)" for n in loaded)
    )
    print(
        "freshly initialised: "
        + (", ".join(f"{n} ({_size(out[n]):,})" for n in skipped) or "nothing")
    )
    print("in the checkpoint but unused: " + (", ".join(unused) or "nothing"))
    return out, loaded, arrays
