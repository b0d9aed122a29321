"""Background prefetching of training batches onto the devices."""

from __future__ import annotations

from collections.abc import Callable
import queue
import threading
from typing import Any

import jax
import numpy as np

from sgm_jax._validation import check_positive_int
from sgm_jax.data.source import Batch, DataSource

#: Seconds between checks of the stop flag while the producer waits for room in the queue.
_POLL_S = 0.05


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterator of ``(k, device_batch)`` for k = first_step, first_step + steps_per_call, ...

    A background thread builds the host-local batches ``source.train_batch(s)`` for the steps
    s ∈ [k, k + steps_per_call), stacks them to ``[steps_per_call, B_local, ...]`` (or leaves
    the single batch ``[B_local, ...]`` when ``steps_per_call`` is 1, as score_sde's
    ``n_jitted_steps`` batch dimension), hands each group to ``put`` (e.g. sharding it onto the
    devices) and queues the result, at most ``depth`` groups ahead of the consumer. Groups come
    out in order. An exception raised while building or putting a group is re-raised by the
    ``next`` call that would have returned it. ``close()`` (or leaving the ``with`` block) stops
    the thread and waits for it; the iterator is endless otherwise.
    """

    def __init__(
        self,
        source: DataSource,
        first_step: int,
        steps_per_call: int,
        put: Callable[[Batch], Any],
        depth: int = 2,
    ):
        if isinstance(first_step, bool) or not isinstance(first_step, (int, np.integer)) or (
                first_step < 0):
            raise ValueError(f"first_step must be an integer >= 0; got {first_step!r}.")
        check_positive_int("steps_per_call", steps_per_call)
        check_positive_int("depth", depth)
        self._source, self._put, self._steps_per_call = source, put, steps_per_call
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._produce, args=(int(first_step),), name="Prefetcher", daemon=True)
        self._thread.start()

    def _group(self, k: int) -> Batch:
        batches = [self._source.train_batch(k + i) for i in range(self._steps_per_call)]
        if self._steps_per_call == 1:
            return batches[0]
        return jax.tree.map(lambda *leaves: np.stack(leaves), *batches)

    def _offer(self, item) -> bool:
        """Queue ``item`` unless stopped first; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, k: int) -> None:
        while not self._stop.is_set():
            try:
                item = (k, self._put(self._group(k)))
            except BaseException as error:  # handed to the consumer, which re-raises it
                self._offer(_Failure(error))
                return
            if not self._offer(item):
                return
            k += self._steps_per_call

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> tuple[int, Any]:
        if self._closed:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the background thread and drop the queued groups; idempotent."""
        self._closed = True
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
