"""Models by name: `build_encoder(config)` is the one place an encoder is chosen."""

from molspectra_jax.models.encoder import EquivariantTransformer

ENCODERS = {"et": EquivariantTransformer}


def build_encoder(config) -> EquivariantTransformer:
    """Encoder from a `config.model`-like ConfigDict with `name` and the encoder's fields."""
    if config.name not in ENCODERS:
        raise ValueError(f"unknown encoder {config.name!r}; choose from {sorted(ENCODERS)}")
    cls = ENCODERS[config.name]
    fields = {k: v for k, v in config.items() if k != "name"}
    unknown = set(fields) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"config.model has fields {sorted(unknown)} that {cls.__name__} lacks")
    return cls(**fields)
