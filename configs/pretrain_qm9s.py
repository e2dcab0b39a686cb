"""MolSpectra pre-training, stages 1 and 2, with the official scripts' settings.

  # stage 1: denoising on geometries (paper: PCQM4Mv2, 400k steps, batch 70)
  python -m experiments.pretrain --config configs/pretrain_qm9s.py --config.stage=1 \
      --workdir workdirs/stage1
  # stage 2: denoising + MPR + contrast on spectra, from stage 1 (paper: QM9S, batch 128)
  python -m experiments.pretrain --config configs/pretrain_qm9s.py \
      --config.init_from=workdirs/stage1 --workdir workdirs/stage2
  # laptop-sized: add ':cpu' to the config path
"""

import ml_collections

from molspectra_jax.configs import finetune_qm9


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    # Fine-tuning's sections, so the encoder matches (the hand-off needs it) and the
    # optimizer and loop settings are written once.
    base = finetune_qm9.get_config(arg)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stage = 2  # 1 = denoising only (geometries), 2 = + MPR + contrast (spectra)
    c.init_from = ""  # stage-1 workdir that initialises stage 2

    c.data = base.data
    del c.data["n_test"]  # pre-training validates on `n_valid` molecules and tests nothing
    del c.data["with_spectra"]  # stage 2 always reads `data.spectra`
    # Stage-1 geometries: "qm9"; "molstore:<folder>", a store written once by
    # experiments.convert_molecules (PCQM4Mv2's 3.4M molecules: RDKit adds the Hs); or a
    # small "sdf:<path>" read whole at every start.
    c.data.source = "qm9"
    # Stage-2 spectra: "embedded" (shipped with the package), a generate_spectra output
    # folder ("store:<folder>"), or "qm9s:<folder>" (the QM9S release, converted).
    c.data.spectra = "embedded"
    c.data.geometry = "qm9"  # stage-2 geometries: "qm9" (B3LYP, by id) or "spectra" (GFN2)
    c.data.n_train = -1  # -1 = all but the validation molecules
    c.data.n_valid = 1_000
    c.data.batch_size = 128  # stage 2 (QM9S); the paper's stage 1 uses 70
    c.data.eval_batch_size = 128
    c.data.elements = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)  # + PCQM4Mv2's B Si P S Cl Br I

    c.model = base.model
    c.specformer = base.specformer  # SpecFormer, its embedding as wide as the encoder

    c.loss = ml_collections.ConfigDict()
    c.loss.noise_sigma = 0.04  # Å (Coord / MolSpectra)
    c.loss.b_denoise = 1.0
    c.loss.b_mpr = 1.0
    c.loss.b_contrast = 1.0
    c.loss.temperature = 0.07
    c.loss.symmetric = False  # published: molecule -> spectrum only

    c.optim = base.optim  # the same AdamW 4e-4, 10k warmup, cosine (official scripts)
    c.train = base.train
    c.train.update(num_steps=400_000, eval_every=10_000)  # paper: 400k steps
    c.distributed = base.distributed
    if arg == "cpu":
        c.data.batch_size, c.data.eval_batch_size, c.data.n_valid = 32, 64, 100
        c.optim.warmup_steps = 100
        c.train.update(num_steps=1_000, eval_every=250, checkpoint_every=250)
    return c
