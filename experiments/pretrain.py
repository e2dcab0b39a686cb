"""Pre-train the encoder (stage 1: denoising; stage 2: + spectra).

python -m experiments.pretrain --config configs/pretrain_qm9s.py --workdir workdirs/pt
"""

from experiments import launch
from molspectra_jax.train import pretrain

if __name__ == "__main__":
    launch.run(pretrain.train_and_evaluate)
