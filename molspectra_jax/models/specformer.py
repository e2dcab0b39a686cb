"""SpecFormer: the MolSpectra spectrum encoder (a PatchTST-style transformer), Flax linen.

Each spectrum (UV-Vis `[B, 701]` on 1-15 eV step 0.02; IR and Raman `[B, 3501]` on
500-4000 cm^-1 step 1: the QM9S grids of `molspectra_jax.spectra`) is normalised with
`log10(1 + x)`, unfolded into overlapping patches without padding (length/stride 20/10
for UV, 50/25 for IR and Raman -> 69 + 139 + 139 = 347 tokens), a random 10 % of each
spectrum's patches are zeroed in place (exactly `P - int(P * (1 - r))` per molecule),
each patch is embedded by a per-spectrum linear layer plus a learned per-spectrum
positional table, and all tokens go through one post-norm transformer with BatchNorm
and RealFormer residual attention scores. Per-spectrum linear heads reconstruct the
patch values (masked patch reconstruction, MPR) and `flatten -> linear -> LayerNorm`
gives the spectrum embedding that is contrasted with the 3D encoder's molecule embedding.

Calling the module:

    out = SpecFormer(...)(spectra, mask_key=key_or_None, train=bool, mask=real_rows_or_None)

- `spectra`: `{name: [B, grid_length]}` raw intensities (extra keys are ignored).
- `mask_key`: PRNG key for the patch mask; `None` masks nothing (inference and
  contrast-only use). Independent of `train`. Row `b`'s mask depends only on
  `(mask_key, b)`, so padding the batch never changes the masks of real rows.
- `train`: BatchNorm uses batch statistics and updates `batch_stats`; dropout is on.
- `mask`: optional `[B]` bool, True = real molecule. Padded rows are left out of the
  BatchNorm statistics, so they never change the outputs of real rows.

Returns `{"embedding": [B, embed_dim], "reconstruction": {name: [B, P, patch_len]},
"patches": {name: [B, P, patch_len]} (normalised targets, before masking),
"patch_mask": {name: [B, P] bool, True = masked}}`. As in the official code, the
embedding used for the contrastive loss comes from the same (masked) forward pass.

Train step usage (BatchNorm state lives in the `batch_stats` collection):

    variables = model.init(key, spectra, train=False)    # {"params", "batch_stats"}
    out, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, spectra,
        mask_key=jax.random.fold_in(mask_key, step), train=True, mask=graph_mask,
        rngs={"dropout": dropout_key},  # only needed when dropout > 0
        mutable=["batch_stats"])
    batch_stats = updates["batch_stats"]  # absent with norm="layer"
    loss = losses.multi_spectrum_reconstruction_loss(
        out["reconstruction"], out["patches"], out["patch_mask"], mask=graph_mask)

Attention maps (the paper's Figure A2): `apply(..., mutable=["intermediates"])` also
returns each layer's softmax weights `[B, H, T, T]` under
`intermediates["layer_<i>"]["attention"]["attention"][0]`.

Under `jit` with the batch sharded along a mesh axis (NamedSharding), the BatchNorm
mean/variance are reductions over the global array, so statistics span the global batch
with no `axis_name`.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.core import FrozenDict

from molspectra_jax.spectra import SPECTRA, column

Array = jax.Array

# The spectrum table's grids and the official patches: uv 701 20/10, ir and raman 3501 50/25.
PAPER_SPECTRA = tuple(SPECTRA)
PAPER_GRID_LENGTHS = FrozenDict(column("grid.length"))
PAPER_PATCH_LENGTHS = FrozenDict(column("patch_length"))
PAPER_STRIDES = FrozenDict(column("stride"))
INPUT_NORMS = ("log10", "none")
NORMS = ("batch", "layer")

# torch.nn.init.xavier_uniform_ (the official reset_parameters) and torch's default
# nn.Linear kernel init (kaiming_uniform with a=sqrt(5)), used for the layers the
# official code leaves at their default.
_xavier = nn.initializers.xavier_uniform()
_torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _pos_init(key: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    # PatchTST's learned positional encoding pe="zeros": U(-0.02, 0.02).
    return jax.random.uniform(key, shape, dtype, -0.02, 0.02)


def num_patches(length: int, patch_len: int, stride: int) -> int:
    """Number of patches of an unpadded unfold (`torch.Tensor.unfold`)."""
    if not 0 < patch_len <= length or stride <= 0:
        raise ValueError(
            f"Need 0 < patch_len <= length and stride > 0, got {patch_len=}, {length=}, {stride=}."
        )
    return (length - patch_len) // stride + 1


def normalize_spectrum(spectrum: Array, kind: str = "log10") -> Array:
    """`log10(1 + x)` of raw intensities (`kind="none"`: identity). Shape preserved.

    Intensities are non-negative; negative values (round-off of broadening, garbage in
    padded rows) are clamped to 0 first, so the log never sees `1 + x <= 0`.
    """
    if kind == "log10":
        return jnp.log10(1.0 + jnp.maximum(spectrum, 0.0))
    if kind == "none":
        return spectrum
    raise ValueError(f"Unknown input_norm {kind!r}; choose one of {INPUT_NORMS}.")


def patchify(spectrum: Array, patch_len: int, stride: int) -> Array:
    """Unfolds `[B, L]` into `[B, P, patch_len]`, unpadded (a trailing remainder is dropped)."""
    n = num_patches(spectrum.shape[-1], patch_len, stride)
    index = jnp.arange(n)[:, None] * stride + jnp.arange(patch_len)[None, :]  # [P, patch_len]
    return spectrum[:, index]  # [B, P, patch_len]


def random_patch_mask(key: Array, batch: int, n_patches: int, ratio: float) -> Array:
    """Boolean `[B, P]` mask (True = masked) with exactly `P - int(P * (1 - ratio))` per row.

    As PatchTST's `random_masking`: the `int(P * (1 - ratio))` patches with the
    smallest uniform noise are kept. Row `b` uses `fold_in(key, b)`, so a row's mask
    does not depend on the batch size (padding) or on how the batch is sharded.
    """
    n_keep = int(n_patches * (1 - ratio))
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch))
    noise = jax.vmap(lambda k: jax.random.uniform(k, (n_patches,)))(row_keys)  # [B, P]
    rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)  # [B, P], a permutation per row
    return rank >= n_keep


class ResidualAttention(nn.Module):
    """Multi-head self-attention whose pre-softmax scores add the previous layer's (RealFormer)."""

    d_model: int
    num_heads: int
    attn_dropout: float = 0.0
    dropout: float = 0.0

    @nn.compact
    def __call__(
        self, x: Array, prev_scores: Array | None, *, deterministic: bool
    ) -> tuple[Array, Array]:
        b, t, _ = x.shape
        head_dim = self.d_model // self.num_heads

        def project(name: str) -> Array:
            y = nn.Dense(self.d_model, kernel_init=_xavier, name=name)(x)  # [B, T, D]
            return y.reshape(b, t, self.num_heads, head_dim)  # [B, T, H, Dh]

        q, k, v = project("query"), project("key"), project("value")
        scores = jnp.einsum("bthd,bshd->bhts", q, k) * head_dim**-0.5  # [B, H, T, T]
        if prev_scores is not None:
            scores = scores + prev_scores
        weights = nn.softmax(scores, axis=-1)  # [B, H, T, T]
        self.sow("intermediates", "attention", weights)  # kept under mutable=["intermediates"]
        weights = nn.Dropout(self.attn_dropout)(weights, deterministic=deterministic)
        out = jnp.einsum("bhts,bshd->bthd", weights, v).reshape(b, t, self.d_model)
        out = nn.Dense(self.d_model, kernel_init=_torch_default, name="out")(out)
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return out, scores  # scores go on to the next layer un-softmaxed


class EncoderLayer(nn.Module):
    """Post-norm transformer layer (PatchTST `TSTEncoderLayer`) with BatchNorm or LayerNorm."""

    d_model: int
    num_heads: int
    d_ff: int
    norm: str = "batch"
    dropout: float = 0.0
    attn_dropout: float = 0.0
    bn_momentum: float = 0.9

    def _normalize(self, name: str, x: Array, train: bool, bn_mask: Array | None) -> Array:
        if self.norm == "batch":
            # BatchNorm1d over the token features: statistics over (batch, tokens).
            # torch momentum 0.1 <-> flax momentum 0.9; eps 1e-5 as torch.
            bn = nn.BatchNorm(momentum=self.bn_momentum, epsilon=1e-5, name=name)
            return bn(x, use_running_average=not train, mask=bn_mask)
        return nn.LayerNorm(epsilon=1e-5, name=name)(x)

    @nn.compact
    def __call__(
        self, x: Array, prev_scores: Array | None, *, train: bool, bn_mask: Array | None
    ) -> tuple[Array, Array]:
        deterministic = not train
        attn = ResidualAttention(
            self.d_model, self.num_heads, self.attn_dropout, self.dropout, name="attention"
        )
        update, scores = attn(x, prev_scores, deterministic=deterministic)
        x = self._normalize("norm_attention", x + update, train, bn_mask)  # [B, T, D]
        h = nn.Dense(self.d_ff, kernel_init=_xavier, name="ff_in")(x)  # [B, T, F]
        # torch.nn.GELU is the exact erf form; flax defaults to the tanh approximation.
        h = nn.Dropout(self.dropout)(nn.gelu(h, approximate=False), deterministic=deterministic)
        h = nn.Dense(self.d_model, kernel_init=_xavier, name="ff_out")(h)  # [B, T, D]
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        return self._normalize("norm_ff", x + h, train, bn_mask), scores


class SpecFormer(nn.Module):
    """MolSpectra's SpecFormer; see the module docstring for the call signature and outputs.

    Per-spectrum settings are mappings keyed by spectrum name, so `spectra` may be any
    subset of their keys (the Table 7 ablations). The defaults are the paper's.
    """

    spectra: Sequence[str] = PAPER_SPECTRA
    grid_lengths: Mapping[str, int] = PAPER_GRID_LENGTHS
    patch_lengths: Mapping[str, int] = PAPER_PATCH_LENGTHS
    strides: Mapping[str, int] = PAPER_STRIDES
    mask_ratio: float = 0.10
    d_model: int = 128
    num_heads: int = 16
    d_ff: int = 256
    num_layers: int = 3
    norm: str = "batch"
    dropout: float = 0.0
    attn_dropout: float = 0.0
    embed_dim: int = 256
    input_norm: str = "log10"
    bn_momentum: float = 0.9

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "SpecFormer":
        """The module from a `config.specformer`-like ConfigDict of its fields, by name.

        Fields the config leaves out keep their defaults. Mappings become FrozenDicts
        and lists tuples: module fields must be hashable.

        Raises:
          ValueError: the config has fields that SpecFormer lacks.
        """
        fields = dict(cfg.items())
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls) if f.init}
        if unknown:
            raise ValueError(
                f"config.specformer has fields {sorted(unknown)} that SpecFormer lacks"
            )
        return cls(**{name: _hashable(value) for name, value in fields.items()})

    def patch_counts(self) -> dict[str, int]:
        """`{name: P}` tokens per used spectrum (paper: uv 69, ir 139, raman 139)."""
        self._validate()
        return {
            name: num_patches(self.grid_lengths[name], self.patch_lengths[name], self.strides[name])
            for name in self.spectra
        }

    def _validate(self) -> None:
        known = sorted(set(self.grid_lengths) & set(self.patch_lengths) & set(self.strides))
        if not self.spectra or len(set(self.spectra)) != len(self.spectra):
            raise ValueError(
                f"spectra must be a non-empty list of distinct names, got {self.spectra}."
            )
        for name in self.spectra:
            if name not in known:
                raise ValueError(f"Unknown spectrum {name!r}; configured spectra are {known}.")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})."
            )
        if self.norm not in NORMS:
            raise ValueError(f"Unknown norm {self.norm!r}; choose one of {NORMS}.")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(
                f"Unknown input_norm {self.input_norm!r}; choose one of {INPUT_NORMS}."
            )

    @nn.compact
    def __call__(
        self,
        spectra: Mapping[str, Array],
        *,
        mask_key: Array | None = None,
        train: bool = False,
        mask: Array | None = None,
    ) -> dict:
        counts = self.patch_counts()
        missing = [name for name in self.spectra if name not in spectra]
        if missing:
            raise ValueError(f"spectra lacks {missing}; got keys {sorted(spectra)}.")
        batch = spectra[self.spectra[0]].shape[0]
        for name in self.spectra:
            expected = (batch, self.grid_lengths[name])
            if spectra[name].shape != expected:
                got = spectra[name].shape
                raise ValueError(f"spectra[{name!r}] must have shape {expected} [B, L], got {got}.")
        if mask is not None and mask.shape != (batch,):
            raise ValueError(f"mask must have shape ({batch},) [B], got {mask.shape}.")
        spectrum_keys = None if mask_key is None else jax.random.split(mask_key, len(self.spectra))

        tokens, targets, patch_masks = [], {}, {}
        for i, name in enumerate(self.spectra):
            x = normalize_spectrum(spectra[name], self.input_norm)  # [B, L]
            patches = patchify(x, self.patch_lengths[name], self.strides[name])  # [B, P, Lp]
            if spectrum_keys is None:
                patch_mask = jnp.zeros(patches.shape[:2], bool)  # [B, P]
            else:
                patch_mask = random_patch_mask(
                    spectrum_keys[i], batch, counts[name], self.mask_ratio
                )
            masked = jnp.where(patch_mask[..., None], 0.0, patches)  # zeroed in place
            embedded = nn.Dense(self.d_model, kernel_init=_xavier, name=f"patch_embed_{name}")(
                masked
            )  # [B, P, D]
            pos = self.param(f"pos_embed_{name}", _pos_init, (counts[name], self.d_model))
            tokens.append(embedded + pos)
            targets[name], patch_masks[name] = patches, patch_mask

        z = jnp.concatenate(tokens, axis=1)  # [B, T, D], T = sum_s P_s (347 on paper grids)
        z = nn.Dropout(self.dropout)(z, deterministic=not train)
        bn_mask = None
        if mask is not None:
            # Padded rows leave the BatchNorm statistics; an all-padding batch falls back
            # to all rows, because a mean over nothing would be NaN.
            bn_mask = (mask | ~jnp.any(mask))[:, None, None]  # [B, 1, 1]
        scores = None
        for layer in range(self.num_layers):
            z, scores = EncoderLayer(
                d_model=self.d_model,
                num_heads=self.num_heads,
                d_ff=self.d_ff,
                norm=self.norm,
                dropout=self.dropout,
                attn_dropout=self.attn_dropout,
                bn_momentum=self.bn_momentum,
                name=f"layer_{layer}",
            )(z, scores, train=train, bn_mask=bn_mask)
        assert z.shape == (batch, sum(counts.values()), self.d_model)

        reconstruction, start = {}, 0
        for name in self.spectra:
            stop = start + counts[name]
            head = nn.Dense(
                self.patch_lengths[name], kernel_init=_torch_default, name=f"reconstruct_{name}"
            )
            reconstruction[name] = head(z[:, start:stop])  # [B, P, Lp]
            start = stop

        embedding = nn.Dense(self.embed_dim, kernel_init=_xavier, name="embed_head")(
            z.reshape(batch, -1)
        )  # [B, E]
        embedding = nn.LayerNorm(epsilon=1e-5, name="embed_norm")(embedding)
        return {
            "embedding": embedding,
            "reconstruction": reconstruction,
            "patches": targets,
            "patch_mask": patch_masks,
        }


def build_specformer(cfg: ml_collections.ConfigDict) -> SpecFormer:
    """`SpecFormer.from_config` as a function, for model registries."""
    return SpecFormer.from_config(cfg)


def _hashable(value):
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return FrozenDict(value)
    return tuple(value) if isinstance(value, list) else value
