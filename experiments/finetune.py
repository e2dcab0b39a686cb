"""Fine-tune on QM9 properties or MD17 energies and forces.

  python -m experiments.finetune --config configs/finetune_qm9.py --config.target=gap \
      --workdir workdirs/gap
"""

from molspectra_jax.train import finetune

from . import launch


def cli():
    """The console script `molspectra-finetune`."""
    launch.run(finetune.train_and_evaluate)


if __name__ == "__main__":
    cli()
