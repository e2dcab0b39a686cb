"""The README's main job: pre-train then fine-tune, a few minutes on a laptop CPU.

python -m experiments.demo
get_config()           -> the fine-tuning half (all 12 QM9 targets, MAE table)
get_config("pretrain") -> the pre-training half (denoising + MPR + contrast on the
                          spectra shipped with the package)
"""

from molspectra_jax.configs import finetune_qm9, pretrain_qm9s


def _model(c):
    c.model.update(hidden=64, num_layers=2, num_heads=4, num_rbf=32)
    return c


def get_config(arg: str | None = None):
    if arg == "pretrain":
        c = _model(pretrain_qm9s.get_config())
        c.specformer.update(embed_dim=64, d_model=32, num_heads=4, d_ff=64, num_layers=2)
        c.data.update(batch_size=32, eval_batch_size=64, n_valid=100)
        c.optim.update(learning_rate=1e-3, warmup_steps=50, clip_norm=10.0)
        c.train.update(num_steps=300, log_every=50, eval_every=150, checkpoint_every=150)
        return c
    if arg is not None:
        raise ValueError(f"unknown demo variant {arg!r}; choose 'pretrain' or nothing")
    c = _model(finetune_qm9.get_config())
    c.target = "all"  # every QM9 target, one head each, one shared encoder
    c.data.n_train, c.data.n_valid, c.data.n_test = 2_000, 200, 1_000
    c.data.batch_size, c.data.eval_batch_size = 32, 128
    c.loss.noise_weight = 0.1  # noisy nodes, as the official fine-tuning after pre-training
    c.optim.update(learning_rate=1e-3, warmup_steps=50, clip_norm=10.0)
    c.train.update(num_steps=600, log_every=50, eval_every=200, checkpoint_every=200)
    return c
