"""benchmarks/versus_torchmdnet.py runs both sides for real and prints its JSON contract."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("torchmdnet")


@pytest.mark.slow
def test_versus_torchmdnet_measures_both_sides_on_the_same_molecules(tmp_path):
    out = tmp_path / "versus.json"
    command = [sys.executable, "-m", "benchmarks.versus_torchmdnet", "--cases=small:8"]
    command += ["--repeats=1", "--seconds=0.3", "--batches=2", f"--out={out}"]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(x) for x in printed.splitlines() if x.startswith("{")]
    assert {x["impl"] for x in lines} == {"torchmd-net", "molspectra-jax"}
    for x in lines:
        assert x["config"] == "small" and x["batch"] == 8 and x["median_mol_s"] > 0
    ours = next(x for x in lines if x["impl"] == "molspectra-jax")
    assert ours["ratio"] > 0 and ours["loop_ratio"] > 0
    saved = json.loads(out.read_text())
    assert len(saved["measurements"]) == 2
    assert saved["builds"]["small:8"]["molspectra-jax"]["programs"] == 1
