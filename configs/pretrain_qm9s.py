"""MolSpectra pre-training (DESIGN.md "Faithfulness").

  # stage 1: denoising on geometries (paper: PCQM4Mv2, 400k steps, batch 70)
  python -m experiments.pretrain --config configs/pretrain_qm9s.py --config.stage=1 \
      --workdir workdirs/stage1
  # stage 2: denoising + MPR + contrast on spectra, from stage 1 (paper: QM9S, batch 128)
  python -m experiments.pretrain --config configs/pretrain_qm9s.py \
      --config.init_from=workdirs/stage1 --workdir workdirs/stage2
  # laptop-sized: add ':cpu' to the config path
"""

import ml_collections

from configs import finetune_qm9
from molspectra_jax.models.specformer import specformer_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    base = finetune_qm9.get_config(arg)  # same encoder as fine-tuning: the hand-off needs it
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stage = 2  # 1 = denoising only (geometries), 2 = + MPR + contrast (spectra)
    c.init_from = ""  # stage-1 workdir that initialises stage 2

    c.data = ml_collections.ConfigDict()
    c.data.source = "qm9"  # stage-1 geometries: "qm9" or "sdf:<path>" (e.g. PCQM4Mv2)
    # Stage-2 spectra: "embedded" (shipped with the package), a generate_spectra output
    # folder, or "qm9s:<folder>" (the QM9S release converted by molspectra_jax.data.qm9s).
    c.data.spectra = "embedded"
    c.data.geometry = "qm9"  # stage-2 geometries: "qm9" (B3LYP, by id) or "spectra" (GFN2)
    c.data.cache_dir = ""
    c.data.split_seed = 0
    c.data.shuffle_seed = 0
    c.data.n_train = -1  # -1 = all but the validation molecules
    c.data.n_valid = 1_000
    c.data.batch_size = 128  # stage 2 (QM9S); the paper's stage 1 uses 70
    c.data.eval_batch_size = 128
    c.data.n_shards = 0
    c.data.skin = 1.0  # > the largest pair displacement noise of 0.04 Å plausibly makes
    c.data.budget_slack = 1.15
    c.data.elements = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)

    c.model = base.model
    c.specformer = specformer_config()
    c.specformer.embed_dim = c.model.get_ref("hidden")

    c.loss = ml_collections.ConfigDict()
    c.loss.noise_sigma = 0.04  # Å (Coord / MolSpectra)
    c.loss.b_denoise = 1.0
    c.loss.b_mpr = 1.0
    c.loss.b_contrast = 1.0
    c.loss.temperature = 0.07
    c.loss.symmetric = False  # published: molecule -> spectrum only

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 4e-4
    c.optim.warmup_steps = 10_000
    c.optim.final_lr_factor = 0.0
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.0
    c.optim.max_bad_steps = 20

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 400_000
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5_000
    c.train.max_to_keep = 2
    c.train.progress_bar = True

    c.distributed = base.distributed
    if arg == "cpu":
        c.data.batch_size, c.data.eval_batch_size, c.data.n_valid = 32, 64, 100
        c.specformer.update(d_model=32, num_heads=4, d_ff=64, num_layers=2)
        c.optim.update(learning_rate=1e-3, warmup_steps=100, clip_norm=10.0)
        c.train.update(num_steps=1_000, log_every=50, eval_every=250, checkpoint_every=250)
    return c
