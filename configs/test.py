"""Tiny fine-tuning config for end-to-end tests: seconds on a CPU."""

from molspectra_jax.configs import finetune_qm9


def get_config(arg: str | None = None):
    c = finetune_qm9.get_config()
    c.target = "gap,u0"
    c.data.n_train, c.data.n_valid, c.data.n_test = 64, 32, 32
    c.data.batch_size, c.data.eval_batch_size = 16, 32
    c.model.update(hidden=16, num_layers=1, num_heads=2, num_rbf=8)
    c.specformer.update(d_model=16, num_heads=2, d_ff=32, num_layers=1)  # spectra_aux runs
    c.optim.update(learning_rate=1e-3, warmup_steps=2)
    c.train.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3, progress_bar=False)
    return c
