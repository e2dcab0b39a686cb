"""Tiny pre-training config for end-to-end tests: seconds on a CPU, real spectra."""

from molspectra_jax.configs import pretrain_qm9s, test


def get_config(arg: str | None = None):
    c = pretrain_qm9s.get_config()
    c.model = test.get_config().model
    # Big enough to learn denoising within tens of steps (the e2e test checks each loss falls).
    c.model.update(hidden=32, num_layers=2, num_heads=4, num_rbf=16)
    c.specformer.update(embed_dim=c.model.hidden, d_model=16, num_heads=2, d_ff=32, num_layers=1)
    c.data.update(n_train=64, n_valid=16, batch_size=16, eval_batch_size=16)
    c.optim.update(learning_rate=1e-3, warmup_steps=2)
    c.train.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3, progress_bar=False)
    return c
