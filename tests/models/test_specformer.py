"""SpecFormer: tokens, exact-count masking, zeroed inputs, MPR, padding, ablations, overfit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from molspectra_jax import losses
from molspectra_jax.configs.finetune_qm9 import specformer_config
from molspectra_jax.models.specformer import (
    SpecFormer,
    build_specformer,
    patchify,
    random_patch_mask,
)

GRIDS = {"uv": 701, "ir": 3501, "raman": 3501}


def tiny_config(**overrides):
    """Paper grids, patches and masking; a tiny transformer so the tests compile fast."""
    cfg = specformer_config()
    cfg.update(dict(d_model=16, num_heads=4, d_ff=32, num_layers=2, embed_dim=8))
    cfg.update(overrides)
    return cfg


def make_spectra(key, batch):
    keys = jax.random.split(key, len(GRIDS))
    # Non-negative, peaky intensities (broadened sticks look like this after log10(1 + x)).
    return {
        name: 10.0 * jax.random.uniform(k, (batch, n)) ** 8
        for k, (name, n) in zip(keys, GRIDS.items(), strict=True)
    }


def apply_train(model, variables, spectra, mask_key, mask=None):
    return model.apply(
        variables, spectra, mask_key=mask_key, train=True, mask=mask, mutable=["batch_stats"]
    )


def _record_patch_embedding_inputs(seen):
    def interceptor(next_fun, args, kwargs, context):
        name = context.module.name or ""
        if name.startswith("patch_embed_"):
            seen[name.removeprefix("patch_embed_")] = args[0]  # [B, P, patch_len]
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


@pytest.fixture(scope="module")
def tiny():
    """(model, spectra [4 rows], variables, eval_out, run).

    ``eval_out`` is the inference output (mask_key=None, train=False), computed in the
    same compilation as the init. ``run(variables, spectra, mask_key, mask)`` is ONE
    jitted train-mode apply (compiled once per batch size and shared by the tests, as
    compilation dominates their time) returning (outputs, new state, patch-embedding
    inputs recorded by a method interceptor).
    """
    model = build_specformer(tiny_config())
    spectra = make_spectra(jax.random.key(1), 4)

    @jax.jit
    def init_and_eval(key, spectra):
        variables = model.init(key, spectra, train=False)
        return variables, model.apply(variables, spectra, mask_key=None, train=False)

    @jax.jit
    def run(variables, spectra, mask_key, mask):
        seen = {}
        with _record_patch_embedding_inputs(seen):
            out, state = apply_train(model, variables, spectra, mask_key, mask)
        return out, state, seen

    # unsafe_rbg compiles about twice as fast as threefry on CPU; which PRNG draws the
    # initial parameters is irrelevant to these tests (patch masks use threefry keys).
    variables, eval_out = init_and_eval(jax.random.key(2, impl="unsafe_rbg"), spectra)
    return model, spectra, variables, eval_out, run


ALL_REAL = jnp.ones(4, bool)


def test_paper_config_has_347_tokens_and_paper_shapes():
    model = build_specformer(specformer_config())
    assert model.patch_counts() == {"uv": 69, "ir": 139, "raman": 139}
    spectra = jax.eval_shape(lambda: make_spectra(jax.random.key(0), 2))
    variables = jax.eval_shape(lambda s: model.init(jax.random.key(0), s), spectra)
    out = jax.eval_shape(
        lambda v, s: apply_train(model, v, s, jax.random.key(1))[0], variables, spectra
    )
    assert variables["params"]["embed_head"]["kernel"].shape == (347 * 128, 256)
    assert variables["params"]["layer_2"]["attention"]["query"]["kernel"].shape == (128, 128)
    assert "layer_3" not in variables["params"]
    assert out["embedding"].shape == (2, 256)
    for name, (p, length) in {"uv": (69, 20), "ir": (139, 50), "raman": (139, 50)}.items():
        assert out["reconstruction"][name].shape == (2, p, length)
        assert out["patches"][name].shape == (2, p, length)
        assert out["patch_mask"][name].shape == (2, p)


def test_defaults_are_the_paper_config():
    assert SpecFormer() == build_specformer(specformer_config())


def test_from_config_maps_fields_and_names_unknown_ones():
    cfg = ml_collections.ConfigDict(dict(spectra=["ir"], d_model=32, strides={"ir": 50}))
    model = build_specformer(cfg)
    assert model.spectra == ("ir",) and model.d_model == 32 and model.d_ff == SpecFormer.d_ff
    assert model.strides == {"ir": 50}
    hash(model.strides)  # module fields must be hashable (lists, dicts are converted)
    assert model.patch_counts() == {"ir": 70}  # (3501 - 50) // 50 + 1
    with pytest.raises(ValueError, match=r"fields \['d_modle'\] that SpecFormer lacks"):
        build_specformer(ml_collections.ConfigDict(dict(d_modle=32)))


def test_patchify_matches_unfold():
    x = np.arange(2 * 23, dtype=np.float32).reshape(2, 23)
    patches = patchify(jnp.asarray(x), patch_len=5, stride=3)  # (23 - 5) // 3 + 1 = 7
    expected = np.stack([x[:, 3 * p : 3 * p + 5] for p in range(7)], axis=1)
    np.testing.assert_array_equal(patches, expected)


def test_random_patch_mask_exact_count_per_row(key):
    # ratio 0.1 on the paper grids is checked through the model below.
    n_patches, ratio = 139, 0.4
    make_mask = jax.jit(random_patch_mask, static_argnums=(1, 2, 3))
    mask = make_mask(key, 16, n_patches, ratio)  # [16, P]
    np.testing.assert_array_equal(mask.sum(axis=1), n_patches - int(n_patches * (1 - ratio)))
    assert len({tuple(np.flatnonzero(row)) for row in np.asarray(mask)}) > 1  # rows differ
    # Row b depends only on (key, b): padding the batch keeps the real rows' masks.
    np.testing.assert_array_equal(make_mask(key, 5, n_patches, ratio), mask[:5])


def test_model_masks_exact_count_and_outputs(tiny):
    model, spectra, variables, _, run = tiny
    out, _, _ = run(variables, spectra, jax.random.key(3), ALL_REAL)
    for name, p in model.patch_counts().items():
        np.testing.assert_array_equal(out["patch_mask"][name].sum(axis=1), p - int(p * 0.9))
        np.testing.assert_allclose(
            out["patches"][name],
            patchify(jnp.log10(1 + spectra[name]), model.patch_lengths[name], model.strides[name]),
            rtol=1e-6,
        )
    assert out["embedding"].shape == (4, 8)
    assert np.all(np.isfinite(out["embedding"]))


def test_masked_patches_are_zero_in_model_input(tiny):
    model, spectra, variables, _, run = tiny
    out, _, seen = run(variables, spectra, jax.random.key(4), ALL_REAL)
    assert set(seen) == set(GRIDS)
    for name, model_input in seen.items():
        masked = np.asarray(out["patch_mask"][name])  # [B, P]
        patches = np.asarray(out["patches"][name])  # [B, P, patch_len]
        assert np.all(np.asarray(model_input)[masked] == 0.0)
        assert np.all(patches[masked].max(axis=-1) > 0.0)  # zeroed, not zero to begin with
        np.testing.assert_array_equal(np.asarray(model_input)[~masked], patches[~masked])


def test_reconstruction_loss_depends_only_on_masked_patches(tiny):
    model, spectra, variables, _, run = tiny
    out, _, _ = run(variables, spectra, jax.random.key(5), ALL_REAL)

    def mpr(patches):
        return losses.multi_spectrum_reconstruction_loss(
            out["reconstruction"], patches, out["patch_mask"]
        )

    def shift(where_masked):
        return {
            n: p + 3.0 * (out["patch_mask"][n][..., None] == where_masked)
            for n, p in out["patches"].items()
        }

    np.testing.assert_allclose(mpr(shift(where_masked=False)), mpr(out["patches"]), rtol=1e-6)
    assert abs(float(mpr(shift(where_masked=True))) - float(mpr(out["patches"]))) > 1.0


@pytest.mark.parametrize(
    "subset,n_tokens", [(("ir",), 139), (("uv", "raman"), 208), (("uv", "ir", "raman"), 347)]
)
def test_spectrum_subsets_give_right_token_count(key, subset, n_tokens):
    model = build_specformer(tiny_config(spectra=subset))
    spectra = jax.eval_shape(lambda: make_spectra(key, 3))  # all three present, extras ignored
    variables = jax.eval_shape(lambda s: model.init(key, s), spectra)
    out = jax.eval_shape(lambda v, s: apply_train(model, v, s, key)[0], variables, spectra)
    assert sum(model.patch_counts().values()) == n_tokens
    assert variables["params"]["embed_head"]["kernel"].shape == (n_tokens * 16, 8)
    assert set(out["reconstruction"]) == set(subset)
    assert {
        k.removeprefix("pos_embed_") for k in variables["params"] if k.startswith("pos_")
    } == set(subset)


def test_padded_rows_do_not_change_real_rows_in_train_mode(tiny):
    # Rows 2 and 3 are padding; two different garbage fillings must give identical real
    # rows and BatchNorm updates (same batch size, so the shared compiled fn is reused).
    model, spectra, variables, _, run = tiny
    garbage = make_spectra(jax.random.key(6), 4)
    filled = {n: s.at[2:].set(1e3 * garbage[n][2:]) for n, s in spectra.items()}
    mask, mask_key = jnp.arange(4) < 2, jax.random.key(7)
    ref, ref_state, _ = run(variables, spectra, mask_key, mask)
    out, state, _ = run(variables, filled, mask_key, mask)
    np.testing.assert_allclose(out["embedding"][:2], ref["embedding"][:2], rtol=1e-5, atol=1e-5)
    for name in ref["reconstruction"]:
        np.testing.assert_allclose(
            out["reconstruction"][name][:2], ref["reconstruction"][name][:2], rtol=1e-5, atol=1e-5
        )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state, ref_state
    )
    # Without the mask the garbage rows move the BatchNorm statistics.
    unmasked, _, _ = run(variables, filled, mask_key, ALL_REAL)
    assert not np.allclose(unmasked["embedding"][:2], ref["embedding"][:2], atol=1e-3)
    assert run._cache_size() == 1  # masks and keys are traced arguments: no recompilation


def test_no_mask_key_masks_nothing(tiny):
    model, spectra, variables, eval_out, run = tiny
    assert not any(np.any(m) for m in eval_out["patch_mask"].values())
    assert np.all(np.isfinite(eval_out["embedding"]))


def test_layer_norm_option_has_no_batch_stats(key):
    model = build_specformer(tiny_config(norm="layer"))
    spectra = jax.eval_shape(lambda: make_spectra(key, 2))
    variables = jax.eval_shape(model.init, key, spectra)
    assert "batch_stats" not in variables
    assert "scale" in variables["params"]["layer_0"]["norm_attention"]
    out = jax.eval_shape(
        lambda v, s: model.apply(v, s, mask_key=key, train=True), variables, spectra
    )
    assert out["embedding"].shape == (2, 8)


def test_jit_compiles_once_across_mask_keys_and_updates_batch_stats(tiny):
    model, spectra, variables, _, run = tiny
    out1, state1, _ = run(variables, spectra, jax.random.key(8), ALL_REAL)
    out2, _, _ = run(variables, spectra, jax.random.key(9), ALL_REAL)
    assert any(not np.array_equal(out1["patch_mask"][n], out2["patch_mask"][n]) for n in GRIDS)
    before = variables["batch_stats"]["layer_0"]["norm_ff"]["mean"]
    assert not np.allclose(state1["batch_stats"]["layer_0"]["norm_ff"]["mean"], before)


def test_invalid_configs_raise(key):
    spectra = make_spectra(key, 1)
    # Validation runs at trace time: eval_shape raises without compiling anything.
    with pytest.raises(ValueError, match="Unknown spectrum 'nmr'"):
        jax.eval_shape(build_specformer(tiny_config(spectra=("nmr",))).init, key, spectra)
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(build_specformer(tiny_config(num_heads=5)).init, key, spectra)
    with pytest.raises(ValueError, match="Unknown norm"):
        jax.eval_shape(build_specformer(tiny_config(norm="group")).init, key, spectra)
    with pytest.raises(ValueError, match=r"spectra\['ir'\] must have shape"):
        bad = {**spectra, "ir": spectra["ir"][:, :100]}
        jax.eval_shape(build_specformer(tiny_config()).init, key, bad)


def test_overfit_fixed_batch_reduces_mpr_loss(tiny):
    model, spectra, variables, _, _ = tiny
    mask_key = jax.random.key(10)
    optimizer = optax.adam(1e-2)

    def loss_fn(params, batch_stats):
        out, updates = apply_train(
            model, {"params": params, "batch_stats": batch_stats}, spectra, mask_key
        )
        loss = losses.multi_spectrum_reconstruction_loss(
            out["reconstruction"], out["patches"], out["patch_mask"]
        )
        return loss, updates["batch_stats"]

    @jax.jit
    def step(params, batch_stats, opt_state):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = optimizer.init(params)
    history = []
    for _ in range(20):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
        history.append(float(loss))
    assert history[-1] < 0.5 * history[0], history
