"""Reference outputs of real torchmd-net models, for the parity tests.

  python -m tests.interop.torchmdnet_reference     # rewrites tests/interop/fixtures/*.npz

Needs the `torchmdnet` extra (torch + torchmd-net 3.1 from PyPI). For each case it
builds torchmd-net's own model (`create_model`), loads seeded weights into it, runs it
on real molecules (3 QM9 molecules and an MD17 ethanol frame) and stores the inputs,
the weights' recipe and the outputs: per-atom scalars and vectors, the molecule
prediction and the forces -dy/dR. The MolSpectra fork's ET is upstream's plus three
norms (verified equal otherwise); `ForkET` adds them to torchmd-net's ET with the fork's
own forward and EquivariantLayerNorm (MIT, github AzureLeon1/MolSpectra,
torchmdnet/models/torchmd_et.py), so the fork cases run that code for real too.

Weights: arrays of at most 4,096 values are stored verbatim; larger ones are
N(0, 1/fan_in) from `numpy.random.default_rng([seed, index])`, so a paper-size model
costs the fixture only its outputs.
"""

from __future__ import annotations

import os

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
STORED_MAX = 4096
QM9_IDS = (1000, 20000, 77000)  # qm9pack Index values: real molecules of 3 sizes

BASE = dict(
    model="equivariant-transformer",
    embedding_dimension=32,
    num_layers=2,
    num_rbf=16,
    rbf_type="expnorm",
    trainable_rbf=False,
    activation="silu",
    attn_activation="silu",
    neighbor_embedding=True,
    num_heads=4,
    distance_influence="both",
    cutoff_lower=0.0,
    cutoff_upper=5.0,
    max_z=100,
    max_num_neighbors=32,
    output_model="Scalar",
    reduce_op="sum",
    prior_model=None,
    derivative=False,
    atom_filter=-1,
    precision=32,
)
CASES = {
    "small": dict(embedding_dimension=64, num_layers=3, num_rbf=32),
    "options": dict(
        rbf_type="gauss",
        trainable_rbf=True,
        activation="ssp",
        attn_activation="tanh",
        distance_influence="keys",
        neighbor_embedding=False,
        cutoff_lower=0.5,
        cutoff_upper=4.0,
    ),
    "values_mean": dict(distance_influence="values", reduce_op="mean", vector_cutoff=True),
    "dipole": dict(output_model="DipoleMoment"),
    "spatial_extent": dict(output_model="ElectronicSpatialExtent", trainable_rbf=True),
    "energy_forces_atomref": dict(
        derivative=True, prior_model="Atomref", prior_args={"max_z": 100}
    ),
    "paper": dict(embedding_dimension=256, num_layers=8, num_heads=8, num_rbf=64),
    "fork_qm9": dict(fork_layer_norms=True, layernorm_on_vec="whitened"),
    "fork_md17": dict(layernorm_on_vec="whitened", derivative=True),
}


def hparams(case: str) -> dict:
    return {**BASE, **CASES[case]}


def molecules():
    """(z [N], pos [N, 3] float32, batch [N]) of the 3 QM9 molecules and one ethanol frame."""
    from molspectra_jax.data import md17
    from molspectra_jax.data.qm9 import load_qm9

    qm9 = load_qm9(verbose=False)
    row = {int(i): r for r, i in enumerate(qm9.ids)}
    mols = [qm9.molecule(row[i]) for i in QM9_IDS]
    ethanol = md17.load_md17(md17.shipped_md17_path())
    mols.append(ethanol.molecule(7))
    z = np.concatenate([m[0] for m in mols]).astype(np.int64)
    pos = np.concatenate([m[1] for m in mols]).astype(np.float32)
    batch = np.repeat(np.arange(len(mols)), [len(m[0]) for m in mols])
    return z, pos, batch


def weights(shapes: dict[str, tuple], stored: dict[str, np.ndarray], seed: int) -> dict:
    """The state dict: `stored` arrays as they are, the others seeded N(0, 1/fan_in)."""
    out = {}
    for index, key in enumerate(sorted(shapes)):
        if key in stored:
            out[key] = np.asarray(stored[key], np.float32)
        else:
            shape = shapes[key]
            rng = np.random.default_rng([seed, index])
            out[key] = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return out


def _small_weights(state: dict, rng: np.random.Generator, trainable_rbf: bool, dipole: bool):
    """Random values for every small tensor (norms near 1, biases, embeddings, trained RBF
    parameters near their initial values, the mean/std buffers, atomrefs)."""
    stored = {}
    for key, value in state.items():
        value = value.detach().numpy()
        if value.size > STORED_MAX:
            continue
        rbf = key.endswith(("means", "betas", "offset", "coeff"))
        if key.endswith(("distance.box", "atomic_mass")) or (rbf and not trainable_rbf):
            new = value
        elif rbf:
            new = value * (1 + 0.02 * rng.standard_normal(value.shape))
        elif key == "mean":  # (a dipole's would be added to each component before the norm)
            new = np.full(value.shape, 0.0 if dipole else 1.5)
        elif key == "std":
            new = np.full(value.shape, 2.5)
        elif "atomref" in key:
            new = rng.standard_normal(value.shape)
        elif value.ndim == 1 and key.endswith("weight"):  # norms
            new = 1 + 0.2 * rng.standard_normal(value.shape)
        elif key.endswith("bias"):
            new = 0.2 * rng.standard_normal(value.shape)
        else:
            new = rng.standard_normal(value.shape) / np.sqrt(value.shape[-1])
        stored[key] = np.asarray(new, np.float32)
    if "prior_model.0.atomref.weight" in stored:
        stored["prior_model.0.initial_atomref"] = stored["prior_model.0.atomref.weight"]
    return stored


def build_model(case: str):
    """torchmd-net's model for `case` (the fork's norms added for fork cases)."""
    import torch
    from torchmdnet.models.model import create_model

    args = hparams(case)
    fork_layer_norms = args.pop("fork_layer_norms", False)
    layernorm_on_vec = args.pop("layernorm_on_vec", None)
    torch.manual_seed(0)
    model = create_model(dict(args), mean=torch.tensor([0.0]), std=torch.tensor([1.0]))
    if fork_layer_norms or layernorm_on_vec:
        model.representation_model = fork_et(
            model.representation_model, fork_layer_norms, layernorm_on_vec == "whitened"
        )
    return model


def fork_et(et, layer_norms: bool, whitened: bool):
    """torchmd-net's TorchMD_ET with the fork's per-layer norms and output vector norm."""
    import torch
    from torch import nn

    class EquivariantLayerNorm(nn.Module):
        """The fork's EquivariantLayerNorm ("whitened"), as written there."""

        def __init__(self, normalized_shape, eps=1e-5):
            super().__init__()
            self.normalized_shape = (normalized_shape,)
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(normalized_shape))

        def mean_center(self, input):
            return input - input.mean(-1, keepdim=True)

        def covariance(self, input):
            return 1 / self.normalized_shape[0] * input @ input.transpose(-1, -2)

        def symsqrtinv(self, matrix):
            _, s, v = matrix.svd()
            good = s > s.max(-1, True).values * s.size(-1) * torch.finfo(s.dtype).eps
            components = good.sum(-1)
            common = components.max()
            unbalanced = common != components.min()
            if common < s.size(-1):
                s = s[..., :common]
                v = v[..., :common]
                if unbalanced:
                    good = good[..., :common]
            if unbalanced:
                s = s.where(good, torch.zeros((), device=s.device, dtype=s.dtype))
            return (v * 1 / torch.sqrt(s + self.eps).unsqueeze(-2)) @ v.transpose(-2, -1)

        def forward(self, input):
            input = input.to(torch.float64)
            input = self.mean_center(input)
            reg_matrix = torch.diag(torch.tensor([1.0, 2.0, 3.0])).unsqueeze(0).type(input.dtype)
            covar = self.covariance(input) + self.eps * reg_matrix
            covar_sqrtinv = self.symsqrtinv(covar)
            return (covar_sqrtinv @ input).to(self.weight.dtype) * self.weight.reshape(
                1, 1, self.normalized_shape[0]
            )

    class ForkET(nn.Module):
        def __init__(self):
            super().__init__()
            for name, module in et.named_children():
                setattr(self, name, module)
            self.neighbor_embedding = et.neighbor_embedding
            f = et.hidden_channels
            self.use_dataset_md17 = not layer_norms
            if layer_norms:
                self.x_norms = nn.ModuleList([nn.LayerNorm(f) for _ in et.attention_layers])
                self.vec_norms = nn.ModuleList(
                    [EquivariantLayerNorm(f) for _ in et.attention_layers]
                )
            self.layernorm_on_vec = whitened
            if whitened:
                self.out_norm_vec = EquivariantLayerNorm(f)

        def forward(self, z, pos, batch, box=None, q=None, s=None):
            # The fork's TorchMD_ET.forward (its graph is upstream's; see the docstring).
            x = self.embedding(z)
            edge_index, edge_weight, edge_vec = self.distance(pos, batch, box)
            edge_attr = self.distance_expansion(edge_weight)
            mask = edge_index[0] != edge_index[1]
            edge_vec[mask] = edge_vec[mask] / torch.norm(edge_vec[mask], dim=1).unsqueeze(1)
            if self.neighbor_embedding is not None:
                x = self.neighbor_embedding(z, x, edge_index, edge_weight, edge_attr)
            vec = torch.zeros(x.size(0), 3, x.size(1), device=x.device)
            for layer_idx, attn in enumerate(self.attention_layers):
                dx, dvec = attn(x, vec, edge_index, edge_weight, edge_attr, edge_vec)
                x = x + dx
                vec = vec + dvec
                if not self.use_dataset_md17:
                    x = self.x_norms[layer_idx](x)
                    vec = self.vec_norms[layer_idx](vec)
            xnew = self.out_norm(x)
            if self.layernorm_on_vec:
                vec = self.out_norm_vec(vec)
            return xnew, vec, z, pos, batch

    return ForkET()


def reference(case: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Run torchmd-net for `case`: the fixture's arrays (inputs, stored weights, outputs)."""
    import torch

    model = build_model(case)
    state = model.state_dict()
    args = hparams(case)
    rng = np.random.default_rng(seed)
    stored = _small_weights(state, rng, args["trainable_rbf"], "Dipole" in args["output_model"])
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    full = weights(shapes, stored, seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in full.items()})
    model.eval()
    z, pos, batch = molecules()
    pos_t = torch.from_numpy(pos).requires_grad_(True)
    z_t, batch_t = torch.from_numpy(z), torch.from_numpy(batch)
    x, vec, *_ = model.representation_model(z_t, pos_t, batch_t)
    model.derivative = False
    y, _ = model(z_t, pos_t, batch_t)
    (grad,) = torch.autograd.grad(y.sum(), pos_t)
    return {
        "z": z,
        "pos": pos,
        "batch": batch,
        "seed": np.int64(seed),
        "shape_keys": np.array(sorted(shapes)),
        "shape_values": np.array([",".join(map(str, shapes[k])) for k in sorted(shapes)]),
        **{f"stored/{k}": v for k, v in stored.items()},
        "x": x.detach().numpy(),
        "vec": vec.detach().numpy(),
        "y": y.detach().numpy(),
        "forces": -grad.numpy(),
    }


def state_dict_of(fixture) -> dict[str, np.ndarray]:
    """The full state dict a fixture's weights recipe describes (no torch needed)."""
    shapes = {
        k: tuple(int(n) for n in v.split(",") if n)
        for k, v in zip(fixture["shape_keys"], fixture["shape_values"], strict=True)
    }
    stored = {k[len("stored/") :]: fixture[k] for k in fixture if k.startswith("stored/")}
    return weights(shapes, stored, int(fixture["seed"]))


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    for case in CASES:
        arrays = reference(case)
        np.savez_compressed(os.path.join(FIXTURES, f"torchmdnet_{case}.npz"), **arrays)
        print(f"{case}: y {arrays['y'].ravel()}")


if __name__ == "__main__":
    main()
