"""Batches collated in worker processes, in the iterator's order whatever their number.

The iterator *plans* each batch in this process (which molecules fill which shard: index
arithmetic, so its position stays exact and checkpointable); `workers` spawned processes
*collate* the plans (atom gathers and candidate pairs, the costly part), several batches
ahead. Results are taken in plan order, so the batches are those of the iterator itself
for any worker count, and `state()` is the position after the last batch returned.

A dataset memory-mapped from a molecule store travels as its folder and is mapped again
in each worker; an in-memory dataset is sent once per worker, when it starts.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing

from molspectra_jax.data.batching import BatchIterator, GraphBatch, collate
from molspectra_jax.data.molstore import ARRAYS, open_store

_WORKER: dict = {}  # in each worker: the dataset and edges it collates from


class ParallelBatches:
    """`next()` -> the iterator's next batch, collated by `workers` processes.

    Args:
      iterator: a `BatchIterator`, positioned where training resumes.
      workers: processes (>= 1).
      ahead: batches planned and in flight (default 2 per worker): host memory bound.
    """

    def __init__(self, iterator: BatchIterator, workers: int, ahead: int | None = None):
        if workers < 1:
            raise ValueError(f"workers={workers} must be >= 1 (0: collate in the loop's thread)")
        self._iterator = iterator
        self._ahead = ahead or 2 * workers
        self._position = iterator.state()
        self._pending: collections.deque = collections.deque()
        self._pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),  # the caller holds JAX's threads
            initializer=_start_worker,
            initargs=(_portable(iterator.dataset), iterator.edges),
        )

    def __iter__(self) -> ParallelBatches:
        return self

    def __next__(self) -> GraphBatch:
        while len(self._pending) < self._ahead and self._plan_one():
            pass
        if not self._pending:
            raise StopIteration
        future, self._position = self._pending.popleft()
        return future.result()

    def _plan_one(self) -> bool:
        try:
            rows, index, budget = self._iterator.plan()
        except StopIteration:
            return False
        future = self._pool.submit(_collate, rows, index, budget)
        self._pending.append((future, self._iterator.state()))
        return True

    def state(self) -> dict:
        """The iterator position after the last batch returned by `next()`."""
        return dict(self._position)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def _portable(dataset) -> tuple[dict | None, object]:
    """What a worker needs to rebuild `dataset`: for a store, its fields but the mapped
    arrays (the folder maps them again); else the dataset itself."""
    if not dataset.store:
        return None, dataset
    fields = dataclasses.fields(dataset)
    return {f.name: getattr(dataset, f.name) for f in fields if f.name not in ARRAYS}, None


def _start_worker(portable, edges) -> None:
    unmapped, dataset = portable
    if unmapped is not None:
        dataset = dataclasses.replace(open_store(unmapped["store"]), **unmapped)
    _WORKER.update(dataset=dataset, edges=edges)


def _collate(rows, index, budget) -> GraphBatch:
    return collate(_WORKER["dataset"], _WORKER["edges"], rows, budget, index)
