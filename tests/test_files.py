"""Atomic writers: deterministic npz, CSV, failures leave the old file and no temporary, 0644;
folder locks, and a killed writer's temporary removed by the next owner."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from molspectra_jax import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize("compress", [True, False])
def test_npz_is_deterministic_and_leaves_no_temporary(tmp_path, compress):
    arrays = {"b": np.arange(5.0), "a": np.array("text"), "c": np.zeros((2, 3), np.int8)}
    first, second = tmp_path / "x.npz", tmp_path / "y.npz"
    files.write_npz(str(first), arrays, compress=compress)
    files.write_npz(str(second), dict(reversed(list(arrays.items()))), compress=compress)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["x.npz", "y.npz"]
    assert mode(first) == 0o644  # mkstemp's 0600 would hide a shared cache
    with np.load(first, allow_pickle=False) as loaded:
        np.testing.assert_array_equal(loaded["b"], arrays["b"])
        assert str(loaded["a"]) == "text"


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.npz"
    files.write_npz(str(path), {"a": np.arange(3)})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        files.write_npz(str(path), {"a": np.array([object()])})  # pickles refused
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["x.npz"]


def test_csv_rows_that_fail_midway_keep_the_old_file(tmp_path):
    path = tmp_path / "hits.csv"
    files.write_csv(str(path), ["name", "score"], [["a,b", 1], ["c", 2.5]])
    assert path.read_bytes() == b'name,score\r\n"a,b",1\r\nc,2.5\r\n'  # csv's quoting
    before = path.read_bytes()

    def rows():
        yield ["d", 3]
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        files.write_csv(str(path), ["name", "score"], rows())
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["hits.csv"]


def test_uncompressed_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "a.npz")
    files.write_npz(path, {"x": np.arange(3)}, compress=False)

    def broken_write_array(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(files.np.lib.format, "write_array", broken_write_array)
    with pytest.raises(RuntimeError, match="disk full"):
        files.write_npz(path, {"x": np.arange(5)}, compress=False)
    monkeypatch.undo()
    with np.load(path) as f:
        np.testing.assert_array_equal(f["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["a.npz"]


def test_npy_json_and_atomic_path(tmp_path):
    files.write_npy(str(tmp_path / "sub" / "a.npy"), np.arange(4))
    files.write_json(str(tmp_path / "r.json"), {"molecules": 3})
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "a.npy"), np.arange(4))
    assert json.loads((tmp_path / "r.json").read_text()) == {"molecules": 3}
    assert mode(tmp_path / "r.json") == 0o644
    with pytest.raises(KeyError), files.atomic_path(str(tmp_path / "r.json")) as tmp:
        assert tmp.endswith(".tmp") and os.path.basename(tmp).startswith(".")
        open(tmp, "w").write("torn")
        raise KeyError("interrupted")
    assert json.loads((tmp_path / "r.json").read_text()) == {"molecules": 3}
    assert sorted(os.listdir(tmp_path)) == ["r.json", "sub"]


def test_a_folder_has_one_owner(tmp_path):
    with files.exclusive_folder(str(tmp_path)):
        with pytest.raises(files.FolderInUse, match=r"in use by another process \(pid \d+ on"):
            with files.exclusive_folder(str(tmp_path)):
                pass
    with files.exclusive_folder(str(tmp_path)):  # released: the next owner takes it
        pass
    assert (tmp_path / ".lock").read_bytes() == b""  # a released lock names nobody


def test_a_killed_writer_leaves_a_temporary_that_the_next_owner_removes(tmp_path):
    code = (
        "import os, sys\n"
        "from molspectra_jax import files\n"
        "with files.atomic_open(sys.argv[1]) as f:\n"
        "    f.write(b'partial'); f.flush()\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    target = tmp_path / "sub" / "x.npz"
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    (leftover,) = (tmp_path / "sub").iterdir()
    assert leftover.name.startswith(".x.npz.") and not target.exists()
    (tmp_path / "keep.npz").write_bytes(b"kept")
    with files.exclusive_folder(str(tmp_path)):
        assert files.remove_stale_temporaries(str(tmp_path)) == [str(leftover)]
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".lock", "keep.npz", "sub"]
