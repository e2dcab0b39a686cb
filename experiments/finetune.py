"""Fine-tune on QM9 properties or MD17 energies and forces.

  python -m experiments.finetune --config configs/finetune_qm9.py --config.target=gap \
      --workdir workdirs/gap
"""

from experiments import launch
from molspectra_jax.train import finetune

if __name__ == "__main__":
    launch.run(finetune.train_and_evaluate)
