"""On-disk spectra store: sticks + optimised geometry keyed by molecule id.

Layout of a store folder (one per generation run, growable):

  <root>/vib-00000.npz, vib-00001.npz, ...   consolidated shards (component "vib")
  <root>/uv-00000.npz, ...                    consolidated shards (component "uv")
  <root>/pending/<component>/<id>.npz         one finished molecule not yet in a shard
  <root>/pending/<component>/<id>.failed.npz  one failed molecule (its error message)
  <root>/store.json                           what the store holds (`identity.py`)
  <root>/names.json                           id -> record name (file sources)

Every file is written by `molspectra_jax.files.write_npz` (a temporary renamed over the
destination), so a crash leaves either the old or the new file, never a torn one. Shards
are zip archives with fixed timestamps and sorted members: the same records give
byte-identical files.

A shard holds M molecules as ragged arrays: `ids [M]`; per group an `<group>_offsets
[M + 1]` and the group's fields back to back; per-molecule scalars `[M]`; the failed
ids and their messages; and `metadata` (JSON: method, settings, package versions).
Each component's groups, scalars and dtypes are its entry in `components.py`.
"""

from __future__ import annotations

import glob
import json
import os
import tokenize
import zipfile
import zlib

import numpy as np

from molspectra_jax.files import write_npz
from molspectra_jax.spectroscopy import components


def read_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz (no pickles). Raises ValueError naming a corrupt file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    # Each raised by some damaged byte: zlib.error and EOFError by a member's compressed
    # data, TokenError and SyntaxError by its .npy header, NotImplementedError by the zip's.
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        NotImplementedError,
        SyntaxError,
        tokenize.TokenError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        raise ValueError(f"{path}: unreadable spectra file ({type(e).__name__}: {e})") from e


def pack(component: str, records: list[tuple[int, dict]]) -> dict[str, np.ndarray]:
    """Ragged arrays of a list of (id, per-molecule arrays) in the given order."""
    schema = components.get(component)
    out = {"ids": np.array([i for i, _ in records], np.int64)}
    for group, fields in schema.groups.items():
        counts = [len(r[fields[0].name]) for _, r in records]
        out[f"{group}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for f in fields:
            parts = [np.asarray(r[f.name], f.dtype) for _, r in records]
            out[f.name] = np.concatenate(parts) if parts else np.zeros((0, *f.shape), f.dtype)
    for f in schema.scalars:
        out[f.name] = np.array([r[f.name] for _, r in records], f.dtype)
    return out


def unpack(component: str, arrays: dict[str, np.ndarray]) -> list[tuple[int, dict]]:
    """Inverse of `pack`: list of (id, per-molecule arrays)."""
    schema = components.get(component)
    records = []
    for m, mol_id in enumerate(arrays["ids"]):
        record = {}
        for group, fields in schema.groups.items():
            lo, hi = arrays[f"{group}_offsets"][m : m + 2]
            record.update({f.name: arrays[f.name][lo:hi] for f in fields})
        record.update({f.name: arrays[f.name][m] for f in schema.scalars})
        records.append((int(mol_id), record))
    return records


def take_ragged(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    """Rows `rows` [B] of a ragged array `values` [K, ...] -> (values [sum], offsets [B + 1])."""
    rows = np.asarray(rows, np.int64)
    counts = offsets[rows + 1] - offsets[rows]
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    index = np.repeat(offsets[rows] - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
    return values[index], new_offsets


def select(component: str, arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """The molecules `rows` [B] of packed `arrays`, as `pack` of those records would give."""
    schema = components.get(component)
    rows = np.asarray(rows, np.int64)
    out = {"ids": arrays["ids"][rows]}
    for group, fields in schema.groups.items():
        offsets = arrays[f"{group}_offsets"]
        for f in fields:
            out[f.name], out[f"{group}_offsets"] = take_ragged(arrays[f.name], offsets, rows)
    out.update({f.name: arrays[f.name][rows] for f in schema.scalars})
    return out


class SpectraStore:
    """A store folder (see module docstring); every method is safe to re-run after a crash."""

    def __init__(self, root: str):
        self.root = root

    def shard_path(self, component: str, index: int) -> str:
        return os.path.join(self.root, f"{component}-{index:05d}.npz")

    def shard_paths(self, component: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.root, f"{component}-[0-9]*.npz")))

    def pending_path(self, component: str, mol_id: int, failed: bool = False) -> str:
        name = f"{mol_id}.failed.npz" if failed else f"{mol_id}.npz"
        return os.path.join(self.root, "pending", component, name)

    def save_result(self, component: str, mol_id: int, record: dict) -> None:
        """Persist one molecule's arrays (atomic) until its shard is consolidated."""
        components.get(component)
        write_npz(self.pending_path(component, mol_id), record)

    def save_failure(self, component: str, mol_id: int, message: str) -> None:
        """Persist one molecule's failure (atomic); failures are final, not retried."""
        write_npz(self.pending_path(component, mol_id, failed=True), {"message": np.array(message)})

    def read_shard(self, component: str, index: int) -> dict[str, np.ndarray] | None:
        path = self.shard_path(component, index)
        return read_npz(path) if os.path.exists(path) else None

    def pending_ids(self, component: str) -> set[int]:
        """Ids with a pending result or failure file."""
        files = glob.glob(os.path.join(self.root, "pending", component, "*.npz"))
        return {int(os.path.basename(f).split(".")[0]) for f in files}

    def done_ids(self, component: str) -> set[int]:
        """Ids finished (succeeded or failed) in shards or pending files."""
        done = self.pending_ids(component)
        for path in self.shard_paths(component):
            shard = read_npz(path)
            done.update(int(i) for i in shard["ids"])
            done.update(int(i) for i in shard["failed_ids"])
        return done

    def stored_atoms(self, component: str) -> dict[int, np.ndarray]:
        """id -> atomic numbers [n] of every finished record (shards and pending files) of a
        component that stores the geometry; {} for one that does not."""
        if not components.get(component).stores_geometry:
            return {}
        atoms = {}
        for path in self.shard_paths(component):
            shard = read_npz(path)
            offsets = shard[f"{components.GEOMETRY_GROUP}_offsets"]
            for m, mol_id in enumerate(shard["ids"].tolist()):
                atoms[mol_id] = shard["atomic_numbers"][offsets[m] : offsets[m + 1]]
        for mol_id in self.pending_ids(component):
            path = self.pending_path(component, mol_id)
            if os.path.exists(path):
                atoms[mol_id] = read_npz(path)["atomic_numbers"]
        return atoms

    def consolidate(self, component: str, index: int, ids: list[int], metadata: dict) -> None:
        """Write shard `index` with the molecules `ids` (all finished), drop their pending files.

        Records come from the pending files, or from the existing shard (a shard grows
        when a later run extends the id order). Idempotent: a crash between writing the
        shard and deleting pending files is repaired by the next call.

        Raises:
          ValueError: the existing shard holds finished molecules that `ids` leaves out (a
            finished shard is never rewritten with fewer molecules).
        """
        existing = self.read_shard(component, index)
        known, failed = {}, {}
        if existing is not None:
            held = existing["ids"].tolist() + existing["failed_ids"].tolist()
            dropped = sorted(set(held) - set(ids))
            if dropped:
                raise ValueError(
                    f"{self.shard_path(component, index)}: holds finished molecules {dropped[:10]} "
                    f"that the new shard order leaves out; refusing to drop them"
                )
            known.update(unpack(component, existing))
            failed.update(
                zip(existing["failed_ids"].tolist(), existing["failed_messages"], strict=True)
            )
        for mol_id in ids:
            ok, bad = (
                self.pending_path(component, mol_id),
                self.pending_path(component, mol_id, True),
            )
            if os.path.exists(ok):
                known[mol_id] = read_npz(ok)
            elif os.path.exists(bad):
                failed[mol_id] = str(read_npz(bad)["message"])
        missing = [i for i in ids if i not in known and i not in failed]
        if missing:
            raise RuntimeError(f"shard {component}-{index:05d}: molecules {missing} not finished")
        arrays = pack(component, [(i, known[i]) for i in ids if i in known])
        failed_ids = [i for i in ids if i in failed and i not in known]
        arrays["failed_ids"] = np.array(failed_ids, np.int64)
        arrays["failed_messages"] = np.array([failed[i] for i in failed_ids], dtype=str)
        arrays["metadata"] = np.array(json.dumps(metadata, sort_keys=True))
        write_npz(self.shard_path(component, index), arrays)
        for mol_id in ids:
            for failed_flag in (False, True):
                path = self.pending_path(component, mol_id, failed_flag)
                if os.path.exists(path):
                    os.unlink(path)

    def load(self, component: str) -> dict[str, np.ndarray]:
        """All shards of `component` concatenated (ragged offsets rebased), in shard order."""
        records, failed_ids, failed_messages, metadata = [], [], [], None
        for path in self.shard_paths(component):
            shard = read_npz(path)
            records += unpack(component, shard)
            failed_ids += shard["failed_ids"].tolist()
            failed_messages += shard["failed_messages"].tolist()
            metadata = metadata or json.loads(str(shard["metadata"]))
        out = pack(component, records)
        out["failed_ids"] = np.array(failed_ids, np.int64)
        out["failed_messages"] = np.array(failed_messages, dtype=str)
        out["metadata"] = metadata or {}
        return out
