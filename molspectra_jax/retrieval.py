"""Spectrum -> structure search with a stage-2 pre-training workdir.

  from molspectra_jax import retrieval
  model = retrieval.load("workdirs/pretrain_stage2")
  hits = model.search({"ir": ir, "raman": raman, "uv": uv}, "candidates.sdf", k=10)
  hits.index[q], hits.score[q]        # the k best candidates of query q, best first

Queries are spectra on the model's grids (`molspectra_jax.spectra.SPECTRA`), one row
per query and one array per modality the model was pre-trained on
(`config.specformer.spectra`); SpecFormer embeds them, the 3D encoder embeds the
candidates (sum-pooled atom scalars), and candidates rank by the cosine of the two
embeddings, the similarity the contrastive loss trained. A model pre-trained on a
subset (`specformer.spectra=("ir",)`) takes IR-only queries; a query lacking a modality
the model needs is an error naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from molspectra_jax.data.records import DataError
from molspectra_jax.inference import (
    as_dataset,
    check_model_fields,
    checkpoint_folder,
    embed_dataset,
    pooled_embedding,
)
from molspectra_jax.models.specformer import build_specformer
from molspectra_jax.spectra import SPECTRA
from molspectra_jax.spectra import spectrum as spectrum_type
from molspectra_jax.train.checkpoint import CheckpointError, read_checkpoint_arrays


@dataclasses.dataclass(frozen=True)
class Hits:
    """The `k` best candidates of each of Q queries, best first."""

    index: np.ndarray  # [Q, k] candidate rows
    score: np.ndarray  # [Q, k] cosine similarity
    names: list[str]  # the candidates' names (index into it)


@dataclasses.dataclass
class SpectraModel:
    """A stage-2 pre-trained encoder + SpecFormer, for embedding and search."""

    config: ml_collections.ConfigDict
    params: dict  # encoder params + params["specformer"]
    batch_stats: dict  # SpecFormer's BatchNorm running statistics
    batch_size: int = 64

    @property
    def spectra(self) -> tuple[str, ...]:
        """The modalities every query must have."""
        return tuple(self.config.specformer.spectra)

    @functools.cached_property
    def specformer(self):
        """The SpecFormer module of `params["specformer"]`."""
        return build_specformer(self.config.specformer)

    @functools.cached_property
    def _specformer_fn(self):
        specformer = self.specformer

        def embed(variables, spectra):
            return specformer.apply(variables, spectra, train=False)["embedding"]

        return jax.jit(embed)

    def embed_spectra(self, spectra: Mapping[str, np.ndarray]) -> np.ndarray:
        """[Q, E] unit-norm SpecFormer embeddings of `spectra` ({modality: [Q, L]} on the
        model's grids; extra modalities are ignored)."""
        missing = [name for name in self.spectra if name not in spectra]
        if missing:
            raise ValueError(
                f"the query lacks {missing}: this model was pre-trained on {list(self.spectra)} "
                f"(got {sorted(spectra)})"
            )
        arrays = {name: np.asarray(spectra[name], np.float32) for name in self.spectra}
        q = len(next(iter(arrays.values())))
        for name, array in arrays.items():
            expected = (q, SPECTRA[name].grid.length)
            if array.shape != expected:
                raise ValueError(f"query spectra[{name!r}] is {array.shape}, expected {expected}")
        variables = {"params": self.params["specformer"], "batch_stats": self.batch_stats}
        out, b = np.zeros((q, self.config.specformer.embed_dim), np.float32), self.batch_size
        for start in range(0, q, b):  # padded to one batch shape: one compile
            chunk = {k: _pad_rows(v[start : start + b], b) for k, v in arrays.items()}
            out[start : start + b] = np.asarray(self._specformer_fn(variables, chunk))[: q - start]
        return _unit(out)

    @functools.cached_property
    def _molecule_fn(self):
        return pooled_embedding(self.config.model)

    def embed_molecules(self, molecules, on_error: str = "raise") -> tuple[np.ndarray, list[str]]:
        """([M, F] unit-norm 3D embeddings, names) of a dataset, records or a file."""
        dataset, names = as_dataset(molecules, self.config.data.elements, on_error)
        cutoff, width = self.config.model.cutoff, self.config.model.hidden
        params = self.params["encoder"]
        out = embed_dataset(self._molecule_fn, params, dataset, cutoff, self.batch_size, width)
        return _unit(out), names

    def search(
        self, spectra: Mapping[str, np.ndarray], candidates, k: int = 10, on_error: str = "raise"
    ) -> Hits:
        """The `k` candidates (dataset, records or file) most similar to each query."""
        queries = self.embed_spectra(spectra)
        keys, names = self.embed_molecules(candidates, on_error)
        k = min(k, len(names))
        scores = queries @ keys.T  # [Q, M] cosines
        index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return Hits(index, np.take_along_axis(scores, index, axis=1), names)


def read_spectrum_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(x [n], intensity [n]) of a two-column text file: comma, semicolon, tab or space
    separated; a header line and `#` comments are skipped. Errors name the file and line."""
    xs, ys = [], []
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    for number, line in enumerate(lines, 1):
        fields = line.replace(",", " ").replace(";", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            x, y = float(fields[0]), float(fields[1])
        except (ValueError, IndexError):
            if not xs:  # a header
                continue
            raise DataError(f"{path}, line {number}: expected two numbers, got {line!r}") from None
        xs.append(x)
        ys.append(y)
    if len(xs) < 2:
        raise DataError(f"{path}: fewer than two (x, intensity) rows")
    return np.asarray(xs), np.asarray(ys)


# JCAMP-DX x units -> photon wavenumber in cm^-1; grid units -> cm^-1 per grid unit.
_JCAMP_X = {
    "1/cm": lambda x: x,
    "cm-1": lambda x: x,
    "cm^-1": lambda x: x,
    "micrometers": lambda x: 1e4 / x,
    "microns": lambda x: 1e4 / x,
    "um": lambda x: 1e4 / x,
    "nanometers": lambda x: 1e7 / x,
    "nm": lambda x: 1e7 / x,
    "ev": lambda x: x * _WAVENUMBERS_PER_EV,
}
_WAVENUMBERS_PER_EV = 8065.54429  # cm^-1 / eV
_WAVENUMBERS_PER_GRID_UNIT = {"cm^-1": 1.0, "eV": _WAVENUMBERS_PER_EV}
# JCAMP-DX y units -> intensity proportional to absorption (what the model was trained on).
_JCAMP_Y = {
    "absorbance": lambda y: y,
    "transmittance": lambda y: -np.log10(np.clip(y, 1e-6, 1.0)),
    "%t": lambda y: -np.log10(np.clip(y / 100.0, 1e-6, 1.0)),
    "percent transmittance": lambda y: -np.log10(np.clip(y / 100.0, 1e-6, 1.0)),
    "molar absorptivity": lambda y: y,
    "epsilon": lambda y: y,
    "log(epsilon)": lambda y: 10.0**y,
    "logarithm(epsilon)": lambda y: 10.0**y,
    "arbitrary units": lambda y: y,
    "counts": lambda y: y,
    "intensity": lambda y: y,
    "raman intensity": lambda y: y,
}


def read_spectrum_jcamp(path: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(x [n] in the grid's unit of `modality`, intensity [n]) of a JCAMP-DX file, read
    with the `jcamp` package. x in 1/CM, MICROMETERS, NANOMETERS or EV is converted to
    the grid's unit (photon energy: 250 nm is 4.96 eV; Raman shifts only in 1/CM);
    TRANSMITTANCE (fraction, or percent: values above 1.5) becomes absorbance, -log10 T,
    and LOG(EPSILON) epsilon. Errors name the file."""
    import jcamp

    grid_unit = spectrum_type(modality).grid.unit
    messages = io.StringIO()  # the parser prints its warnings (failed Y checks, ...)
    try:
        with contextlib.redirect_stdout(messages):
            record = jcamp.readfile(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except Exception as e:  # the parser's own errors (ValueError, IndexError, ...)
        raise DataError(f"{path}: not a readable JCAMP-DX file ({type(e).__name__}: {e})") from e
    blocks = record.get("blocks", 1)
    if record.get("children") or (isinstance(blocks, int) and blocks > 1):
        raise DataError(f"{path}: a compound JCAMP-DX file ({blocks} blocks); give one per file")
    x, y = np.asarray(record.get("x", ()), np.float64), np.asarray(record.get("y", ()), np.float64)
    if len(x) < 2 or x.shape != y.shape:
        problems = " ".join(messages.getvalue().split())[:300]
        raise DataError(
            f"{path}: no readable XYDATA or XYPOINTS table of at least two points"
            + (f" ({problems})" if problems else "")
        )
    x_unit = str(record.get("xunits", "")).strip().lower()
    y_unit = str(record.get("yunits", "")).strip().lower()
    if x_unit not in _JCAMP_X:
        raise DataError(f"{path}: ##XUNITS={x_unit!r} is not one of {sorted(_JCAMP_X)}")
    if y_unit not in _JCAMP_Y:
        raise DataError(f"{path}: ##YUNITS={y_unit!r} is not one of {sorted(_JCAMP_Y)}")
    if modality == "raman" and _JCAMP_X[x_unit](1.0) != 1.0:
        raise DataError(f"{path}: Raman shifts must be in 1/CM, not {x_unit!r}")
    if y_unit == "transmittance" and np.nanmax(y) > 1.5:
        y = y / 100.0  # percent, though labelled as a fraction
    x = _JCAMP_X[x_unit](x) / _WAVENUMBERS_PER_GRID_UNIT[grid_unit]
    return x, _JCAMP_Y[y_unit](y)


def read_spectrum(path: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(x in the grid's unit, intensity) of a query file: JCAMP-DX (`.jdx`, `.dx`,
    `.jcamp`, or any file starting with `##`) or two-column text (`read_spectrum_csv`)."""
    if path.lower().endswith((".jdx", ".dx", ".jcamp")) or _starts_with_label(path):
        return read_spectrum_jcamp(path, modality)
    return read_spectrum_csv(path)


def _starts_with_label(path: str) -> bool:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            return f.read(2) == "##"
    except OSError:
        return False  # read_spectrum_csv names the file


def on_grid(modality: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[L] `y(x)` linearly resampled onto the model's grid for `modality` (x in the grid's
    unit, e.g. cm^-1 for IR and Raman, eV for UV); 0 outside the measured range,
    negative intensities clipped to 0."""
    grid = SPECTRA[modality].grid
    order = np.argsort(x)
    x, y = np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order]
    if x[-1] < grid.start or x[0] > grid.stop:
        raise DataError(
            f"{modality} spectrum spans {x[0]:g}..{x[-1]:g}, outside the model's grid "
            f"{grid.start:g}..{grid.stop:g} {grid.unit}"
        )
    points = grid.points()
    out = np.interp(points, x, np.maximum(y, 0.0), left=0.0, right=0.0)
    return out.astype(np.float32)


def scale_to_area(spectrum: np.ndarray, modality: str, area: float) -> np.ndarray:
    """`spectrum` [L] rescaled so that it integrates (over the grid) to `area`: external
    spectra come in their own intensity units, the model reads log10(1 + intensity)."""
    step = SPECTRA[modality].grid.step
    total = float(np.sum(spectrum)) * step
    if total <= 0:
        raise DataError(f"{modality} spectrum has no intensity on the model's grid")
    return (spectrum * (area / total)).astype(np.float32)


def median_areas(spectra: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{modality: median integral} of dense spectra on the grids (a reference scale)."""
    return {
        k: float(np.median(np.asarray(v).sum(axis=1) * SPECTRA[k].grid.step))
        for k, v in spectra.items()
    }


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([a, np.zeros((rows - len(a), *a.shape[1:]), a.dtype)])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load(workdir: str, batch_size: int = 64) -> SpectraModel:
    """The stage-2 model of a pre-training workdir (best checkpoint, else latest)."""
    arrays, saved = read_checkpoint_arrays(checkpoint_folder(workdir))
    config = ml_collections.ConfigDict(saved)
    if config.get("stage") != 2 or "specformer" not in arrays["params"]:
        raise CheckpointError(
            f"{workdir}: not a stage-2 pre-training run (no SpecFormer); spectrum search "
            "needs the contrastively trained encoder and SpecFormer"
        )
    check_model_fields(workdir, config)
    params = jax.tree.map(np.asarray, arrays["params"])
    batch_stats = jax.tree.map(np.asarray, arrays.get("batch_stats", {}))
    config.model.layout = "sparse"  # candidates of any size, one program (inference.load)
    return SpectraModel(config, params, batch_stats, batch_size)
