"""Optimizer: AdamW with linear warmup and cosine decay (the MolSpectra/Coord recipe)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `config.learning_rate`, then cosine to `lr * final_lr_factor`."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=config.learning_rate * config.final_lr_factor,
    )


# `apply_if_finite` lets updates through after this many consecutive non-finite steps;
# never, here: `loop.fit` stops the run after `optim.max_bad_steps` of them instead, so a
# diverging run never writes diverged parameters.
_NEVER = 2**30


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """AdamW (+ global-norm clipping if `config.clip_norm` > 0), skipping non-finite updates.

    `apply_if_finite` drops a step whose gradients contain NaN/Inf and leaves params and
    moments untouched, so one bad batch never poisons the state that gets checkpointed;
    `bad_steps(opt_state)` counts how many in a row were dropped.
    """
    chain = []
    if config.clip_norm > 0:
        chain.append(optax.clip_by_global_norm(config.clip_norm))
    chain.append(
        optax.adamw(learning_rate_schedule(config, total_steps), weight_decay=config.weight_decay)
    )
    return optax.apply_if_finite(optax.chain(*chain), max_consecutive_errors=_NEVER)


def bad_steps(opt_state) -> jax.Array:
    """[] int: consecutive steps whose non-finite gradients were skipped, up to now."""
    return opt_state.notfinite_count


def reset_bad_steps(opt_state):
    """`opt_state` with a fresh count of consecutive non-finite steps (on resume)."""
    return opt_state._replace(notfinite_count=jnp.zeros_like(opt_state.notfinite_count))


def global_norm(grads) -> jax.Array:
    """sqrt of the sum of squares of every gradient entry (the `grad_norm` metric)."""
    return jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
