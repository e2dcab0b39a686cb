"""`molspectra_jax.retrieval`: a stage-2 workdir embeds spectra and molecules and ranks
candidates by the contrastive cosine; padding never changes an embedding; a model
pre-trained on a subset of modalities takes those queries and names what is missing."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import molspectra_jax
from molspectra_jax import diagnostics, examples, pretraining_figures, retrieval
from molspectra_jax.configs import test_pretrain
from molspectra_jax.data.records import DataError
from molspectra_jax.spectra import SPECTRA
from molspectra_jax.spectroscopy import embedded
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


# JCAMP-DX ordinate compression (JCAMP-DX 4.24 spec, section 5.9): SQZ starts a line's
# first value, DIF encodes each difference from the previous value.
_SQZ = {0: "@", **{d: "ABCDEFGHI"[d - 1] for d in range(1, 10)}}
_SQZ.update({-d: "abcdefghi"[d - 1] for d in range(1, 10)})
_DIF = {0: "%", **{d: "JKLMNOPQR"[d - 1] for d in range(1, 10)}}
_DIF.update({-d: "jklmnopqr"[d - 1] for d in range(1, 10)})


def _compressed(value: int, table: dict) -> str:
    digits = str(abs(int(value)))
    return table[int(digits[0]) * (1 if value >= 0 else -1)] + digits[1:]


def write_jcamp(path, x, y, xunits, yunits, compressed=False, per_line=10):
    """A single-spectrum JCAMP-DX 4.24 file as instruments export it: an (X++(Y..Y))
    table of integer ordinates times YFACTOR, plain or DIF-compressed (each line then
    repeats the previous line's last ordinate, the Y check); x uniform."""
    yfactor = float(np.max(np.abs(y))) / 30000.0
    ordinates = np.round(np.asarray(y) / yfactor).astype(int)
    n = len(x)
    lines = [
        "##TITLE=molspectra-jax test spectrum", "##JCAMP-DX=4.24",
        "##DATA TYPE=INFRARED SPECTRUM", f"##XUNITS={xunits}", f"##YUNITS={yunits}",
        "##XFACTOR=1.0", f"##YFACTOR={yfactor:.10g}", f"##FIRSTX={x[0]:.6f}",
        f"##LASTX={x[-1]:.6f}", f"##DELTAX={(x[-1] - x[0]) / (n - 1):.8f}",
        f"##NPOINTS={n}", "##XYDATA=(X++(Y..Y))",
    ]  # fmt: skip
    start = 0
    while start < n:
        stop = min(start + per_line, n)
        row = ordinates[start:stop]
        if compressed:
            body = _compressed(row[0], _SQZ) + "".join(_compressed(d, _DIF) for d in np.diff(row))
        else:
            body = " ".join(str(v) for v in row)
        lines.append(f"{x[start]:.6f} {body}")
        start = stop - 1 if compressed and stop < n else stop
    path.write_text("\n".join([*lines, "##END="]) + "\n")
    return path


def shipped_spectra(rows):
    return embedded.broaden_batch(embedded.load_embedded_spectra(), np.asarray(rows))


def test_jcamp_transmittance_becomes_absorbance_on_the_grid(tmp_path):
    ir = shipped_spectra([0])["ir"][0]
    absorbance = ir / ir.max()  # peak absorbance 1: transmittance down to 0.1
    points = SPECTRA["ir"].grid.points()
    for compressed in (False, True):
        path = write_jcamp(
            tmp_path / f"ir_{compressed}.jdx", points[::-1], 10.0 ** -absorbance[::-1],
            "1/CM", "TRANSMITTANCE", compressed,
        )  # fmt: skip
        x, y = retrieval.read_spectrum(str(path), "ir")
        np.testing.assert_allclose(retrieval.on_grid("ir", x, y), absorbance, atol=2e-4)
    percent = write_jcamp(tmp_path / "ir.dx", points, 100 * 10.0**-absorbance, "1/CM", "%T")
    np.testing.assert_allclose(
        retrieval.on_grid("ir", *retrieval.read_spectrum(str(percent), "ir")), absorbance, atol=2e-4
    )


def test_jcamp_wavelengths_become_the_grids_photon_energies(tmp_path):
    uv = shipped_spectra([3])["uv"][0]
    energies = SPECTRA["uv"].grid.points()
    nanometres = np.arange(90.0, 1200.0, 0.05)  # 13.8 .. 1.03 eV
    epsilon = np.interp(1239.84198 / nanometres, energies, uv) + 1e-3
    path = write_jcamp(
        tmp_path / "uv.jdx", nanometres, np.log10(epsilon), "NANOMETERS", "LOG(EPSILON)"
    )
    x, y = retrieval.read_spectrum(str(path), "uv")
    assert x[0] == pytest.approx(1239.84198 / 90.0, rel=1e-5)  # eV
    inside = (energies > 1.1) & (energies < 13.7)
    np.testing.assert_allclose(
        retrieval.on_grid("uv", x, y)[inside], uv[inside] + 1e-3, atol=2e-3 * uv.max()
    )
    microns = write_jcamp(
        tmp_path / "ir_um.jdx",
        np.linspace(2.5, 20.0, 200),
        np.ones(200),
        "MICROMETERS",
        "ABSORBANCE",
    )
    x, _ = retrieval.read_spectrum(str(microns), "ir")
    assert (x.max(), x.min()) == pytest.approx((4000.0, 500.0))


def test_jcamp_files_that_cannot_be_a_query_are_named(tmp_path):
    points = np.linspace(500.0, 4000.0, 100)
    cases = {
        "units.jdx": (
            write_jcamp,
            (points, np.ones(100), "1/CM", "KUBELKA-MUNK"),
            "ir",
            "YUNITS='kubelka-munk'",
        ),
        "raman.jdx": (
            write_jcamp,
            (np.linspace(2.5, 20, 100), np.ones(100), "MICROMETERS", "ABSORBANCE"),
            "raman",
            "Raman shifts must be in 1/CM",
        ),
    }
    for name, (write, args, modality, message) in cases.items():
        path = write(tmp_path / name, *args)
        with pytest.raises(DataError, match=re.escape(f"{name}: ") + ".*" + re.escape(message)):
            retrieval.read_spectrum(str(path), modality)
    (tmp_path / "text.jdx").write_text("a spectrum\nexported wrongly\n")
    with pytest.raises(DataError, match="text.jdx: no readable XYDATA"):
        retrieval.read_spectrum(str(tmp_path / "text.jdx"), "ir")
    block = (
        "##TITLE=a\n##XUNITS=1/CM\n##YUNITS=ABSORBANCE\n##XYPOINTS=(XY..XY)\n600,1;900,2\n##END=\n"
    )
    (tmp_path / "two.jdx").write_text(
        f"##TITLE=link\n##JCAMP-DX=5.01\n##BLOCKS=2\n{block}{block}##END=\n"
    )
    with pytest.raises(DataError, match="two.jdx: a compound JCAMP-DX file"):
        retrieval.read_spectrum(str(tmp_path / "two.jdx"), "ir")


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

    ir = np.asarray(ir_only[1].spectra["ir"][0])
    transmittance = 10.0 ** -(ir / ir.max())
    spectrum = write_jcamp(
        tmp_path / "ir.jdx",
        SPECTRA["ir"].grid.points(),
        transmittance,
        "1/CM",
        "TRANSMITTANCE",
        compressed=True,
    )
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


def test_the_benchmark_compares_the_model_with_spectrum_cosine(trained, tmp_path):
    out = tmp_path / "retrieval.json"
    command = [sys.executable, "-m", "benchmarks.retrieval", f"--workdir=all={trained[0]}"]
    run = subprocess.run([*command, f"--out={out}"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {(r["queries"], r["method"]): r for r in json.load(open(out))["results"]}
    assert set(rows) == {(q, m) for q in ("same", "shifted") for m in ("model", "spectrum cosine")}
    assert rows["same", "spectrum cosine"]["top1"] == 1.0  # the library holds each query
    assert all(
        r["n"] == len(trained[1].ids) and r["chance_top1"] == 1 / r["n"] for r in rows.values()
    )
    assert "| all | uv+ir+raman | shifted | model |" in run.stdout


def test_stage2_diagnostics_report_retrieval_and_mpr_against_the_baseline(trained):
    report = diagnostics.stage2_report(str(trained[0]), n=16)
    assert report["n"] == 16 and report["spectra"] == ["uv", "ir", "raman"]
    assert 0 <= report["top1_train"] <= 1 and 0 <= report["top1_valid"] <= 1
    assert 0 <= report["mpr_neighbour_baseline"] < report["mpr_model"]  # a barely trained model
    assert "encoder_shift" not in report  # no stage-1 workdir given


def test_stage2_figures_draw_attention_maps_and_a_tsne(trained, tmp_path):
    workdir, held_out = trained
    model = retrieval.load(str(workdir))
    maps = pretraining_figures.attention_maps(
        model, {k: held_out.spectra[k][:1] for k in model.spectra}
    )
    assert maps.shape == (2, 347, 347)  # test config: 2 heads; 69 + 139 + 139 patches
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, rtol=1e-5)
    run = subprocess.run(
        [sys.executable, "-m", "experiments.figures", f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("attention.png", "tsne.png"):
        with open(workdir / "figures" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
