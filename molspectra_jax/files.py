"""Atomic file writes: readers see the old file or the new one, never a torn one.

Every writer goes through `atomic_path`: the data is written to a temporary file in
the destination's folder (a rename is atomic only within one file system), fsynced so
a crash after the rename cannot expose an empty file, made 0644 and renamed over the
destination. On any failure the temporary is deleted and the old file is left intact.

    with atomic_path("out/uv.npy") as tmp:
        spectra = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=...)
        ...
    write_npz("shard.npz", {"ids": ids, "positions": positions})

A process killed inside a write leaves its temporary behind; a writer that owns a
folder (`exclusive_folder`) removes such leftovers with `remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import json
import os
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

# Zip entries carry a timestamp; a fixed one makes equal arrays give equal bytes.
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renamed over `path` if the block succeeds.

    The temporary's name starts with "." and ends with ".tmp", so globs for the
    destination's pattern (e.g. `vib-*.npz`) never see it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; shared caches and stores must stay readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FolderInUse(RuntimeError):
    """Another process holds the folder's `exclusive_folder` lock."""


@contextlib.contextmanager
def exclusive_folder(folder: str, lock_name: str = ".lock", wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `<folder>/<lock_name>` for the block.

    A second holder fails at once with `FolderInUse`, naming the first (pid, host,
    start time, written in the lock file while it is held, emptied on release), or with
    `wait` blocks until the first is done. The kernel drops the lock when its process
    dies, so a lock left by a killed process never blocks the next.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, lock_name)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise FolderInUse(f"{folder} is in use by another process ({holder})") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}")
        f.flush()
        try:
            yield
        finally:  # empty again: a run that changed nothing leaves the folder as it was
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the `atomic_path` temporaries under `folder` (recursively); their paths.

    Only the folder's owner (see `exclusive_folder`) may call this: another writer's
    temporary in progress looks the same as one left by a killed process.
    """
    stale = sorted(glob.glob(os.path.join(glob.escape(folder), "**", ".*.tmp"), recursive=True))
    for path in stale:
        os.unlink(path)
    return stale


@contextlib.contextmanager
def new_npy_memmaps(arrays: Mapping[str, tuple[tuple[int, ...], Any]]) -> Iterator[dict]:
    """{path: writable `.npy` memmap of (shape, dtype)}, each under an `atomic_path`:
    flushed and renamed into place when the block succeeds, removed when it fails."""
    with contextlib.ExitStack() as stack:
        maps = {}
        for path, (shape, dtype) in arrays.items():
            tmp = stack.enter_context(atomic_path(path))
            maps[path] = np.lib.format.open_memmap(tmp, "w+", dtype, shape)
        yield maps
        for array in maps.values():
            array.flush()
        maps.clear()


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """`open(tmp, mode)` of an `atomic_path(path)`; `path` appears when the block ends."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_npz(path: str, arrays: Mapping[str, Any], *, compress: bool = True) -> None:
    """Write arrays as a deterministic `.npz`: sorted members, fixed timestamps, no pickles.

    The same arrays give byte-identical files. `compress=False` stores the members
    uncompressed, as `np.savez` does: larger, but read without inflating (the QM9 cache).

    Raises:
      ValueError: an array holds Python objects (pickles are refused).
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_open(path) as f, zipfile.ZipFile(f, "w", compression=method) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = method
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(info, buffer.getvalue())


def write_npy(path: str, array: np.ndarray) -> None:
    """Write one array as `.npy` (no pickles)."""
    with atomic_open(path) as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def write_json(path: str, value: Any) -> None:
    """Write `value` as JSON."""
    with atomic_open(path, "w") as f:
        json.dump(value, f)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a header line and `rows` as CSV."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
