"""`molspectra_jax.retrieval`: a stage-2 workdir embeds spectra and molecules and ranks
candidates by the contrastive cosine; padding never changes an embedding; a model
pre-trained on a subset of modalities takes those queries and names what is missing."""

import csv
import subprocess
import sys

import numpy as np
import pytest

import molspectra_jax
from molspectra_jax import examples, retrieval
from molspectra_jax.configs import test_pretrain
from molspectra_jax.data.records import DataError
from molspectra_jax.spectra import SPECTRA
from molspectra_jax.train import pretrain
from molspectra_jax.train.checkpoint import CheckpointError
from molspectra_jax.train.pretrain import load_splits


def stage2(tmp_path_factory, spectra=None):
    workdir = tmp_path_factory.mktemp("stage2")
    config = test_pretrain.get_config()
    if spectra is not None:
        config.specformer.spectra = spectra
    pretrain.train_and_evaluate(config, str(workdir))
    _, dataset, rows = load_splits(config)
    return workdir, dataset.subset(rows["valid"])  # held out of pre-training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return stage2(tmp_path_factory)


@pytest.fixture(scope="module")
def ir_only(tmp_path_factory):
    return stage2(tmp_path_factory, spectra=("ir",))


def test_search_ranks_candidates_by_the_contrastive_cosine(trained):
    workdir, held_out = trained
    model = retrieval.load(str(workdir))
    assert model.spectra == ("uv", "ir", "raman")
    queries = {k: np.asarray(v[:5]) for k, v in held_out.spectra.items()}
    hits = model.search(queries, held_out, k=4)
    assert hits.index.shape == hits.score.shape == (5, 4)
    assert np.all(np.diff(hits.score, axis=1) <= 0)  # best first
    q = model.embed_spectra(queries)
    m, names = model.embed_molecules(held_out)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    expected = np.sort(q @ m.T, axis=1)[:, ::-1][:, :4]
    np.testing.assert_allclose(hits.score, expected, rtol=1e-5, atol=1e-6)
    assert names == [str(i) for i in held_out.ids]


def test_padding_never_changes_an_embedding(trained):
    workdir, held_out = trained
    model = retrieval.load(str(workdir), batch_size=4)
    spectra = {k: np.asarray(v) for k, v in held_out.spectra.items()}  # 16 rows: 4 batches
    together = model.embed_spectra(spectra)
    alone = model.embed_spectra({k: v[5:6] for k, v in spectra.items()})
    np.testing.assert_allclose(alone[0], together[5], rtol=1e-5, atol=1e-6)
    molecules, _ = model.embed_molecules(held_out)
    one, _ = model.embed_molecules(held_out.subset([7]))
    np.testing.assert_allclose(one[0], molecules[7], rtol=1e-4, atol=1e-5)


def test_queries_must_match_the_models_modalities(trained, ir_only):
    workdir, held_out = trained
    model = retrieval.load(str(workdir))
    with pytest.raises(ValueError, match=r"lacks \['raman'\]"):
        model.embed_spectra({k: held_out.spectra[k][:2] for k in ("uv", "ir")})
    with pytest.raises(ValueError, match="expected"):
        model.embed_spectra({k: np.zeros((2, 7)) for k in ("uv", "ir", "raman")})
    workdir, held = ir_only
    model = retrieval.load(str(workdir))
    hits = model.search({"ir": np.asarray(held.spectra["ir"][:3])}, held, k=2)
    assert model.spectra == ("ir",) and hits.index.shape == (3, 2)


def test_only_stage_2_workdirs_search(tmp_path):
    from molspectra_jax.configs import test as finetune_test
    from molspectra_jax.train import finetune

    finetune.train_and_evaluate(finetune_test.get_config(), str(tmp_path))
    with pytest.raises(CheckpointError, match="not a stage-2 pre-training run"):
        retrieval.load(str(tmp_path))
    assert molspectra_jax.load(str(tmp_path)).targets == ("gap", "u0")


def test_two_column_files_are_resampled_onto_the_grid(tmp_path):
    path = tmp_path / "ir.csv"
    rows = [f"{x},{2.0 * x}" for x in np.linspace(400.0, 4100.0, 50)]
    path.write_text("# an exported spectrum\nwavenumber,absorbance\n" + "\n".join(rows) + "\n")
    x, y = retrieval.read_spectrum_csv(str(path))
    assert len(x) == 50 and y[0] == 800.0
    grid = retrieval.on_grid("ir", x, y)
    points = SPECTRA["ir"].grid.points()
    np.testing.assert_allclose(grid, 2.0 * points, rtol=1e-5)  # linear: exact
    scaled = retrieval.scale_to_area(grid, "ir", 10.0)
    assert float(scaled.sum()) * SPECTRA["ir"].grid.step == pytest.approx(10.0, rel=1e-4)
    with pytest.raises(DataError, match="outside the model's grid"):
        retrieval.on_grid("uv", x, y)  # cm^-1 is not eV
    (tmp_path / "bad.csv").write_text("1,2\n3,4\n5,oops\n")
    with pytest.raises(DataError, match="bad.csv, line 3: expected two numbers"):
        retrieval.read_spectrum_csv(str(tmp_path / "bad.csv"))


def run_retrieve(*argv):
    command = [sys.executable, "-m", "experiments.retrieve", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_the_command_ranks_candidates_for_source_and_file_queries(trained, ir_only, tmp_path):
    workdir, held_out = trained
    ids = [str(i) for i in held_out.ids[:2]]
    out = tmp_path / "hits.csv"
    run = run_retrieve(
        f"--workdir={workdir}", f"--candidates={examples.path()}", "--spectra=embedded",
        f"--ids={','.join(ids)}", "--top=3", f"--out={out}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rows = list(csv.DictReader(open(out)))
    assert [r["query"] for r in rows] == [ids[0]] * 3 + [ids[1]] * 3
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert all(r["candidate"].startswith("qm9_") for r in rows)

    spectrum = tmp_path / "ir.csv"
    ir = np.asarray(ir_only[1].spectra["ir"][0])
    points = SPECTRA["ir"].grid.points()
    spectrum.write_text("\n".join(f"{x},{y}" for x, y in zip(points, ir, strict=True)))
    run = run_retrieve(
        f"--workdir={ir_only[0]}", f"--candidates={examples.path()}",
        f"--spectrum=ir={spectrum}", "--top=2", f"--out={out}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(list(csv.DictReader(open(out)))) == 2
    run = run_retrieve(
        f"--workdir={workdir}", f"--candidates={examples.path()}",
        f"--spectrum=ir={spectrum}", f"--out={out}",
    )  # fmt: skip
    assert run.returncode != 0 and "lacks ['uv', 'raman']" in run.stderr
