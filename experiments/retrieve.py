"""Spectrum -> structure search: rank candidate molecules for query spectra.

  python -m experiments.retrieve --workdir workdirs/demo/pretrain --candidates mols.sdf \
      --spectra embedded --ids 1,5,9 --top 10 --out hits.csv
  python -m experiments.retrieve --workdir W --candidates mols.smi \
      --spectrum ir=ir.csv --spectrum raman=raman.csv --out hits.csv

Queries: molecules of a spectra source (`--spectra embedded`, `store:<folder>` from
`experiments.generate_spectra`, or `qm9s:<folder>`; `--ids` picks molecules by id), or
one spectrum given as files (`--spectrum modality=file`): JCAMP-DX (`.jdx`/`.dx`, units
from the file, transmittance converted to absorbance) or two columns (x in the grid's
unit: cm^-1 for IR and Raman, eV for UV), resampled onto the model's grids and scaled
to the median area of the shipped spectra (their own intensity units are unknown).
Candidates: .sdf, .xyz, .smi (3D from RDKit), .csv (a smiles column) or .extxyz. The
model is a stage-2 pre-training workdir; every modality it was pre-trained on is needed.

Writes one CSV row per query and rank: `query`, `rank` (1 = best), `candidate` (its
name), `score` (cosine of the contrastive embeddings).
"""

import sys

import numpy as np
from absl import app, flags, logging

from molspectra_jax import retrieval
from molspectra_jax.data import sources
from molspectra_jax.data.records import DataError
from molspectra_jax.files import write_csv
from molspectra_jax.train.checkpoint import CheckpointError

_WORKDIR = flags.DEFINE_string("workdir", None, "A stage-2 pre-training workdir.")
_CANDIDATES = flags.DEFINE_string("candidates", None, "Candidate molecules (a file).")
_OUT = flags.DEFINE_string("out", None, "CSV of the hits.")
_TOP = flags.DEFINE_integer("top", 10, "Hits per query.")
_SPECTRA = flags.DEFINE_string("spectra", "", "Query molecules' spectra: a spectra source.")
_IDS = flags.DEFINE_list("ids", [], "With --spectra: the molecule ids to query (default all).")
_SPECTRUM = flags.DEFINE_multi_string("spectrum", [], "modality=file: one query's spectra.")
_ON_ERROR = flags.DEFINE_enum("on_error", "raise", ["raise", "skip"], "Bad candidates.")


def source_queries(model, spec: str, ids: list[str]) -> tuple[list[str], dict]:
    """(names, {modality: [Q, L]}) of molecules of a spectra source, by id."""
    dataset = sources.load(spec, model.config.data)
    rows = np.arange(len(dataset))
    if ids:
        where = {int(i): r for r, i in enumerate(dataset.ids)}
        unknown = [i for i in ids if int(i) not in where]
        if unknown:
            raise DataError(f"{spec}: no molecules with ids {unknown[:5]}")
        rows = np.array([where[int(i)] for i in ids])
    spectra = {k: np.asarray(v[rows]) for k, v in dataset.spectra.items()}
    return [str(i) for i in dataset.ids[rows]], spectra


def file_query(model, items: list[str]) -> tuple[list[str], dict]:
    """(["query"], {modality: [1, L]}) of `modality=file` items, scaled to the shipped
    spectra's median areas."""
    reference = retrieval.median_areas(sources.load("embedded", model.config.data).spectra)
    spectra = {}
    for item in items:
        modality, equals, path = item.partition("=")
        if not equals or modality not in reference:
            raise ValueError(
                f"--spectrum {item!r}: expected modality=file, modality in {list(reference)}"
            )
        x, y = retrieval.read_spectrum(path, modality)
        grid = retrieval.on_grid(modality, x, y)
        spectra[modality] = retrieval.scale_to_area(grid, modality, reference[modality])[None]
    return ["query"], spectra


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(_SPECTRA.value) == bool(_SPECTRUM.value):
        raise app.UsageError("give the queries by --spectra (a source) or --spectrum, not both")
    logging.set_verbosity(logging.WARNING)
    try:
        model = retrieval.load(_WORKDIR.value)
        if _SPECTRA.value:
            names, spectra = source_queries(model, _SPECTRA.value, _IDS.value)
        else:
            names, spectra = file_query(model, _SPECTRUM.value)
        hits = model.search(spectra, _CANDIDATES.value, _TOP.value, _ON_ERROR.value)
    except (CheckpointError, DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    rows = (
        [name, rank + 1, hits.names[i], f"{score:.6f}"]
        for q, name in enumerate(names)
        for rank, (i, score) in enumerate(zip(hits.index[q], hits.score[q], strict=True))
    )
    write_csv(_OUT.value, ["query", "rank", "candidate", "score"], rows)
    print(f"wrote {len(names)} x {hits.index.shape[1]} hits to {_OUT.value}")


def cli():
    """The console script `molspectra-retrieve`."""
    flags.mark_flags_as_required(["workdir", "candidates", "out"])
    app.run(main)


if __name__ == "__main__":
    cli()
