"""Batches assembled ahead of the training step, in a background thread.

One producer thread walks the batch iterator in its own order, so prefetching changes
no batch; each batch travels with the iterator position just after it, and `state()`
is the position of the last batch *consumed*, which is what a checkpoint must hold for
a resumed run to see exactly the batches it would have seen.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class Prefetcher:
    """`next()` -> the iterator's next batch (through `transform`), up to `depth` ahead.

    Args:
      iterator: a `BatchIterator` (anything with `__next__`, `state()`), positioned
        where training resumes.
      depth: batches kept ready (>= 1); the queue bounds host memory.
      transform: applied in the thread, e.g. the host -> device transfer
        (`sharding.global_batch`), so it overlaps the step too.
    """

    def __init__(self, iterator, depth: int = 2, transform: Callable = lambda batch: batch):
        if depth < 1:
            raise ValueError(f"prefetch depth {depth} must be >= 1")
        self._iterator, self._transform = iterator, transform
        self._position = iterator.state()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._transform(next(self._iterator))
                self._put((batch, self._iterator.state()))
        except BaseException as error:  # re-raised in the consumer, where it can be seen
            self._put(_Failure(error))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        batch, self._position = item
        return batch

    def state(self) -> dict:
        """The iterator position after the last batch returned by `next()`."""
        return dict(self._position)

    def close(self) -> None:
        """Stop the thread (batches made ahead are dropped; `state()` stays exact)."""
        self._stop.set()
        self._thread.join()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
