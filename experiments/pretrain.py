"""Pre-train the encoder (stage 1: denoising; stage 2: + spectra).

python -m experiments.pretrain --config configs/pretrain_qm9s.py --workdir workdirs/pt
"""

from molspectra_jax.train import pretrain

from . import launch


def cli():
    """The console script `molspectra-pretrain`."""
    launch.run(pretrain.train_and_evaluate)


if __name__ == "__main__":
    cli()
