"""Spectrum -> structure retrieval on molecules held out of pre-training.

  python -m benchmarks.retrieval --workdir all=workdirs/demo/pretrain \
      --workdir ir=workdirs/pretrain_ir --out benchmarks/results/retrieval.json

For each stage-2 workdir (label=path), the queries are the spectra of its pre-training
validation molecules (never trained on), the candidates their structures, and each
query's own structure must be found among all N: top-1/5/10 accuracy against chance
(k/N). A model pre-trained on a subset of modalities (`specformer.spectra`) is queried
with that subset only.
"""

import json
import platform
import time

import numpy as np
from absl import app, flags, logging

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "label=stage-2 workdir.")
_KS = flags.DEFINE_list("k", ["1", "5", "10"], "Top-k cut-offs.")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def held_out_ranks(model) -> np.ndarray:
    """[N] 0-based rank of each held-out molecule's own structure for its spectra."""
    from molspectra_jax.train.pretrain import load_splits

    _, dataset, rows = load_splits(model.config)
    held_out = dataset.subset(rows["valid"])
    queries = model.embed_spectra({k: np.asarray(v) for k, v in held_out.spectra.items()})
    keys, _ = model.embed_molecules(held_out)
    scores = queries @ keys.T  # [N, N]
    own = np.diag(scores)
    return (scores > own[:, None]).sum(axis=1)  # how many candidates beat the right one


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from molspectra_jax import retrieval

    ks = [int(k) for k in _KS.value]
    results = []
    for item in _WORKDIRS.value:
        label, _, path = item.partition("=")
        model = retrieval.load(path)
        ranks = held_out_ranks(model)
        n = len(ranks)
        row = {"model": label, "workdir": path, "spectra": list(model.spectra), "n": n}
        row.update({f"top{k}": float(np.mean(ranks < k)) for k in ks})
        row.update({f"chance_top{k}": min(k, n) / n for k in ks})
        row["median_rank"] = float(np.median(ranks) + 1)
        results.append(row)
    header = "| model | spectra | N | " + " | ".join(f"top-{k}" for k in ks) + " | median rank |"
    lines = [header, "|---" * (4 + len(ks)) + "|"]
    for r in results:
        cells = [f"{100 * r[f'top{k}']:.0f}% ({100 * r[f'chance_top{k}']:.0f}%)" for k in ks]
        spectra = "+".join(r["spectra"])
        lines.append(
            f"| {r['model']} | {spectra} | {r['n']} | "
            + " | ".join(cells)
            + f" | {r['median_rank']:g} |"
        )
    print("\n".join(lines) + "\n(chance in brackets)")
    if _OUT.value:
        meta = {"machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
        with open(_OUT.value, "w") as f:
            json.dump({"results": results, **meta}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
