"""TrainState: everything a step reads and writes, as one pytree (checkpointed whole)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
    """step [] int, params, opt_state, key (raw uint32[2], folded with the step for
    randomness), batch_stats (BatchNorm running statistics; {} when none)."""

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array
    batch_stats: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params, tx, key, batch_stats=None) -> TrainState:
        return cls(
            step=jax.numpy.zeros((), "int32"),
            params=params,
            opt_state=tx.init(params),
            key=key,
            batch_stats={} if batch_stats is None else batch_stats,
            tx=tx,
        )

    def apply_gradients(self, grads, loss=None, batch_stats=None) -> TrainState:
        """One update; `loss` [] reaches transforms that watch it (reduce-on-plateau).
        `batch_stats`, the step's new BatchNorm statistics, are kept only if `loss` is
        finite: the optimizer skips a non-finite step (apply_if_finite), so does this."""
        extra = {} if loss is None else {"value": loss}
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params, **extra)
        if batch_stats is None:
            batch_stats = self.batch_stats
        elif loss is not None:
            finite = jax.numpy.isfinite(loss)
            batch_stats = jax.tree.map(
                lambda new, old: jax.numpy.where(finite, new, old), batch_stats, self.batch_stats
            )
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            opt_state=opt_state,
            batch_stats=batch_stats,
        )


def init_variables(model, batch, key, *, specformer=None, specformer_key=None):
    """(params, batch_stats) from one shard of `batch`, initialised inside jit (3x faster
    than eager): `model`'s parameters, plus SpecFormer's under "specformer" when given
    (its BatchNorm statistics are `batch_stats`; {} otherwise)."""
    graph = jax.tree.map(lambda x: x[0], batch.graph)
    spectra = jax.tree.map(lambda x: x[0], batch.spectra)

    @jax.jit
    def init(graph, spectra):
        params = dict(model.init(key, graph)["params"])
        if specformer is None:
            return params, {}
        variables = specformer.init(specformer_key, spectra, train=False)
        params["specformer"] = variables["params"]
        return params, variables.get("batch_stats", {})

    return init(graph, spectra)
