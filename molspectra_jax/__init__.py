"""molspectra-jax: 3D molecular pre-training with energy spectra (MolSpectra) in JAX.

Public API, imported on first use so that `from molspectra_jax import losses` still
pulls in nothing but jax:

- `Graph`: the padded graph every model takes (`molspectra_jax.graph`).
- `losses`: denoising, masked patch reconstruction, InfoNCE, property and force losses.
- `SPECTRA`: the spectrum table (grids, patches, store fields; `molspectra_jax.spectra`).
- `build_encoder(config.model)`: an encoder by name (`molspectra_jax.models`).
- `load_dataset(spec, config.data)`: molecules (and spectra) of a registered source
  (`molspectra_jax.data.sources`).
- `load(workdir)`: a trained (or imported) model with `predict` and `embed`
  (`molspectra_jax.inference`).
- `pretrain`, `finetune`: each task's `setup(config, mesh) -> Run` and
  `train_and_evaluate(config, workdir)` (`molspectra_jax.train`).
"""

import importlib

__version__ = "0.3.2"

_LAZY = {
    "Graph": ("molspectra_jax.graph", "Graph"),
    "losses": ("molspectra_jax.losses", None),
    "SPECTRA": ("molspectra_jax.spectra", "SPECTRA"),
    "build_encoder": ("molspectra_jax.models", "build_encoder"),
    "load_dataset": ("molspectra_jax.data.sources", "load"),
    "load": ("molspectra_jax.inference", "load"),
    "pretrain": ("molspectra_jax.train.pretrain", None),
    "finetune": ("molspectra_jax.train.finetune", None),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'molspectra_jax' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__():
    return sorted(__all__)
