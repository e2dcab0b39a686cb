"""benchmarks/profile_step.py traces a real step and accounts for its op time."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_profile_step_splits_a_traced_step_by_op_kind_and_thread(tmp_path):
    command = [sys.executable, "-m", "benchmarks.profile_step", "--batch=8", "--steps=2"]
    command += ["--top=5", f"--trace_dir={tmp_path / 'trace'}"]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    summary = json.loads(printed.splitlines()[-1])
    assert summary["config"] == "small" and summary["batch"] == 8 and summary["steps"] == 2
    kinds = summary["kinds_ms"]
    # The sparse layout gathers atom features to pairs and scatters messages back.
    assert kinds["gather"] > 0 and kinds["scatter"] > 0 and kinds["elementwise/other"] > 0
    assert sum(kinds.values()) == pytest.approx(summary["op_ms"])
    assert 0 < summary["cores_busy"] and summary["busy_threads_ms"]
    assert summary["op_ms"] == pytest.approx(sum(summary["busy_threads_ms"]), rel=0.05)
    # The largest ops are named with the encoder operation they come from.
    assert "PretrainModel/encoder" in printed
    assert list((tmp_path / "trace").rglob("*.trace.json.gz"))
