"""The spectrum table: QM9S grids, the paper's patches, lookups, a dependency-free import."""

import subprocess
import sys

import numpy as np
import pytest

from molspectra_jax import spectra
from molspectra_jax.spectroscopy import components


def test_grids_have_qm9s_lengths():
    vib, uv = spectra.grid("ir"), spectra.grid("uv")
    assert vib.shape == (3501,) and vib[0] == 500.0 and vib[-1] == 4000.0
    assert uv.shape == (701,) and uv[0] == 1.0 and uv[-1] == pytest.approx(15.0)
    assert vib.dtype == uv.dtype == np.float64
    np.testing.assert_array_equal(spectra.grid("raman"), vib)
    assert spectra.column("grid.length") == {"uv": 701, "ir": 3501, "raman": 3501}


def test_table_is_in_the_papers_order_with_its_patches():
    assert list(spectra.SPECTRA) == ["uv", "ir", "raman"]
    assert spectra.column("patch_length") == {"uv": 20, "ir": 50, "raman": 50}
    assert spectra.column("stride") == {"uv": 10, "ir": 25, "raman": 25}
    ir, raman = spectra.spectrum("ir"), spectra.spectrum("raman")
    assert raman.sticks.centers == ir.sticks.centers and raman.grid == ir.grid
    assert raman.sticks.scale == ir.sticks.scale == 1.026 * 0.965
    units = spectra.column("intensity_unit")
    assert units == {"uv": "1/eV", "ir": "km/mol/cm^-1", "raman": "Å^4/amu/cm^-1"}


def test_unknown_spectrum_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown spectrum 'nmr'; choose from \['uv', 'ir'"):
        spectra.grid_length("nmr")


def test_every_spectrum_names_store_fields_of_one_group():
    assert {t.sticks.component for t in spectra.SPECTRA.values()} == set(components.names())
    for s in (t.sticks for t in spectra.SPECTRA.values()):
        component = components.get(s.component)
        assert component.offsets_name(s.weights) == component.offsets_name(s.centers)
        assert component.fields[s.weights].unit == s.weights_unit


def test_import_is_dependency_free():
    code = (
        "import sys, molspectra_jax.spectra\n"
        "others = [m for m in sys.modules if m.startswith('molspectra_jax.') "
        "and m != 'molspectra_jax.spectra']\n"
        "assert not others and 'jax' not in sys.modules, others\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
