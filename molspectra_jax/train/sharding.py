"""Data parallelism: one 'data' mesh axis over every device of every host.

Batches carry a leading shard axis S; each host builds the shards of its own devices
(S_local = local device count) and `jax.make_array_from_process_local_data` assembles
the global array, so the same code runs on one CPU, one GPU, or a TPU pod. State is
replicated. Cross-shard reductions (loss means, BatchNorm statistics, InfoNCE
negatives) are ordinary jnp reductions over the global arrays: XLA inserts the
collectives.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def initialize_distributed(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """`jax.distributed.initialize` for multi-host runs; a no-op for a single process.

    On Cloud TPU pods and SLURM/Open MPI clusters jax finds the coordinator itself:
    pass coordinator_address="auto".
    """
    if coordinator_address is None:
        return
    if coordinator_address == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh() -> Mesh:
    """1-D mesh over all global devices, axis name 'data'."""
    return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (shard) axis split over 'data'; other axes whole."""
    return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(local_batch, mesh: Mesh):
    """Host-local batch pytree (leading axis = this host's shards) -> global jax arrays."""
    sharding = data_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def local_shard_count(mesh: Mesh) -> int:
    """How many shards this host must build per batch (its devices in the mesh)."""
    return len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
