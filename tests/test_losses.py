"""losses.py: NumPy references, jit, gradients, masking, validation, standalone import."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from molspectra_jax import losses

RNG = np.random.default_rng(0)


def _mask(n: int, n_real: int) -> np.ndarray:
    return np.arange(n) < n_real


# ---------------------------------------------------------------- NumPy references


def np_denoising(pred, target, mask):
    return np.mean((pred[mask] - target[mask]) ** 2)


def np_mpr(recon, patches, patch_mask, mask):
    errors = [
        np.mean((recon[b, p] - patches[b, p]) ** 2)
        for b in range(recon.shape[0])
        for p in range(recon.shape[1])
        if patch_mask[b, p] and mask[b]
    ]
    return np.mean(errors)


def np_info_nce(mol, spec, temperature, mask, symmetric):
    mol, spec = mol[mask], spec[mask]
    mol = mol / np.linalg.norm(mol, axis=1, keepdims=True)
    spec = spec / np.linalg.norm(spec, axis=1, keepdims=True)
    logits = mol @ spec.T / temperature

    def direction(lg):
        lse = np.log(np.sum(np.exp(lg - lg.max(1, keepdims=True)), 1)) + lg.max(1)
        return np.mean(lse - np.diag(lg)), np.mean(np.argmax(lg, 1) == np.arange(len(lg)))

    loss, acc = direction(logits)
    if symmetric:
        loss_t, acc_t = direction(logits.T)
        loss, acc = (loss + loss_t) / 2, (acc + acc_t) / 2
    return loss, acc


def np_property(pred, target, mask, kind):
    err = pred[mask] - target[mask]
    return np.mean(err**2) if kind == "mse" else np.mean(np.abs(err))


# ---------------------------------------------------------------- inputs per loss
# Each case: (fn, make args(dtype) -> (positional arrays, keyword masks), numpy reference,
# index of the masked rows' leading axis per positional array or None).


def denoising_case(dtype=np.float32):
    pred, target = RNG.normal(size=(2, 7, 3)).astype(dtype)
    return (pred, target), {"mask": _mask(7, 5)}


def mpr_case(dtype=np.float32):
    recon, patches = RNG.normal(size=(2, 4, 6, 5)).astype(dtype)
    patch_mask = RNG.random((4, 6)) < 0.4
    patch_mask[:, 0] = True  # every molecule has a masked patch
    return (recon, patches, patch_mask), {"mask": _mask(4, 3)}


def info_nce_case(dtype=np.float32):
    mol, spec = RNG.normal(size=(2, 6, 8)).astype(dtype)
    return (mol, spec), {"mask": _mask(6, 4)}


def property_case(dtype=np.float32):
    pred, target = RNG.normal(size=(2, 5, 3)).astype(dtype)
    return (pred, target), {"mask": _mask(5, 3)}


def energy_force_case(dtype=np.float32):
    e_pred, e = RNG.normal(size=(2, 4)).astype(dtype)
    f_pred, f = RNG.normal(size=(2, 9, 3)).astype(dtype)
    return (e_pred, e, f_pred, f), {"graph_mask": _mask(4, 3), "atom_mask": _mask(9, 7)}


def np_energy_force(e_pred, e, f_pred, f, graph_mask, atom_mask):
    return 0.2 * np_property(e_pred, e, graph_mask, "mse") + 0.8 * np_property(
        f_pred, f, atom_mask, "mse"
    )


# name -> (loss fn, input maker, number of differentiable leading args, the mask that
# indexes each positional arg's leading axis, by keyword, or None).
CASES = {
    "denoising": (losses.denoising_loss, denoising_case, 2, ("mask", "mask")),
    "mpr": (losses.masked_patch_reconstruction_loss, mpr_case, 2, ("mask", "mask", None)),
    "info_nce": (losses.info_nce_loss, info_nce_case, 2, ("mask", "mask")),
    "info_nce_symmetric": (
        lambda a, b, **kw: losses.info_nce_loss(a, b, symmetric=True, **kw),
        info_nce_case,
        2,
        ("mask", "mask"),
    ),
    "property_mse": (losses.property_loss, property_case, 2, ("mask", "mask")),
    "property_l1": (
        lambda p, t, **kw: losses.property_loss(p, t, kind="l1", **kw),
        property_case,
        2,
        ("mask", "mask"),
    ),
    "energy_force": (
        losses.energy_force_loss,
        energy_force_case,
        4,
        ("graph_mask", "graph_mask", "atom_mask", "atom_mask"),
    ),
}


def reference(name, args, masks):
    if name == "denoising":
        return np_denoising(*args, masks["mask"])
    if name == "mpr":
        return np_mpr(*args, masks["mask"])
    if name.startswith("info_nce"):
        return np_info_nce(*args, 0.07, masks["mask"], name.endswith("symmetric"))[0]
    if name.startswith("property"):
        return np_property(*args, masks["mask"], name.split("_")[1])
    return np_energy_force(*args, **masks)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_numpy_reference_eager_and_jit(name):
    fn, make, _, _ = CASES[name]
    args, masks = make()
    expected = reference(name, args, masks)
    np.testing.assert_allclose(fn(*args, **masks), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(*args, **masks), expected, rtol=1e-5, atol=1e-6)


def test_unmasked_defaults_match_plain_means():
    (pred, target), _ = denoising_case()
    np.testing.assert_allclose(
        losses.denoising_loss(pred, target), np.mean((pred - target) ** 2), rtol=1e-6
    )
    (mol, spec), _ = info_nce_case()
    all_real = np.ones(len(mol), bool)
    np.testing.assert_allclose(
        losses.info_nce_loss(mol, spec), np_info_nce(mol, spec, 0.07, all_real, False)[0], rtol=1e-5
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_accuracy_matches_numpy(symmetric):
    (mol, spec), masks = info_nce_case()
    spec[:2] = mol[:2]  # make some positives the obvious match
    loss, acc = losses.info_nce_loss_and_accuracy(mol, spec, symmetric=symmetric, **masks)
    ref_loss, ref_acc = np_info_nce(mol, spec, 0.07, masks["mask"], symmetric)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(acc, ref_acc, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_are_correct(name):
    fn, make, n_float, _ = CASES[name]
    # float64 so that finite differences are accurate enough for tight tolerances.
    with jax.enable_x64(True):
        args, masks = make(np.float64)
        rest = args[n_float:]
        check_grads(
            lambda *f: fn(*f, *rest, **masks),
            tuple(jnp.asarray(a) for a in args[:n_float]),
            order=1,
            modes=("rev",),
            atol=1e-6,
            rtol=1e-6,
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_rows_change_nothing(name):
    fn, make, n_float, row_masks = CASES[name]
    args, masks = make()
    perturbed = [a.copy() for a in args]
    for a, mask_name in zip(perturbed, row_masks, strict=True):
        if mask_name is not None:
            padded = ~masks[mask_name]
            a[padded] = 100.0 * RNG.normal(size=a[padded].shape)
    np.testing.assert_allclose(fn(*perturbed, **masks), fn(*args, **masks), rtol=1e-6)
    grads = jax.grad(lambda *f: fn(*f, *args[n_float:], **masks), argnums=range(n_float))(
        *perturbed[:n_float]
    )
    for g, mask_name in zip(grads, row_masks, strict=False):
        assert np.all(np.asarray(g)[~masks[mask_name]] == 0.0)  # no gradient into padding


@pytest.mark.parametrize("name", sorted(CASES))
def test_all_masked_is_zero_with_finite_gradients(name):
    fn, make, n_float, _ = CASES[name]
    args, masks = make()
    none_real = {k: np.zeros_like(m) for k, m in masks.items()}
    grads = jax.grad(lambda *f: fn(*f, *args[n_float:], **none_real), argnums=range(n_float))(
        *args[:n_float]
    )
    assert fn(*args, **none_real) == 0.0
    for g in grads:
        assert np.all(np.isfinite(g)) and np.all(g == 0.0)


def test_mpr_ignores_unmasked_patches():
    (recon, patches, patch_mask), masks = mpr_case()
    changed = patches.copy()
    changed[~patch_mask] += 10.0
    np.testing.assert_allclose(
        losses.masked_patch_reconstruction_loss(recon, changed, patch_mask, **masks),
        losses.masked_patch_reconstruction_loss(recon, patches, patch_mask, **masks),
        rtol=1e-6,
    )


def test_multi_spectrum_reconstruction_loss_sums_spectra():
    (r1, p1, m1), masks = mpr_case()
    (r2, p2, m2), _ = mpr_case()
    total = losses.multi_spectrum_reconstruction_loss(
        {"uv": r1, "ir": r2}, {"uv": p1, "ir": p2}, {"uv": m1, "ir": m2}, **masks
    )
    expected = np_mpr(r1, p1, m1, masks["mask"]) + np_mpr(r2, p2, m2, masks["mask"])
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="same keys"):
        losses.multi_spectrum_reconstruction_loss({"uv": r1}, {"ir": p1}, {"uv": m1})


@pytest.mark.parametrize(
    "call",
    [
        lambda: losses.denoising_loss(jnp.zeros((4, 3)), jnp.zeros((5, 3))),
        lambda: losses.masked_patch_reconstruction_loss(
            jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), bool)
        ),
        lambda: losses.info_nce_loss(jnp.zeros((4, 8)), jnp.zeros((4, 6))),
        lambda: losses.property_loss(jnp.zeros((4, 2)), jnp.zeros((4, 1))),
        lambda: losses.energy_force_loss(
            jnp.zeros(3), jnp.zeros(3), jnp.zeros((5, 3)), jnp.zeros((6, 3))
        ),
    ],
)
def test_shape_mismatch_raises_naming_both_shapes(call):
    with pytest.raises(ValueError, match=r"\(.*\) and \(.*\)"):
        call()


def test_bad_mask_and_kind_raise():
    with pytest.raises(ValueError, match="mask must have shape"):
        losses.denoising_loss(jnp.zeros((4, 3)), jnp.zeros((4, 3)), mask=jnp.ones(5, bool))
    with pytest.raises(ValueError, match="boolean"):
        losses.denoising_loss(jnp.zeros((4, 3)), jnp.zeros((4, 3)), mask=jnp.ones(4))
    with pytest.raises(ValueError, match="patch_mask must have shape"):
        losses.masked_patch_reconstruction_loss(
            jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), bool)
        )
    with pytest.raises(ValueError, match="'mse', 'l1'"):
        losses.property_loss(jnp.zeros(3), jnp.zeros(3), kind="huber")


def test_import_is_standalone():
    code = (
        "import sys, molspectra_jax.losses\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flax', 'e3nn_jax', 'rdkit', "
        "'optax', 'ml_collections', 'jraph', 'pandas', 'torch')]\n"
        "others = [m for m in sys.modules if m.startswith('molspectra_jax.') "
        "and m != 'molspectra_jax.losses']\n"
        "assert not bad and not others, (bad, others)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_repo_root()))


def _repo_root():
    import pathlib

    return pathlib.Path(losses.__file__).resolve().parents[1]


def test_energy_force_terms_are_the_two_losses_and_sum_to_the_total():
    args, masks = energy_force_case()
    total, terms = losses.energy_force_loss_and_terms(
        *args, energy_weight=0.3, force_weight=0.7, **masks
    )
    e_pred, e, f_pred, f = args
    np.testing.assert_allclose(
        terms["energy_loss"], np_property(e_pred, e, masks["graph_mask"], "mse"), rtol=1e-6
    )
    np.testing.assert_allclose(
        terms["force_loss"], np_property(f_pred, f, masks["atom_mask"], "mse"), rtol=1e-6
    )
    np.testing.assert_allclose(
        total, 0.3 * terms["energy_loss"] + 0.7 * terms["force_loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.energy_force_loss(*args, energy_weight=0.3, force_weight=0.7, **masks), total
    )
