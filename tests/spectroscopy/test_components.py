"""The component registry: lookups, checks, shipped metadata, and a new component end to end."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from molspectra_jax import spectra
from molspectra_jax.spectroscopy import components, embedded, generate, store
from molspectra_jax.spectroscopy.components import Component, Field


def test_unknown_component_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown spectra component 'nmr'; choose from \['uv'"):
        components.get("nmr")
    with pytest.raises(ValueError, match="unknown spectra component 'nmr'"):
        generate.GenerationSettings(components=("vib", "nmr"))


@pytest.mark.parametrize("name", components.names())
def test_default_settings_write_the_shipped_metadata(name):
    """The registry's method and settings are what the shipped shards record."""
    component = components.get(name)
    assert dataclasses.is_dataclass(component.settings_class())
    assert callable(components._resolve(component.compute))
    shard = store.SpectraStore(embedded.embedded_spectra_dir()).read_shard(name, 0)
    shipped = json.loads(str(shard["metadata"]))
    ours = generate.shard_metadata(name, generate.GenerationSettings(), shipped["source"])
    for key in ("component", "method", "settings", "shard_size", "source"):
        assert ours[key] == shipped[key], key
    assert ours["versions"].keys() == shipped["versions"].keys()


def test_components_are_checked_when_declared():
    mode = {"mode": (Field("toy_centers", np.float32, "cm^-1"),)}
    kwargs = dict(scalars=(), settings=object, compute=print, package="numpy", theory="toy")
    with pytest.raises(ValueError, match="must start with"):
        Component("toy", groups=mode, geometry="optimised", **kwargs)
    with pytest.raises(ValueError, match="repeated field names"):
        Component("toy", groups={**mode, "other": mode["mode"]}, geometry="input", **kwargs)
    with pytest.raises(ValueError, match="exactly one that stores the geometry"):
        components.geometry_component(["uv"])


@dataclasses.dataclass(frozen=True)
class ToySettings:
    width: float = 0.5


def toy_spectrum(atomic_numbers, positions, settings):
    """One stick per atom at its distance (Å) from the centroid, weighted by Z."""
    distances = np.linalg.norm(positions - positions.mean(axis=0), axis=1)
    return {"toy_centers": distances, "toy_weights": atomic_numbers, "toy_total": 1.5}


TOY = Component(
    "toy",
    groups={"site": (Field("toy_centers", np.float32, "Å"), Field("toy_weights", np.float32))},
    scalars=(Field("toy_total", np.float64),),
    settings=ToySettings,
    compute=toy_spectrum,
    package="numpy",
    theory="toy (width {width})",
    geometry="input",
)
TOY_SPECTRUM = spectra.SpectrumType(
    name="toy",
    label="Toy",
    sticks=spectra.Sticks("toy", centers="toy_centers", weights="toy_weights"),
    grid=spectra.Grid(-1.0, 5.0, 0.01, quantity="distance", unit="Å"),  # holds whole peaks
    peaks=spectra.Peaks("gaussian", fwhm=0.1),
    patch_length=20,
    stride=10,
)


def test_a_registered_component_is_generated_stored_joined_and_broadened(monkeypatch, tmp_path):
    """A new component is its entry, its compute function and its spectrum rows: nothing
    else in store, generate or embedded names it."""
    monkeypatch.setitem(components.COMPONENTS, "toy", TOY)
    components.check_spectrum_table({"toy": TOY_SPECTRUM})
    shipped = store.SpectraStore(embedded.embedded_spectra_dir())
    shutil.copy(
        shipped.shard_path("vib", 0), store.SpectraStore(str(tmp_path)).shard_path("vib", 0)
    )
    vib = embedded.load_spectra(str(tmp_path), ["vib"])

    settings = generate.GenerationSettings(("toy",), component_settings={"toy": ToySettings(0.2)})
    out = store.SpectraStore(str(tmp_path))
    for i, mol_id in enumerate(vib.ids[:5]):
        ok, record = generate.compute_one("toy", *vib.molecule(i), settings.settings_for("toy"))
        assert ok and record["toy_weights"].dtype == np.float32
        out.save_result("toy", int(mol_id), record)
    meta = generate.shard_metadata("toy", settings, "test")
    assert meta["method"] == {"theory": "toy (width 0.2)", "package": "numpy", "geometry": "input"}
    out.consolidate("toy", 0, vib.ids[:5].tolist(), meta)

    joined = embedded.load_spectra(str(tmp_path), ["toy", "vib"])
    assert joined.geometry == "vib" and joined.ids.tolist() == vib.ids[:5].tolist()
    np.testing.assert_array_equal(joined.atom_offsets, vib.atom_offsets[:6])
    dense = embedded.broaden_batch(joined, types={"toy": TOY_SPECTRUM, "ir": spectra.IR})
    np.testing.assert_array_equal(
        dense["ir"], embedded.broaden_batch(vib, range(5), {"ir": spectra.IR})["ir"]
    )
    z, _ = joined.molecule(3)
    area = dense["toy"][3].sum() * TOY_SPECTRUM.grid.step
    assert area == pytest.approx(z.sum(), rel=1e-3)  # each stick's area is its weight
    assert joined.arrays["toy"]["toy_total"].tolist() == [1.5] * 5
