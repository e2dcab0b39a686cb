"""benchmarks/pretraining_benefit.py for real at toy size: paired arms, no fine-tuning
molecule in any pre-training split, and a rerun that retrains nothing."""

import json
import subprocess
import sys

import numpy as np
import pytest

from molspectra_jax.data.qm9 import load_qm9
from molspectra_jax.spectroscopy.embedded import load_embedded_spectra


@pytest.mark.slow
def test_the_comparison_pairs_its_arms_keeps_test_molecules_out_and_resumes(tmp_path):
    command = [sys.executable, "-m", "benchmarks.pretraining_benefit", f"--workdir={tmp_path}"]
    command += ["--arms=denoising,full", "--seeds=0,1", "--hidden=16", "--layers=1"]
    command += ["--stage1_steps=4", "--stage2_steps=4", "--finetune_steps=4", "--batch_size=8"]
    command += ["--n_train=32", "--n_valid=16", "--n_test=32", "--n_stage2_valid=16"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert result["unit"] == "meV" and result["settings"]["seeds"] == ["0", "1"]
    arms = result["results"]
    assert list(arms) == ["denoising", "full"]
    assert all(len(r["values"]) == 2 and r["mean"] > 0 for r in arms.values())
    assert "diff" not in arms["denoising"] and {"diff", "diff_ci95"} <= set(arms["full"])
    report = result["diagnostics"]["full"]
    assert report["n"] == 16 and 0 <= report["top1_valid"] <= 1

    splits = {k: np.load(tmp_path / f"splits_{k}.npz") for k in ("finetune", "stage1", "stage2")}
    spectra_ids, qm9_ids = load_embedded_spectra().ids, load_qm9(verbose=False).ids
    held_out = spectra_ids[np.concatenate([splits["finetune"][k] for k in ("idx_val", "idx_test")])]
    assert len(held_out) == 48 and len(splits["finetune"]["idx_train"]) == 32
    for name, ids in (("stage1", qm9_ids), ("stage2", spectra_ids)):
        seen = ids[np.concatenate([splits[name][k] for k in ("idx_train", "idx_val")])]
        assert not np.isin(held_out, seen).any(), name

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "fine-tune " not in second.stdout  # every run was done: none trained again
    assert json.loads((tmp_path / "comparison.json").read_text())["results"] == arms
