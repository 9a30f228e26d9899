"""The model worker: one thread runs every model call, so the event loop never waits on the
model. Translation requests that arrive together, for the same model and decoding options,
are gathered into one token-budgeted batch (dynamic batching); each sentence's output is the
same as when it is translated alone, because decoding does not depend on the batch around it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

from aiayn.serve.settings import ServeSettings


class QueueFull(Exception):
    """The worker's queue holds `max_queue` requests already."""


class ShuttingDown(Exception):
    """The server is stopping and takes no more requests."""


@dataclass(eq=False)
class Job:
    """One request's work.

    A batchable job (`key` set) holds `texts` that may be decoded in one batch with other
    jobs' texts of the same `key`, by `run_batch(texts)`; any other job is `call()` alone.
    """

    key: Hashable | None = None
    texts: list[str] = field(default_factory=list)
    cost: int = 0
    """Source tokens times beam size: what `max_batch_tokens` counts."""
    run_batch: Callable[[list[str]], list[str]] | None = None
    call: Callable[[], object] | None = None
    future: Future = field(default_factory=Future)


@dataclass
class WorkerStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    """Most requests decoded in one batch."""


class ModelWorker:
    """A thread that runs jobs in order of arrival, gathering batchable ones.

    The first waiting job opens a batch; jobs of the same key join it, in order, while the
    batch stays within `max_batch_tokens` (the first always fits), waiting at most
    `max_wait_ms` from the first job's arrival for more to come. Jobs of other keys wait for
    the next batch. A failed batch is retried job by job, so one bad request fails alone.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.stats = WorkerStats()
        self._jobs: deque[tuple[float, Job]] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="aiayn-model-worker", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def submit(self, job: Job) -> Future:
        """Queue `job`; its future gets the result (or the exception raised).

        Raises:
            QueueFull: `max_queue` jobs are waiting already.
            ShuttingDown: `close` has been called.
        """
        with self._changed:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if len(self._jobs) >= self.settings.max_queue:
                raise QueueFull(f"{len(self._jobs)} requests are waiting (max_queue)")
            self._jobs.append((time.monotonic(), job))
            self._changed.notify()
        return job.future

    def close(self, timeout: float | None = None) -> bool:
        """Take no more jobs, finish those queued, stop; False if still busy after `timeout`."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            self.stats.requests += len(jobs)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
            if jobs[0].key is None:
                _settle(jobs[0], jobs[0].call)
            else:
                self._run_batch(jobs)

    def _next_batch(self) -> list[Job] | None:
        """The next jobs to run together: one unbatchable job, or jobs of one key; None when
        closing with nothing left."""
        with self._changed:
            while not self._jobs:
                if self._closing:
                    return None
                self._changed.wait()
            arrived, first = self._jobs.popleft()
            if first.key is None:
                return [first]
            batch, cost = [first], first.cost
            deadline = arrived + self.settings.max_wait_ms / 1000
            while True:
                left_behind: deque[tuple[float, Job]] = deque()
                for entry in self._jobs:
                    job = entry[1]
                    if job.key == first.key and cost + job.cost <= self.settings.max_batch_tokens:
                        batch.append(job)
                        cost += job.cost
                    else:
                        left_behind.append(entry)
                self._jobs = left_behind
                left = deadline - time.monotonic()
                full = cost >= self.settings.max_batch_tokens
                if full or left <= 0 or self._closing:
                    return batch
                self._changed.wait(left)

    def _run_batch(self, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            outputs = jobs[0].run_batch(texts)
        except Exception as error:
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            for job in jobs:  # one request's fault must not fail the others
                _settle(job, lambda job=job: job.run_batch(job.texts))
            return
        start = 0
        for job in jobs:
            job.future.set_result(outputs[start : start + len(job.texts)])
            start += len(job.texts)


def _settle(job: Job, call: Callable[[], object]) -> None:
    try:
        job.future.set_result(call())
    except Exception as error:  # the request fails; the worker goes on
        job.future.set_exception(error)
