"""Orbax checkpoints: identical restore, NaN never saved, corrupt checkpoints named."""

import os

import jax
import numpy as np
import pytest

from molspectra_jax.train.checkpoint import Checkpointer, CheckpointError, check_finite


def _arrays(state):
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "key": state.key,
    }


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_is_identical(tiny, make_state, tmp_path):
    state = make_state(tiny)
    fn = jax.jit(tiny.train_step)
    iterator = tiny.iterators["train"]
    for _ in range(3):  # non-trivial Adam moments
        state, _ = fn(state, next(iterator))
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save("latest", 3, _arrays(state), iterator.state(), {"seed": 0})
    ckpt.close()

    fresh = make_state(tiny)  # a new process would start from a different state
    restored, data_state, config = Checkpointer(str(tmp_path)).restore("latest", _arrays(fresh))
    _assert_trees_equal(restored, _arrays(state))
    assert data_state == iterator.state() and config == {"seed": 0}


def test_non_finite_state_is_never_written(tiny, make_state, tmp_path):
    state = make_state(tiny)
    arrays = _arrays(state)
    leaves, treedef = jax.tree.flatten(arrays["params"])
    leaves[0] = np.full(leaves[0].shape, np.nan, np.float32)  # numpy: no debug_nans trap
    poisoned = jax.tree.unflatten(treedef, leaves)
    with pytest.raises(FloatingPointError, match="non-finite"):
        check_finite(poisoned, "test")
    ckpt = Checkpointer(str(tmp_path))
    with pytest.raises(FloatingPointError):
        ckpt.save("latest", 1, {**arrays, "params": poisoned}, {}, {})
    assert ckpt.latest_step() is None


def test_corrupt_checkpoint_error_names_the_folder(tiny, make_state, tmp_path):
    state = make_state(tiny)
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save("latest", 5, _arrays(state), {"epoch": 0, "cursor": 0}, {})
    ckpt.close()
    step_dir = tmp_path / "checkpoints" / "latest" / "5" / "arrays"
    for root, _, files in os.walk(step_dir):  # truncate every array file
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\0garbage")
    with pytest.raises(CheckpointError, match=r"checkpoints/latest/5"):
        Checkpointer(str(tmp_path)).restore("latest", _arrays(state))
