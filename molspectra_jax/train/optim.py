"""Optimizer: AdamW with a linear warmup, then one of the official recipes' schedules
(`optim.schedule`), all through optax:

- "cosine": cosine decay to `lr * final_lr_factor` (MolSpectra/Coord pre-training);
- "cosine_restarts": cosine with warm restarts, periods `restart_period` x
  `restart_mult`^i steps (the official QM9 fine-tuning's CosineAnnealingWarmRestarts);
- "plateau": constant, scaled by `plateau_factor` whenever the training loss, averaged
  over `plateau_window` steps, has not improved for `plateau_patience` windows, down to
  `min_lr` (`optax.contrib.reduce_on_plateau`; the official MD17 recipe watches the
  validation loss per epoch instead).

`optim.ema_decay` > 0 adds an exponential moving average of the weights to the
optimizer state (`weight_ema`); evaluation, `best` checkpoints and prediction use it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import contrib

SCHEDULES = ("cosine", "cosine_restarts", "plateau")


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    """The base learning rate of each step (before any plateau scaling)."""
    lr, kind = config.learning_rate, config.get("schedule", "cosine")
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    end = lr * config.final_lr_factor
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=end,
        )
    ramp = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if kind == "plateau":
        return optax.join_schedules([ramp, optax.constant_schedule(lr)], [warmup])
    if kind == "cosine_restarts":
        if config.restart_period < 1 or config.restart_mult < 1:
            raise ValueError(
                f"optim.restart_period {config.restart_period} and restart_mult "
                f"{config.restart_mult} must be >= 1"
            )
        periods, covered = [], warmup
        while covered < total_steps:
            periods.append(config.restart_period * config.restart_mult ** len(periods))
            covered += periods[-1]
        cycles = optax.sgdr_schedule(
            [dict(init_value=lr, peak_value=lr, warmup_steps=0, decay_steps=p, end_value=end)
             for p in periods]
        )  # fmt: skip
        return optax.join_schedules([ramp, cycles], [warmup])
    raise ValueError(f"unknown optim.schedule {kind!r}; choose from {SCHEDULES}")


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
    if config.get("schedule", "cosine") == "plateau":
        chain.append(
            contrib.reduce_on_plateau(
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                accumulation_size=config.plateau_window,
                min_scale=config.min_lr / config.learning_rate,
            )
        )
    if config.get("ema_decay", 0.0) > 0:
        chain.append(weight_ema(config.ema_decay))  # last: it sees the final update
    return optax.apply_if_finite(optax.chain(*chain), max_consecutive_errors=_NEVER)


class WeightEmaState(NamedTuple):
    ema: Any  # a params pytree


def weight_ema(decay: float) -> optax.GradientTransformation:
    """Tracks ema <- decay * ema + (1 - decay) * (params + update), starting at the
    initial params; passes the updates through unchanged."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"optim.ema_decay {decay} must be in (0, 1)")

    def init(params):
        return WeightEmaState(jax.tree.map(jnp.asarray, params))

    def update(updates, state, params=None):
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, new)
        return updates, WeightEmaState(ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state):
    """The weight EMA of a `make_optimizer(config with ema_decay > 0)` state."""
    ema = opt_state.inner_state[-1]
    if not isinstance(ema, WeightEmaState):
        raise ValueError("this optimizer keeps no weight EMA (optim.ema_decay is 0)")
    return ema.ema


def current_learning_rate(config, total_steps: int, opt_state, step) -> jax.Array:
    """[] the learning rate `step` trains with: the schedule's, times the plateau scale.
    (`value=loss` reaches the plateau transform through `TrainState.apply_gradients`.)"""
    lr = learning_rate_schedule(config, total_steps)(step)
    plateau = [s for s in opt_state.inner_state if isinstance(s, contrib.ReduceLROnPlateauState)]
    return lr * plateau[0].scale if plateau else lr


def bad_steps(opt_state) -> jax.Array:
    """[] int: consecutive steps whose non-finite gradients were skipped, up to now."""
    return opt_state.notfinite_count


def reset_bad_steps(opt_state):
    """`opt_state` with a fresh count of consecutive non-finite steps (on resume)."""
    return opt_state._replace(notfinite_count=jnp.zeros_like(opt_state.notfinite_count))


def global_norm(grads) -> jax.Array:
    """sqrt of the sum of squares of every gradient entry (the `grad_norm` metric)."""
    return jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
