"""The model worker's dynamic batching, with scripted jobs: which jobs share a batch (same
key, within the token budget, arriving within the wait), order kept, one bad request failing
alone, cancelled requests skipped, a bounded queue, and a drained shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from aiayn.serve.settings import ServeSettings
from aiayn.serve.worker import Job, ModelWorker, QueueFull, ShuttingDown


class Recorder:
    """A `run_batch` that upper-cases texts and remembers the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        if "bad" in texts:
            raise ValueError("bad input")
        return [t.upper() for t in texts]


def hold(worker: ModelWorker) -> threading.Event:
    """Occupy the worker until the returned event is set."""
    gate, running = threading.Event(), threading.Event()
    worker.submit(Job(call=lambda: (running.set(), gate.wait(30))))
    assert running.wait(10)
    return gate


def job(record: Recorder, key: str, *texts: str, cost: int = 1) -> Job:
    return Job(key=key, texts=list(texts), cost=cost, run_batch=record)


def test_jobs_of_one_key_share_a_batch_within_the_budget_in_order():
    worker = ModelWorker(ServeSettings(max_batch_tokens=10, max_wait_ms=0))
    record = Recorder()
    gate = hold(worker)
    jobs = [
        job(record, "a", "x", "y", cost=4),
        job(record, "b", "p", cost=1),
        job(record, "a", "z", cost=4),
        job(record, "a", "w", cost=4),  # past the budget of 10: the next batch
        job(record, "b", "q", cost=1),
    ]
    for j in jobs:
        worker.submit(j)
    gate.set()
    results = [j.future.result(10) for j in jobs]
    assert results == [["X", "Y"], ["P"], ["Z"], ["W"], ["Q"]]
    assert record.batches == [["x", "y", "z"], ["p", "q"], ["w"]]
    assert worker.close(10)


def test_the_first_job_waits_for_others_to_join_it():
    worker = ModelWorker(ServeSettings(max_wait_ms=500))
    record = Recorder()
    first = worker.submit(job(record, "a", "x"))
    time.sleep(0.1)
    second = worker.submit(job(record, "a", "y"))
    assert (first.result(10), second.result(10)) == (["X"], ["Y"])
    assert record.batches == [["x", "y"]]
    worker.close(10)


def test_a_failing_batch_is_retried_so_only_the_bad_request_fails():
    worker = ModelWorker(ServeSettings(max_wait_ms=0))
    record = Recorder()
    gate = hold(worker)
    good, bad, also_good = (job(record, "a", t) for t in ("x", "bad", "y"))
    for j in (good, bad, also_good):
        worker.submit(j)
    gate.set()
    assert good.future.result(10) == ["X"] and also_good.future.result(10) == ["Y"]
    with pytest.raises(ValueError, match="bad input"):
        bad.future.result(10)
    assert record.batches == [["x", "bad", "y"], ["x"], ["bad"], ["y"]]
    worker.close(10)


def test_a_cancelled_request_is_never_run():
    worker = ModelWorker(ServeSettings(max_wait_ms=0))
    record = Recorder()
    gate = hold(worker)
    gone, kept = job(record, "a", "x"), job(record, "a", "y")
    worker.submit(gone)
    worker.submit(kept)
    assert gone.future.cancel()
    gate.set()
    assert kept.future.result(10) == ["Y"] and record.batches == [["y"]]
    worker.close(10)


def test_the_queue_is_bounded_and_closing_drains_it():
    worker = ModelWorker(ServeSettings(max_queue=2, max_wait_ms=0))
    record = Recorder()
    gate = hold(worker)
    queued = [worker.submit(job(record, "a", t)) for t in ("x", "y")]
    with pytest.raises(QueueFull, match="2 requests are waiting"):
        worker.submit(job(record, "a", "z"))
    closing = threading.Thread(target=worker.close, args=(10,))
    closing.start()
    time.sleep(0.1)
    with pytest.raises(ShuttingDown):
        worker.submit(job(record, "a", "z"))
    gate.set()
    closing.join(10)
    assert [f.result(0) for f in queued] == [["X"], ["Y"]]  # finished before it stopped
    assert worker.stats.requests == 3 and worker.stats.largest_batch == 2
