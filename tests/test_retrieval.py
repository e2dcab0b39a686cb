"""`molspectra_jax.retrieval`: a stage-2 workdir embeds spectra and molecules and ranks
candidates by the contrastive cosine; padding never changes an embedding; a model
pre-trained on a subset of modalities takes those queries and names what is missing."""

import numpy as np
import pytest

import molspectra_jax
from molspectra_jax import retrieval
from molspectra_jax.configs import test_pretrain
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


def test_queries_must_match_the_models_modalities(trained, tmp_path_factory):
    workdir, held_out = trained
    model = retrieval.load(str(workdir))
    with pytest.raises(ValueError, match=r"lacks \['raman'\]"):
        model.embed_spectra({k: held_out.spectra[k][:2] for k in ("uv", "ir")})
    with pytest.raises(ValueError, match="expected"):
        model.embed_spectra({k: np.zeros((2, 7)) for k in ("uv", "ir", "raman")})
    ir_only, held = stage2(tmp_path_factory, spectra=("ir",))
    model = retrieval.load(str(ir_only))
    hits = model.search({"ir": np.asarray(held.spectra["ir"][:3])}, held, k=2)
    assert model.spectra == ("ir",) and hits.index.shape == (3, 2)


def test_only_stage_2_workdirs_search(tmp_path):
    from molspectra_jax.configs import test as finetune_test
    from molspectra_jax.train import finetune

    finetune.train_and_evaluate(finetune_test.get_config(), str(tmp_path))
    with pytest.raises(CheckpointError, match="not a stage-2 pre-training run"):
        retrieval.load(str(tmp_path))
    assert molspectra_jax.load(str(tmp_path)).targets == ("gap", "u0")
