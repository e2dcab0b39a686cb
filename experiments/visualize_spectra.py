"""Plot every spectrum of the spectrum table for a few molecules of a spectra store.

python -m experiments.visualize_spectra --out docs/spectra_examples.png
"""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from molspectra_jax.elements import formula  # noqa: E402
from molspectra_jax.spectra import SPECTRA  # noqa: E402
from molspectra_jax.spectroscopy import embedded  # noqa: E402

_SPECTRA = flags.DEFINE_string("spectra", embedded.embedded_spectra_dir(), "Store folder.")
_MOLECULES = flags.DEFINE_integer("molecules", 4, "How many (first N of the set).")
_OUT = flags.DEFINE_string("out", "docs/spectra_examples.png", "Image file.")

X_MAX = {"uv": 10.5}  # TDA-ris states stop at 10 eV (ElectronicSettings.max_energy)


def _tex(unit: str) -> str:
    return re.sub(r"\^(-?\d+)", r"$^{\1}$", unit)  # cm^-1 -> cm$^{-1}$


def run(spectra_dir: str, molecules: int, out: str) -> int:
    """Plot the first `molecules` of the store `spectra_dir` into the image `out`."""
    spectra = embedded.load_spectra(spectra_dir)
    rows = np.arange(min(molecules, len(spectra)))
    batch = embedded.broaden_batch(spectra, rows)
    fig, axes = plt.subplots(len(rows), len(SPECTRA), figsize=(13, 2.2 * len(rows)), squeeze=False)
    for r, m in enumerate(rows):
        label = f"QM9 {spectra.ids[m]}  {formula(spectra.molecule(m)[0])}"
        for c, t in enumerate(SPECTRA.values()):
            ax, grid = axes[r, c], t.grid.points()
            ax.plot(grid, batch[t.name][r], lw=0.8, color=f"C{c}")
            ax.set_xlim(grid[0], X_MAX.get(t.name, grid[-1]))
            ax.set_ylabel(_tex(t.intensity_unit), fontsize=7)
            ax.tick_params(labelsize=7)
            if r == 0:
                method = spectra.metadata[t.sticks.component].get("method", {}).get("theory", "")
                ax.set_title(f"{t.label} ({method})", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel(f"{t.grid.quantity} ({_tex(t.grid.unit)})", fontsize=8)
            if c == 0:
                ax.text(0.02, 0.85, label, transform=ax.transAxes, fontsize=8)
    fig.suptitle(
        "Spectra computed by molspectra_jax.spectroscopy, broadened onto the QM9S grids",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run(_SPECTRA.value, _MOLECULES.value, _OUT.value)


def cli():
    """The console script `molspectra-visualize-spectra`."""
    app.run(main)


if __name__ == "__main__":
    cli()
