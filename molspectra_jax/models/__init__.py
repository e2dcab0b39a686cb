"""Models by name: `build_encoder(config)` is the one place an encoder is chosen.

The encoder contract (what every entry of `ENCODERS` keeps):

- a Flax linen module whose dataclass fields are exactly the `config.model` fields
  besides `name` (`build_encoder` passes them by name and rejects unknown ones); it
  needs at least `hidden` (F, the feature width the heads and the contrastive
  embedding see) and `cutoff` (Å: the data pipeline builds candidate edges within
  `cutoff + data.skin`);
- `__call__(graph: molspectra_jax.graph.Graph)` on one shard (no leading shard axis)
  returns `(scalars [N, F], vectors [N, 3, F])`: rotation-invariant per-atom scalars and
  rotation-equivariant (1o) per-atom vectors, zeros on padding atoms, unchanged by
  padding, translation and atom order (tests/models/test_encoder.py sweeps `ENCODERS`);
- its parameters live under the module name "encoder" (the hand-off loads by name);
- `dtype` ("float32" | "bfloat16"): the compute dtype of its dense layers (matmuls);
  parameters, geometry, norms and sums stay float32;
- `layout` ("sparse" | "dense"): how it reads the graph's pairs: the candidate edges, or
  every pair of a molecule's atom block (`Budget.slots`; the data pipeline packs for it).

A new encoder (NequIP-, MACE-style, ...) is one new file in this folder plus one line in
`ENCODERS`.
"""

from molspectra_jax.models.encoder import EquivariantTransformer

ENCODERS = {"et": EquivariantTransformer}
# Fields that change how an encoder computes, not its parameters: a checkpoint moves
# freely between their values (pre-train in bfloat16, fine-tune or predict in float32).
COMPUTE_FIELDS = ("dtype", "layout")


def build_encoder(config):
    """Encoder from a `config.model`-like ConfigDict with `name` and the encoder's fields."""
    if config.name not in ENCODERS:
        raise ValueError(f"unknown encoder {config.name!r}; choose from {sorted(ENCODERS)}")
    cls = ENCODERS[config.name]
    fields = {k: v for k, v in config.items() if k != "name"}
    unknown = set(fields) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"config.model has fields {sorted(unknown)} that {cls.__name__} lacks")
    return cls(**fields)
