"""Validation against QM9's B3LYP frequencies: the reader and the shipped scale factor."""

import json

import numpy as np
import pytest

from molspectra_jax.data import qm9
from molspectra_jax.experiments import validate_spectra
from molspectra_jax.spectra import spectrum
from molspectra_jax.spectroscopy import embedded


def test_harmonic_frequencies_by_qm9_index():
    freqs = qm9.harmonic_frequencies([1, 10**7])  # methane, and an id QM9 lacks
    assert list(freqs) == [1] and freqs[1].shape == (9,)  # 3N - 6
    assert np.all(freqs[1] > 1000) and np.all(np.diff(np.sort(freqs[1])) >= 0)


def test_shipped_frequencies_give_the_tables_scale_factor(capsys):
    assert validate_spectra.run(embedded.embedded_spectra_dir()) == 0
    result = json.loads(capsys.readouterr().out.split(":", 1)[1])
    assert result["molecules"] >= 3000
    assert result["mae"] == pytest.approx(39.2, abs=0.05)
    assert result["mae_scaled"] == pytest.approx(25.4, abs=0.05)
    assert round(result["scale"], 3) * 0.965 == spectrum("ir").sticks.scale  # 1.026 * 0.965
