"""Spectrum -> structure retrieval on molecules held out of pre-training, against a
model-free baseline.

  python -m benchmarks.retrieval --workdir all=workdirs/demo/pretrain \
      --workdir ir=workdirs/pretrain_ir --out benchmarks/results/retrieval.json

For each stage-2 workdir (label=path), the candidates are the structures of its
pre-training validation molecules (never trained on) and each query's own structure
must be found among all N: top-1/5/10 accuracy against chance (k/N). A model
pre-trained on a subset of modalities (`specformer.spectra`) is queried with that
subset only.

Two kinds of query:
- `same`: each molecule's spectra exactly as pre-training drew them;
- `shifted`: the same sticks drawn as another method or instrument would: every peak
  position scaled by `--shift_scale` (harmonic frequencies and excitation energies are
  off by a few per cent) and every width by `--width_scale` (stores with sticks only).

The baseline needs no model but a reference library: the cosine between the query's
spectra and each candidate's own computed (`same`) spectra, averaged over modalities.
It is perfect on `same` queries by construction (the library holds the query itself),
so its `shifted` row is the one that says how hard the task is; the model needs only
the candidates' structures.
"""

import dataclasses
import json
import platform
import time

import numpy as np
from absl import app, flags, logging

from molspectra_jax.diagnostics import own_ranks

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "label=stage-2 workdir.")
_KS = flags.DEFINE_list("k", ["1", "5", "10"], "Top-k cut-offs.")
_SHIFT = flags.DEFINE_float("shift_scale", 0.98, "Peak positions x this in `shifted`.")
_WIDTH = flags.DEFINE_float("width_scale", 2.0, "Peak widths x this in `shifted`.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def spectrum_cosine(queries: dict, library: dict) -> np.ndarray:
    """[Q, N] cosine between query and library spectra ({modality: [., L]}), the mean
    over the modalities of `queries`."""

    def unit(a):
        a = np.asarray(a, np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return np.mean([unit(queries[k]) @ unit(library[k]).T for k in queries], axis=0)


def shifted_spectra(config, ids: np.ndarray, names, shift: float, width: float):
    """{modality: [N, L]} of molecules `ids` re-broadened from their sticks with positions
    x `shift` and widths x `width`; None when the spectra source keeps no sticks."""
    from molspectra_jax.data import sources
    from molspectra_jax.spectra import SPECTRA
    from molspectra_jax.spectroscopy import embedded

    source, folder = sources.resolve(config.data.spectra)
    if source.name not in ("embedded", "store"):
        return None
    sticks = embedded.load_spectra(folder or embedded.embedded_spectra_dir())
    row_of = {int(i): r for r, i in enumerate(sticks.ids)}
    types = {}
    for name in names:
        t = SPECTRA[name]
        types[name] = dataclasses.replace(
            t,
            sticks=dataclasses.replace(t.sticks, scale=t.sticks.scale * shift),
            peaks=dataclasses.replace(t.peaks, fwhm=t.peaks.fwhm * width),
        )
    return embedded.broaden_batch(sticks, np.array([row_of[int(i)] for i in ids]), types)


def evaluate(model, ks, shift: float, width: float) -> list[dict]:
    """One row per (query kind, method) for a stage-2 model."""
    from molspectra_jax.train.pretrain import load_splits

    _, dataset, rows = load_splits(model.config)
    held_out = dataset.subset(rows["valid"])
    library = {k: np.asarray(held_out.spectra[k]) for k in model.spectra}
    keys, _ = model.embed_molecules(held_out)
    queries = {"same": library}
    shifted = shifted_spectra(model.config, held_out.ids, model.spectra, shift, width)
    if shifted is not None:
        queries["shifted"] = shifted
    out = []
    for kind, spectra in queries.items():
        by_method = {
            "model": model.embed_spectra(spectra) @ keys.T,
            "spectrum cosine": spectrum_cosine(spectra, library),
        }
        for method, scores in by_method.items():
            r = own_ranks(scores)
            row = {"queries": kind, "method": method, "n": len(r)}
            row.update({f"top{k}": float(np.mean(r < k)) for k in ks})
            row.update({f"chance_top{k}": min(k, len(r)) / len(r) for k in ks})
            row["median_rank"] = float(np.median(r) + 1)
            out.append(row)
    return out


def table(results: list[dict], ks) -> str:
    header = "| model | spectra | queries | method | N | "
    header += " | ".join(f"top-{k}" for k in ks) + " | median rank |"
    lines = [header, "|---" * (6 + len(ks)) + "|"]
    for r in results:
        cells = [f"{100 * r[f'top{k}']:.0f}% ({100 * r[f'chance_top{k}']:.0f}%)" for k in ks]
        lines.append(
            f"| {r['model']} | {'+'.join(r['spectra'])} | {r['queries']} | {r['method']} | "
            f"{r['n']} | " + " | ".join(cells) + f" | {r['median_rank']:g} |"
        )
    return "\n".join(lines) + "\n(chance in brackets)"


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from molspectra_jax import retrieval

    ks = [int(k) for k in _KS.value]
    results = []
    for item in _WORKDIRS.value:
        label, _, path = item.partition("=")
        model = retrieval.load(path)
        for row in evaluate(model, ks, _SHIFT.value, _WIDTH.value):
            results.append({"model": label, "workdir": path, "spectra": list(model.spectra), **row})
    print(table(results, ks))
    if _OUT.value:
        meta = {
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
            "shift_scale": _SHIFT.value,
            "width_scale": _WIDTH.value,
        }
        with open(_OUT.value, "w") as f:
            json.dump({"results": results, **meta}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
