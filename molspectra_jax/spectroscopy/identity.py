"""A spectra store's identity: which molecules it holds and how their spectra were made.

`<root>/store.json`, written atomically when a generation run creates or grows a store:

  source       {"kind", "path", "seed", "label"}: e.g. "qm9" with its order seed, or a
               SMILES file by absolute path
  shard_size   molecules per shard: shard k holds positions k * size .. (k + 1) * size - 1
  components   name -> {"method", "settings"}, as every shard of it records them
  molecules    the molecule order: "ids"; per molecule its Hill "formulas" and its
               "geometries" (sha256 of the atomic numbers and the coordinates rounded to
               0.001 Å, first 12 hex digits); "sha256" over all of them

A run is checked against it before anything is written (`check`, `check_records`): the same
source, shard size and component settings, and molecule lists of which one is a prefix
of the other. A larger `--limit` therefore grows a store (that is how the shipped set
grew) and a smaller one computes nothing; any other change is refused, naming each
difference. A store written before store.json existed (the shipped set) gets an identity
derived from its shards' metadata, without the molecule list; the molecules its records
hold are still compared with the input, id by id (`check_records`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from molspectra_jax import files
from molspectra_jax.elements import formula
from molspectra_jax.spectroscopy import components
from molspectra_jax.spectroscopy.store import SpectraStore, read_npz

FILE = "store.json"
FORMAT = 1
_DECIMALS = 3  # 0.001 Å: far below a bond-length change, above float32 noise


class StoreConflict(ValueError):
    """A run would change what a store holds; the message names each difference."""


def molecule_list(
    ids: Sequence[int], get_molecule: Callable[[int], tuple[np.ndarray, np.ndarray]]
) -> dict:
    """The "molecules" entry of the molecules `ids` (position p: `get_molecule(p)`)."""
    formulas, geometries = [], []
    digest = hashlib.sha256()
    for p, mol_id in enumerate(ids):
        z, positions = get_molecule(p)
        z = np.asarray(z, np.int64)
        grid = np.rint(np.asarray(positions, np.float64) * 10**_DECIMALS).astype(np.int64)
        formulas.append(formula(z))
        geometries.append(hashlib.sha256(z.tobytes() + grid.tobytes()).hexdigest()[:12])
        digest.update(f"{int(mol_id)} {formulas[-1]} {geometries[-1]};".encode())
    return {
        "count": len(formulas),
        "sha256": digest.hexdigest(),
        "ids": [int(i) for i in ids],
        "formulas": formulas,
        "geometries": geometries,
    }


def make(source: Mapping, shard_size: int, settings: Mapping[str, Mapping], molecules) -> dict:
    """An identity: `source` {"kind", "path", "seed", "label"} (missing keys: None),
    `settings` component -> {"method", "settings"}, `molecules` from `molecule_list`."""
    return _plain(
        {
            "format": FORMAT,
            "source": {k: source.get(k) for k in ("kind", "path", "seed", "label")},
            "shard_size": int(shard_size),
            "components": {
                c: {k: s[k] for k in ("method", "settings")} for c, s in settings.items()
            },
            "molecules": molecules,
        }
    )


def read(root: str) -> dict | None:
    """The identity of the store `root`: its store.json, else derived from its shards'
    metadata (molecules None), else None (nothing stored yet). Writes nothing."""
    path = os.path.join(root, FILE)
    if not os.path.exists(path):
        return _derive(SpectraStore(root))
    try:
        with open(path) as f:
            identity = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable store identity ({e})") from e
    if not isinstance(identity, dict) or identity.get("format") != FORMAT:
        raise ValueError(f"{path}: not a store identity of format {FORMAT}")
    return identity


def _derive(store: SpectraStore) -> dict | None:
    found = {}
    for name in components.names():
        paths = store.shard_paths(name)
        if paths:
            found[name] = json.loads(str(read_npz(paths[0])["metadata"]))
    if not found:
        return None
    for key in ("source", "shard_size"):
        values = {name: meta.get(key) for name, meta in found.items()}
        if len(set(map(repr, values.values()))) > 1:
            raise StoreConflict(f"{store.root}: the shards disagree on their {key}: {values}")
    meta = next(iter(found.values()))
    return make({"label": meta.get("source")}, meta.get("shard_size") or 0, found, None)


def differences(stored: dict, requested: dict) -> list[str]:
    """Each way `requested` differs from `stored`, as "field: stored ..., requested ..."."""
    out = []
    source, wanted = stored["source"], requested["source"]
    # A derived identity knows only the shards' label, which names kind, path and seed.
    for key in ("kind", "path", "seed") if source.get("kind") else ("label",):
        if source.get(key) != wanted.get(key):
            out.append(f"source {key}: stored {source.get(key)!r}, requested {wanted.get(key)!r}")
    if stored["shard_size"] != requested["shard_size"]:
        out.append(
            f"shard_size: stored {stored['shard_size']}, requested {requested['shard_size']}"
        )
    for name in sorted(stored["components"].keys() & requested["components"].keys()):
        old, new = stored["components"][name], requested["components"][name]
        for group in ("method", "settings"):
            for key in sorted(old[group].keys() | new[group].keys()):
                a, b = old[group].get(key), new[group].get(key)
                if a != b:
                    out.append(f"{name} {group} {key}: stored {a!r}, requested {b!r}")
    mismatch = _first_molecule_mismatch(stored["molecules"], requested["molecules"])
    return out + ([mismatch] if mismatch else [])


def _first_molecule_mismatch(stored: dict | None, requested: dict | None) -> str | None:
    if stored is None or requested is None or stored["sha256"] == requested["sha256"]:
        return None
    rows = zip(stored["ids"], stored["formulas"], stored["geometries"], strict=True)
    wanted = zip(requested["ids"], requested["formulas"], requested["geometries"], strict=True)
    for p, ((i, f, g), (j, f2, g2)) in enumerate(zip(rows, wanted, strict=False)):
        if i != j:
            return f"molecule order: position {p} holds id {i} in the store, requested id {j}"
        if f != f2:
            return f"molecule {i}: stored {f}, requested {f2} (other molecules under these ids)"
        if g != g2:
            return f"molecule {i}: same atoms ({f}), other coordinates or atom order"
    return None  # one order is a prefix of the other


def merge(stored: dict | None, requested: dict) -> dict:
    """The identity after a compatible run: its components added, the longer order kept."""
    if stored is None:
        return requested
    merged = dict(requested, components={**stored["components"], **requested["components"]})
    old, new = stored["molecules"], requested["molecules"]
    if old is not None and old["count"] > new["count"]:
        merged["molecules"] = old
    return merged


def check(root: str, requested: dict) -> dict | None:
    """The store's identity, if `requested` may run on it (writes nothing).

    Raises:
      StoreConflict: naming each differing field (stored vs requested) and the way on.
    """
    stored = read(root)
    problems = differences(stored, requested) if stored is not None else []
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        raise StoreConflict(
            f"{root} holds spectra of another run; nothing was written:{listed}\n"
            "Write to a new store (--out), or repeat the store's own settings (the stored "
            "values above) to resume or grow it."
        )
    return stored


def record(root: str, stored: dict | None, requested: dict) -> None:
    """Write store.json after a checked run if it creates, grows or first describes it."""
    merged = merge(stored, requested)
    if merged != stored or not os.path.exists(os.path.join(root, FILE)):
        files.write_json(os.path.join(root, FILE), merged)


def check_records(
    root: str, ids: Sequence[int], get_molecule: Callable[[int], tuple[np.ndarray, np.ndarray]]
) -> None:
    """Every stored record that carries atoms holds the atoms of the input molecule of its id.

    Raises:
      StoreConflict: naming the first (in `ids` order) mismatching id and both formulas.
    """
    store = SpectraStore(root)
    position = {int(i): p for p, i in enumerate(ids)}
    for name in components.names():
        if not components.get(name).stores_geometry:
            continue
        stored = store.stored_atoms(name)
        for mol_id in sorted(stored.keys() & position.keys(), key=position.get):
            z = np.asarray(get_molecule(position[mol_id])[0])
            if not np.array_equal(stored[mol_id], z):
                held, given = formula(stored[mol_id]), formula(z)
                what = (
                    f"{held}, the input is {given}"
                    if held != given
                    else f"{held} in another atom order"
                )
                raise StoreConflict(
                    f"{root}: molecule {mol_id}: its stored {name!r} record holds {what}; the "
                    "input holds other molecules under these ids. Write to a new store (--out) "
                    "or give the input the store was made from."
                )


def _plain(value):
    """JSON round trip: tuples become lists, so stored and requested compare equal."""
    return json.loads(json.dumps(value))
