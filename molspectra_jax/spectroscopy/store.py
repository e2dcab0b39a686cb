"""On-disk spectra store: sticks + optimised geometry keyed by molecule id.

Layout of a store folder (one per generation run, growable):

  <root>/vib-00000.npz, vib-00001.npz, ...   consolidated shards (component "vib")
  <root>/uv-00000.npz, ...                    consolidated shards (component "uv")
  <root>/pending/<component>/<id>.npz         one finished molecule not yet in a shard
  <root>/pending/<component>/<id>.failed.npz  one failed molecule (its error message)

Every file is written to a temporary name and renamed (atomic on POSIX), so a crash
leaves either the old or the new file, never a torn one. Shards are zip archives with
fixed timestamps and sorted members: the same records give byte-identical files.

A shard holds M molecules as ragged arrays: `ids [M]`; per group an `<group>_offsets
[M + 1]` and the group's fields back to back; per-molecule scalars `[M]`; the failed
ids and their messages; and `metadata` (JSON: method, settings, package versions).
"""

from __future__ import annotations

import glob
import io
import json
import os
import zipfile

import numpy as np

# component -> {group: fields with that group's length}, per-molecule scalars, dtypes.
SCHEMA = {
    "vib": {
        "groups": {
            "atom": ("atomic_numbers", "positions"),
            "mode": ("frequencies", "ir_intensities", "raman_activities"),
        },
        "scalars": ("energy", "n_imaginary"),
    },
    "uv": {
        "groups": {"state": ("excitation_energies", "oscillator_strengths")},
        "scalars": ("energy",),
    },
}
DTYPES = {
    "atomic_numbers": np.int8,
    "positions": np.float32,  # Å; float32 keeps 1e-6 Å, far below any physical scale
    "frequencies": np.float32,  # cm^-1
    "ir_intensities": np.float32,  # km/mol
    "raman_activities": np.float32,  # Å^4/amu
    "excitation_energies": np.float32,  # eV
    "oscillator_strengths": np.float32,
    "energy": np.float64,  # Hartree
    "n_imaginary": np.int16,
}
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def atomic_write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write a deterministic compressed .npz via a temporary file and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
                zf.writestr(info, buffer.getvalue())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz (no pickles). Raises ValueError naming a corrupt file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: unreadable spectra file ({e})") from e


def check_component(component: str) -> dict:
    """The schema of `component`; ValueError listing the choices otherwise."""
    if component not in SCHEMA:
        raise ValueError(f"unknown spectra component {component!r}; choose from {sorted(SCHEMA)}")
    return SCHEMA[component]


def pack(component: str, records: list[tuple[int, dict]]) -> dict[str, np.ndarray]:
    """Ragged arrays of a list of (id, per-molecule arrays) in the given order."""
    schema = check_component(component)
    out = {"ids": np.array([i for i, _ in records], np.int64)}
    for group, fields in schema["groups"].items():
        counts = [len(r[fields[0]]) for _, r in records]
        out[f"{group}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for field in fields:
            parts = [np.asarray(r[field], DTYPES[field]) for _, r in records]
            shape = (0, 3) if field == "positions" else (0,)
            out[field] = np.concatenate(parts) if parts else np.zeros(shape, DTYPES[field])
    for field in schema["scalars"]:
        out[field] = np.array([r[field] for _, r in records], DTYPES[field])
    return out


def unpack(component: str, arrays: dict[str, np.ndarray]) -> list[tuple[int, dict]]:
    """Inverse of `pack`: list of (id, per-molecule arrays)."""
    schema = check_component(component)
    records = []
    for m, mol_id in enumerate(arrays["ids"]):
        record = {}
        for group, fields in schema["groups"].items():
            lo, hi = arrays[f"{group}_offsets"][m : m + 2]
            record.update({field: arrays[field][lo:hi] for field in fields})
        record.update({field: arrays[field][m] for field in schema["scalars"]})
        records.append((int(mol_id), record))
    return records


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
        check_component(component)
        atomic_write_npz(self.pending_path(component, mol_id), record)

    def save_failure(self, component: str, mol_id: int, message: str) -> None:
        """Persist one molecule's failure (atomic); failures are final, not retried."""
        atomic_write_npz(
            self.pending_path(component, mol_id, failed=True), {"message": np.array(message)}
        )

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

    def consolidate(self, component: str, index: int, ids: list[int], metadata: dict) -> None:
        """Write shard `index` with the molecules `ids` (all finished), drop their pending files.

        Records come from the pending files, or from the existing shard (a shard grows
        when a later run extends the id order). Idempotent: a crash between writing the
        shard and deleting pending files is repaired by the next call.
        """
        existing = self.read_shard(component, index)
        known, failed = {}, {}
        if existing is not None:
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
        atomic_write_npz(self.shard_path(component, index), arrays)
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
