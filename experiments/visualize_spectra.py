"""Plot the UV-Vis, IR and Raman spectra of a few molecules of a spectra store.

python -m experiments.visualize_spectra --out docs/spectra_examples.png
"""

import argparse
import sys
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from molspectra_jax.spectroscopy import broadening, embedded  # noqa: E402

SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
PANELS = (
    ("uv", "UV-Vis (B3LYP TDA-ris)", "energy (eV)", "1/eV"),
    ("ir", "IR (GFN2-xTB)", "wavenumber (cm$^{-1}$)", "km/mol/cm$^{-1}$"),
    ("raman", "Raman (GFN2-xTB)", "wavenumber (cm$^{-1}$)", "Å$^4$/amu/cm$^{-1}$"),
)


def formula(atomic_numbers) -> str:
    """Hill formula, e.g. C3H6O."""
    counts = Counter(SYMBOLS.get(int(z), str(z)) for z in atomic_numbers)
    order = ["C", "H"] + sorted(k for k in counts if k not in ("C", "H"))
    return "".join(f"{k}{counts[k] if counts[k] > 1 else ''}" for k in order if k in counts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spectra", default=embedded.embedded_spectra_dir(), help="store folder")
    p.add_argument("--molecules", type=int, default=4, help="how many (first N of the set)")
    p.add_argument("--out", default="docs/spectra_examples.png")
    args = p.parse_args(argv)

    spectra = embedded.load_spectra(args.spectra)
    rows = np.arange(min(args.molecules, len(spectra)))
    batch = embedded.broaden_batch(spectra, rows)
    config = broadening.BroadeningConfig()
    grids = {"uv": broadening.uv_grid(config), "ir": broadening.vib_grid(config)}
    grids["raman"] = grids["ir"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 2.2 * len(rows)), squeeze=False)
    for r, m in enumerate(rows):
        label = f"QM9 {spectra.ids[m]}  {formula(spectra.molecule(m)[0])}"
        for c, (key, title, xlabel, unit) in enumerate(PANELS):
            ax = axes[r, c]
            ax.plot(grids[key], batch[key][r], lw=0.8, color=f"C{c}")
            ax.set_xlim(grids[key][0], 10.5 if key == "uv" else grids[key][-1])
            ax.set_ylabel(unit, fontsize=7)
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(title, fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel(xlabel, fontsize=8)
            if c == 0:
                ax.text(0.02, 0.85, label, transform=ax.transAxes, fontsize=8)
    fig.suptitle(
        "Spectra computed by molspectra_jax.spectroscopy, broadened onto the QM9S grids",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
