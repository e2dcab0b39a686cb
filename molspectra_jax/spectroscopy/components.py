"""The store components: one registry of what each work unit computes and stores.

A component is one calculation per molecule ("vib": GFN2-xTB IR + Raman, "uv": B3LYP
TDA-ris), run by `generate.py`, kept by `store.py` in its own shards and joined with the
others by `embedded.py`. Its entry names everything those modules need:

  * the store schema: ragged groups (fields with one row per atom, mode, state, ...)
    and per-molecule scalars, each `Field` with its store dtype and unit;
  * the settings dataclass and the compute function
    `(atomic_numbers [N], positions [N, 3] Å, settings) -> result` whose attributes (or
    keys) are the schema's fields, both named "module:name" (imported on first use, so
    that reading a store never imports tblite or PySCF);
  * the method recorded in every shard (theory, package) and the geometry the spectra
    are computed at: "optimised" components re-optimise it and store the result as the
    group "atom" (`atomic_numbers`, `positions`), which gives a `SpectraSet` its
    geometry; "input" ones use the geometry they are given.

Adding a component is its `Component(...)` entry in `COMPONENTS` here, its compute
module and the spectrum table rows (`molspectra_jax.spectra`) that broaden its sticks.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from molspectra_jax.spectra import SPECTRA

GEOMETRY_GROUP = "atom"
GEOMETRY_FIELDS = ("atomic_numbers", "positions")


@dataclasses.dataclass(frozen=True)
class Field:
    """One stored array: `name`, store `dtype`, `unit` ("" if none), trailing `shape`.

    A ragged field is `[K, *shape]` for K rows of its group over all molecules; a scalar
    is `[M]`.
    """

    name: str
    dtype: type
    unit: str = ""
    shape: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Component:
    """One registry entry (see the module docstring).

    Attributes:
      name: store name, the shard file prefix, e.g. "vib".
      groups: group -> its ragged fields; the store slices each group by one
        `<group>_offsets [M + 1]`.
      scalars: per-molecule fields `[M]`.
      settings: "module:class" (or the class) of the settings dataclass.
      compute: "module:function" (or the function) `(atomic_numbers, positions,
        settings) -> result` with the schema's fields as attributes or keys.
      package: the package doing the calculation.
      theory: method name, formatted with the settings' fields, e.g. "{xc}/{basis}".
      geometry: "optimised" (stored as group "atom") or "input".
    """

    name: str
    groups: Mapping[str, tuple[Field, ...]]
    scalars: tuple[Field, ...]
    settings: str | type
    compute: str | Any
    package: str
    theory: str
    geometry: str

    def __post_init__(self):
        names = [f.name for f in self.fields_in_order()]
        if len(set(names)) != len(names):
            raise ValueError(f"component {self.name!r}: repeated field names {names}")
        if self.geometry not in ("optimised", "input"):
            raise ValueError(f"component {self.name!r}: geometry must be 'optimised' or 'input'")
        if self.stores_geometry:
            stored = tuple(f.name for f in self.groups.get(GEOMETRY_GROUP, ()))
            if stored[: len(GEOMETRY_FIELDS)] != GEOMETRY_FIELDS:
                raise ValueError(
                    f"component {self.name!r} optimises the geometry: its group "
                    f"{GEOMETRY_GROUP!r} must start with {GEOMETRY_FIELDS}, not {stored}"
                )

    def fields_in_order(self) -> list[Field]:
        """Every field: the groups' in order, then the scalars."""
        return [f for fields in self.groups.values() for f in fields] + list(self.scalars)

    @property
    def fields(self) -> dict[str, Field]:
        """name -> `Field` of every ragged field and scalar."""
        return {f.name: f for f in self.fields_in_order()}

    @property
    def ragged(self) -> dict[str, str]:
        """Ragged field name -> its group."""
        return {f.name: group for group, fields in self.groups.items() for f in fields}

    @property
    def stores_geometry(self) -> bool:
        """Whether records carry the (optimised) geometry the spectra are computed at."""
        return self.geometry == "optimised"

    def offsets_name(self, field: str) -> str:
        """Name of the `<group>_offsets [M + 1]` array that slices ragged `field`."""
        if field not in self.ragged:
            raise ValueError(
                f"spectra component {self.name!r} has no ragged field {field!r}; "
                f"choose from {list(self.ragged)}"
            )
        return f"{self.ragged[field]}_offsets"

    def settings_class(self) -> type:
        return _resolve(self.settings)

    def method(self, settings) -> dict[str, str]:
        """What every shard records as its method: theory, package, geometry."""
        theory = self.theory.format(**dataclasses.asdict(settings))
        return {"theory": theory, "package": self.package, "geometry": self.geometry}

    def record(self, atomic_numbers: np.ndarray, positions: np.ndarray, settings) -> dict:
        """Run the compute function on one molecule: {field: array in its store dtype}.

        Args:
          atomic_numbers: [N] int.
          positions: [N, 3] Å.
          settings: an instance of the settings class.
        """
        result = _resolve(self.compute)(atomic_numbers, positions, settings)
        values = result if isinstance(result, Mapping) else vars(result)
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(f"{self.compute} returned no {missing} (component {self.name!r})")
        return {f.name: np.asarray(values[f.name], f.dtype) for f in self.fields_in_order()}


def _resolve(ref):
    """The object named by "module:name", or `ref` itself if it is no string."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_VIB = "molspectra_jax.spectroscopy.vibrational"
_UV = "molspectra_jax.spectroscopy.electronic"

VIB = Component(
    "vib",
    groups={
        "atom": (
            Field("atomic_numbers", np.int8),
            # float32 keeps 1e-6 Å, far below any physical scale.
            Field("positions", np.float32, "Å", shape=(3,)),
        ),
        "mode": (
            Field("frequencies", np.float32, "cm^-1"),  # unscaled GFN2, imaginary < 0
            Field("ir_intensities", np.float32, "km/mol"),
            Field("raman_activities", np.float32, "Å^4/amu"),
        ),
    },
    scalars=(Field("energy", np.float64, "Hartree"), Field("n_imaginary", np.int16)),
    settings=f"{_VIB}:VibrationalSettings",
    compute=f"{_VIB}:vibrational_spectrum",
    package="tblite",
    theory="{method}",
    geometry="optimised",
)
UV = Component(
    "uv",
    groups={
        "state": (
            Field("excitation_energies", np.float32, "eV"),
            Field("oscillator_strengths", np.float32),
        )
    },
    scalars=(Field("energy", np.float64, "Hartree"),),
    settings=f"{_UV}:ElectronicSettings",
    compute=f"{_UV}:electronic_spectrum",
    package="pyscf",
    theory="{xc}/{basis} TDA-ris",
    geometry="input",
)

# The registry, in generation order.
COMPONENTS: dict[str, Component] = {c.name: c for c in (VIB, UV)}


def get(name: str) -> Component:
    """The component `name`; ValueError listing the choices otherwise."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown spectra component {name!r}; choose from {sorted(COMPONENTS)}")
    return COMPONENTS[name]


def names() -> tuple[str, ...]:
    """The registered components, in `COMPONENTS` order."""
    return tuple(COMPONENTS)


def geometry_component(selected: Sequence[str]) -> str:
    """The one component of `selected` whose records carry the geometry; ValueError if not one."""
    found = [c for c in selected if get(c).stores_geometry]
    if len(found) != 1:
        raise ValueError(
            f"components {list(selected)} must hold exactly one that stores the geometry "
            f"(geometry='optimised'), found {found}"
        )
    return found[0]


def check_spectrum_table(types: Mapping = SPECTRA) -> None:
    """Every spectrum's sticks are two ragged fields of one group of a registered component,
    in the units the table states (centres in the grid's, weights in `weights_unit`)."""
    for t in types.values():
        s, component = t.sticks, get(t.sticks.component)
        if component.offsets_name(s.centers) != component.offsets_name(s.weights):
            raise ValueError(f"{t.name}: centres and weights in different groups")
        units = (component.fields[s.centers].unit, component.fields[s.weights].unit)
        if units != (t.grid.unit, s.weights_unit):
            raise ValueError(f"{t.name}: stored units {units} != table's")


check_spectrum_table()
