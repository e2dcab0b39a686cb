"""Atomic file writes: readers see the old file or the new one, never a torn one.

Every writer goes through `atomic_path`: the data is written to a temporary file in
the destination's folder (a rename is atomic only within one file system), fsynced so
a crash after the rename cannot expose an empty file, made 0644 and renamed over the
destination. On any failure the temporary is deleted and the old file is left intact.

    with atomic_path("out/uv.npy") as tmp:
        spectra = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=...)
        ...
    write_npz("shard.npz", {"ids": ids, "positions": positions})
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
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
