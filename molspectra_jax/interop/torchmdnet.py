"""TorchMD-Net checkpoints -> molspectra-jax: hyper-parameters to a config, weights to params.

Reads the Lightning layout `torchmd-train` writes (`hyper_parameters` + `state_dict`
with `model.` prefixes), from upstream torchmd-net 3.x and from the MolSpectra / Coord
fork (its `layernorm_on_vec: whitened` output norm, the QM9 setting's per-layer
`x_norms` / `vec_norms`, its `output_model_noise` head). The mapping is pure numpy: only
`read_checkpoint` needs torch. Anything this package cannot compute exactly stops the
import with an `UnsupportedCheckpoint` naming the option.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from molspectra_jax.models.encoder import ACTIVATIONS, RadialBasis

# torchmd-net output model (ET: "Equivariant" + name) -> our head kind.
OUTPUT_MODELS = {
    "Scalar": "scalar",
    "EquivariantScalar": "scalar",
    "DipoleMoment": "dipole",
    "EquivariantDipoleMoment": "dipole",
    "ElectronicSpatialExtent": "spatial_extent",
    "EquivariantElectronicSpatialExtent": "spatial_extent",
}
THEIR_REDUCE_OPS = {"add": "sum", "sum": "sum", "mean": "mean"}  # theirs -> ours
# Keys read but not needed: buffers we recompute, the fork's running denoising-target
# statistics, and (stage-2 checkpoints) the spectrum encoder, which is not imported.
IGNORED = re.compile(
    r"^(representation_model\.distance\.box|output_model\.atomic_mass"
    r"|prior_model\.(0\.)?initial_atomref|pos_normalizer\..*|representation_spec_model\..*)$"
)


class UnsupportedCheckpoint(ValueError):
    """A checkpoint option or weight molspectra-jax does not (exactly) support."""


def read_checkpoint(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(hyper_parameters, state dict without `model.` prefixes, as float32 numpy) of a
    torchmd-net `.ckpt`. Needs torch (`pip install "molspectra-jax[torchmdnet]"`)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            'reading torchmd-net checkpoints needs torch: pip install "molspectra-jax[torchmdnet]"'
        ) from e
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as e:
        raise UnsupportedCheckpoint(f"{path}: cannot read as a torch checkpoint ({e})") from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UnsupportedCheckpoint(f"{path}: no state_dict (not a torchmd-train checkpoint)")
    hparams = checkpoint.get("hyper_parameters")
    if hparams is None:
        raise UnsupportedCheckpoint(f"{path}: no hyper_parameters (not a torchmd-train checkpoint)")
    hparams = dict(vars(hparams)) if hasattr(hparams, "__dict__") else dict(hparams)
    state = {
        re.sub(r"^model\.", "", k): v.detach().cpu().numpy()
        for k, v in checkpoint["state_dict"].items()
        if hasattr(v, "detach")
    }
    return hparams, state


def _option(hparams: dict, key: str, supported=None, default=None):
    value = hparams.get(key, default)
    if supported is not None and value not in supported:
        raise UnsupportedCheckpoint(
            f"{key}={value!r} is not supported (supported: {sorted(map(str, supported))})"
        )
    return value


def model_config(hparams: dict, state: dict[str, np.ndarray]) -> dict:
    """config.model fields (our ET) for a torchmd-net ET checkpoint; raises on the rest."""
    _option(hparams, "model", {"equivariant-transformer"})
    _option(hparams, "rbf_type", {"expnorm", "gauss"})
    for key in ("activation", "attn_activation"):
        _option(hparams, key, set(ACTIVATIONS) - {"gelu"})
    _option(hparams, "distance_influence", {"keys", "values", "both", "none"})
    _option(hparams, "atom_filter", {-1, None}, -1)
    if hparams.get("box_vecs") is not None or np.any(
        state.get("representation_model.distance.box", 0)
    ):
        raise UnsupportedCheckpoint("box_vecs: periodic boundary conditions are not supported")
    for key in ("charge", "spin"):
        if hparams.get(key):
            raise UnsupportedCheckpoint(f"{key}=True: charge/spin inputs are not supported")
    _option(hparams, "layernorm_on_vec", {None, "whitened"}, None)
    layer_norms = "representation_model.x_norms.0.weight" in state
    return {
        "name": "et",
        "hidden": int(hparams["embedding_dimension"]),
        "num_layers": int(hparams["num_layers"]),
        "num_heads": int(hparams["num_heads"]),
        "num_rbf": int(hparams["num_rbf"]),
        "cutoff": float(hparams["cutoff_upper"]),
        "max_z": int(hparams["max_z"]),
        "activation": hparams["activation"],
        "neighbor_embedding": bool(hparams["neighbor_embedding"]),
        "layernorm_on_vec": "whitened"
        if "representation_model.out_norm_vec.weight" in state
        else "none",
        "layer_norms": layer_norms,
        "whitening": "fork",
        "cutoff_lower": float(hparams["cutoff_lower"]),
        "rbf": hparams["rbf_type"],
        "trainable_rbf": bool(hparams["trainable_rbf"]),
        "attn_activation": hparams["attn_activation"],
        "distance_influence": hparams["distance_influence"],
        "self_loops": True,
        "max_num_neighbors": int(hparams["max_num_neighbors"]),
        "vector_cutoff": bool(hparams.get("vector_cutoff", False)),
    }


def hyperparameters(model: dict, output_model: str = "Scalar", reduce_op: str = "sum") -> dict:
    """The inverse of `model_config` for upstream torchmd-net: `create_model` arguments of
    the ET our `config.model` describes (for running the reference side by side)."""
    if model.get("layer_norms") or model.get("layernorm_on_vec", "none") != "none":
        raise UnsupportedCheckpoint(
            "upstream torchmd-net has no fork norms (layer_norms, layernorm_on_vec)"
        )
    if not model.get("self_loops", True):
        raise UnsupportedCheckpoint("upstream torchmd-net always has self-loops")
    return {
        "model": "equivariant-transformer",
        "embedding_dimension": model["hidden"],
        "num_layers": model["num_layers"],
        "num_heads": model["num_heads"],
        "num_rbf": model["num_rbf"],
        "rbf_type": model.get("rbf", "expnorm"),
        "trainable_rbf": model.get("trainable_rbf", False),
        "activation": model.get("activation", "silu"),
        "attn_activation": model.get("attn_activation", "silu"),
        "neighbor_embedding": model.get("neighbor_embedding", True),
        "distance_influence": model.get("distance_influence", "both"),
        "cutoff_lower": model.get("cutoff_lower", 0.0),
        "cutoff_upper": model["cutoff"],
        "max_z": model.get("max_z", 100),
        "max_num_neighbors": model.get("max_num_neighbors", 32),
        "vector_cutoff": model.get("vector_cutoff", False),
        "output_model": output_model,
        "reduce_op": reduce_op,
        "prior_model": None,
        "derivative": False,
        "atom_filter": -1,
        "precision": 32,
    }


def head_config(hparams: dict, state: dict) -> tuple[str, str]:
    """(our head kind, reduce_op) of the checkpoint's output model. torchmd-net 3.x (its
    neighbour-list `distance.box` buffer is in the state) averages as sum / (n + 1)."""
    kind = OUTPUT_MODELS.get(hparams["output_model"])
    if kind is None:
        raise UnsupportedCheckpoint(
            f"output_model={hparams['output_model']!r} is not supported "
            f"(supported: {sorted(OUTPUT_MODELS)})"
        )
    if hparams.get("output_mlp_num_layers", 0):
        raise UnsupportedCheckpoint("output_mlp_num_layers > 0 is not supported")
    reduce_op = THEIR_REDUCE_OPS[_option(hparams, "reduce_op", set(THEIR_REDUCE_OPS), "add")]
    if reduce_op == "mean" and "representation_model.distance.box" in state:
        reduce_op = "torchmdnet_mean"
    return kind, reduce_op


def prior_names(hparams: dict) -> list[str]:
    """Names of the checkpoint's prior models (torchmd-net accepts several spellings)."""
    prior = hparams.get("prior_model")
    if not prior:
        return []
    names = []
    for entry in prior if isinstance(prior, list) else [prior]:
        names.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return names


class _State:
    """The state dict, tracking which keys the conversion consumed."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.state, self.used = state, set()

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise UnsupportedCheckpoint(f"the checkpoint lacks {key!r}")
        self.used.add(key)
        return np.asarray(self.state[key], np.float32)

    def linear(self, prefix: str, bias: bool = True) -> dict:
        out = {"kernel": self.take(prefix + ".weight").T}
        if bias:
            out["bias"] = self.take(prefix + ".bias")
        return out

    def norm(self, prefix: str) -> dict:
        return {"scale": self.take(prefix + ".weight"), "bias": self.take(prefix + ".bias")}

    def first(self, *prefixes: str, then: str = "") -> str:
        """The first of `prefixes` (spellings across versions) with `prefix + then +
        ".weight"` in the state."""
        return next((p for p in prefixes if p + then + ".weight" in self.state), prefixes[0])


def _encoder(s: _State, config: dict) -> dict:
    rep = "representation_model."
    enc = {"embedding": {"embedding": s.take(rep + "embedding.weight")}}
    rbf_names = ("means", "betas") if config["rbf"] == "expnorm" else ("offset", "coeff")
    if config["trainable_rbf"]:
        enc["rbf"] = {n: s.take(f"{rep}distance_expansion.{n}") for n in rbf_names}
    else:  # fixed buffers: ours recomputes them, so they must be torchmd-net's initial ones
        basis = RadialBasis(
            config["rbf"],
            config["num_rbf"],
            config["cutoff_lower"],
            config["cutoff"],
            trainable=True,
        )
        initial = basis.init(jax.random.key(0), jnp.zeros(1))["params"]
        for n in rbf_names:
            if not np.allclose(s.take(f"{rep}distance_expansion.{n}"), initial[n], rtol=1e-6):
                raise UnsupportedCheckpoint(
                    f"trainable_rbf=False but distance_expansion.{n} is not its initial value"
                )
    if config["neighbor_embedding"]:
        ne = rep + "neighbor_embedding."
        enc["neighbor_embedding"] = {
            "embedding": {"embedding": s.take(ne + "embedding.weight")},
            "distance_proj": s.linear(ne + "distance_proj"),
            "combine": s.linear(ne + "combine"),
        }
    for i in range(config["num_layers"]):
        a = f"{rep}attention_layers.{i}."
        layer = {"layernorm": s.norm(a + "layernorm")}
        for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj")):
            layer[ours] = s.linear(a + theirs)
        layer["vec_proj"] = s.linear(a + "vec_proj", bias=False)
        if config["distance_influence"] in ("keys", "both"):
            layer["dk"] = s.linear(a + "dk_proj")
        if config["distance_influence"] in ("values", "both"):
            layer["dv"] = s.linear(a + "dv_proj")
        enc[f"layer_{i}"] = layer
        if config["layer_norms"]:
            enc[f"x_norm_{i}"] = s.norm(f"{rep}x_norms.{i}")
            enc[f"vec_norm_{i}"] = {"weight": s.take(f"{rep}vec_norms.{i}.weight")}
    enc["out_norm"] = s.norm(rep + "out_norm")
    if config["layernorm_on_vec"] == "whitened":
        enc["out_norm_vec"] = {"weight": s.take(rep + "out_norm_vec.weight")}
    return enc


def _gated_output(s: _State, prefix: str) -> dict:
    """EquivariantScalar / VectorOutput's two gated blocks -> `_GatedOutput_0` params."""
    blocks = {}
    for b in (0, 1):
        p = f"{prefix}.output_network.{b}."
        mlp = s.first(p + "update_net.layers.", p + "update_net.", then="0")
        blocks[f"GatedEquivariantBlock_{b}"] = {
            "vec1": s.linear(p + "vec1_proj", bias=False),
            "vec2": s.linear(p + "vec2_proj", bias=False),
            "update0": s.linear(mlp + "0"),
            "update1": s.linear(mlp + "2"),
        }
    return {"_GatedOutput_0": blocks}


def _mlp(s: _State, prefix: str) -> dict:
    """Scalar / ElectronicSpatialExtent's MLP -> `MLP_0` params."""
    p = s.first(f"{prefix}.output_network.layers.", f"{prefix}.output_network.", then="0")
    return {"MLP_0": {"Dense_0": s.linear(p + "0"), "Dense_1": s.linear(p + "2")}}


def convert(hparams: dict, state: dict[str, np.ndarray]):
    """(model config, head kind, reduce_op, params, standardization) of a checkpoint.

    `params` is our PropertyModel's tree for one target ("encoder", "head_0_<kind>" and
    "noise_head" when the fork's `output_model_noise` is there); `standardization` holds
    `mean` [1], `std` [1] and `atomref` [max_z, 1] (zeros without an Atomref prior).
    Raises UnsupportedCheckpoint on options, priors or weights we cannot reproduce.
    """
    config = model_config(hparams, state)
    kind, reduce_op = head_config(hparams, state)
    s = _State(state)
    params = {"encoder": _encoder(s, config)}
    head = _mlp if kind == "spatial_extent" else _gated_output
    params[f"head_0_{kind}"] = head(s, "output_model")
    if "output_model_noise.output_network.0.vec1_proj.weight" in state:
        params["noise_head"] = _gated_output(s, "output_model_noise")
    mean = s.take("mean").reshape(-1)[:1] if "mean" in s else np.zeros(1, np.float32)
    std = s.take("std").reshape(-1)[:1] if "std" in s else np.ones(1, np.float32)
    atomref = np.zeros((config["max_z"], 1))
    for name in prior_names(hparams):
        if name != "Atomref":
            raise UnsupportedCheckpoint(f"prior_model {name!r} is not supported (only Atomref)")
        key = s.first("prior_model.0.", "prior_model.", then="atomref") + "atomref.weight"
        values = s.take(key).astype(np.float64)
        if _atomref_enabled(hparams):
            atomref[: len(values)] = values[: config["max_z"]]
    if kind == "dipole" and np.any(mean):
        raise UnsupportedCheckpoint(
            "standardize with a DipoleMoment head (a nonzero mean added to each dipole "
            "component before the norm) is not supported"
        )
    if reduce_op != "sum" and np.any(atomref):
        raise UnsupportedCheckpoint("an Atomref prior with reduce_op=mean")
    if hparams.get("derivative") and kind != "scalar":
        raise UnsupportedCheckpoint(f"derivative=True with output_model {hparams['output_model']}")
    unused = sorted(k for k in state if k not in s.used and not IGNORED.match(k))
    if unused:
        raise UnsupportedCheckpoint(f"weights this model has no place for: {unused[:8]}")
    standardization = {"mean": mean.astype(np.float64), "std": std.astype(np.float64)}
    return config, kind, reduce_op, params, {**standardization, "atomref": atomref}


def _atomref_enabled(hparams: dict) -> bool:
    """False when the checkpoint's Atomref prior was added with `enable: False`."""
    args = hparams.get("prior_args")
    for entry in args if isinstance(args, list) else [args]:
        if isinstance(entry, dict) and entry.get("enable") is False:
            return False
    return True
