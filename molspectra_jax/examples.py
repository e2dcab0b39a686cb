"""Example files the package ships (`assets/examples/`), to try a model after `pip install`:

  molspectra-predict --workdir W --out preds.csv \
      --input "$(python -c 'from molspectra_jax import examples; print(examples.path())')"
"""

import importlib.resources
import os

FOLDER = importlib.resources.files("molspectra_jax") / "assets" / "examples"


def path(name: str = "qm9_eight.xyz") -> str:
    """The installed path of example file `name`; a clear error naming the ones there are."""
    file = FOLDER / name
    if not file.is_file():
        there = sorted(p.name for p in FOLDER.iterdir() if p.name != "README.md")
        raise FileNotFoundError(f"no example {name!r}; the package ships {there}")
    return os.fspath(file)
