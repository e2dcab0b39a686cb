"""Fine-tune energies and forces on an MD17 molecule (TorchMD-Net / MolSpectra setting).

  python -m experiments.finetune --config configs/finetune_md17.py \
      --config.data.source=md17:md17_aspirin.npz --workdir workdirs/md17_aspirin
  python -m experiments.finetune --config configs/finetune_md17.py:cpu --workdir workdirs/md17

Forces are -dE/dR of the predicted energy; the loss is 0.2 * MSE(E) + 0.8 * MSE(F) on
standardized units (official ET-MD17-FT.yaml: 950 train / 50 valid frames, batch 8,
ET 128 x 6 layers, no vector norm). Differences from it: cosine schedule instead of
reduce-on-plateau, no energy EMA, and no noisy nodes (noise would move the atoms the
reference forces belong to).
"""

from molspectra_jax.configs import finetune_qm9


def get_config(arg: str | None = None):
    c = finetune_qm9.get_config()
    c.target = "energy"
    c.data.source = "md17"  # the shipped ethanol sample; "md17:<file.npz>" for the release
    c.data.n_train, c.data.n_valid, c.data.n_test = 950, 50, -1
    c.data.batch_size, c.data.eval_batch_size = 8, 64
    c.data.elements = (1, 6, 7, 8)  # the MD17 molecules' H C N O
    c.model.update(hidden=128, num_layers=6, num_heads=8, num_rbf=32, layer_norms=False)
    c.heads.atomref = ()  # one composition: the mean does what atomrefs would
    c.loss.energy_weight = 0.2
    c.loss.force_weight = 0.8
    c.optim.update(learning_rate=5e-4, warmup_steps=1_000)
    c.train.update(num_steps=140_000, log_every=100, eval_every=2_000, checkpoint_every=2_000)
    if arg == "cpu":
        # Minutes on 2 CPU cores, on the shipped 2,000 ethanol frames.
        c.model.update(hidden=64, num_layers=3, num_heads=4)
        c.data.n_test = 1_000
        c.optim.warmup_steps = 100
        c.train.update(num_steps=2_000, eval_every=500, checkpoint_every=500)
    elif arg is not None:
        raise ValueError(f"unknown config variant {arg!r}; use 'cpu' or none")
    return c
