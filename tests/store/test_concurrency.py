"""Many workers, each with its own store (own connections), on one real Redis."""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest

import jobstore
from jobstore import InvalidTransition, JobExists

STRATEGIES = ["legacy", "workspace", "dual"]


def run_threads(n, target):
    errors = []

    def guarded(i):
        try:
            target(i)
        except BaseException as exc:  # surfaced below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_job_is_dequeued_by_exactly_one_worker(redis_url, strategy):
    producer = jobstore.open(redis_url, strategy)
    jobs = producer.enqueue_many([(f"ws{i % 3}", "work") for i in range(300)])
    cancelled = {j.job_id for j in jobs[::10]}
    for job in jobs[::10]:
        producer.update_status(job.job_id, "cancelled", workspace_id=job.workspace_id)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(_):
        with jobstore.open(redis_url, strategy) as store:
            while (job := store.dequeue(timeout=0.2)) is not None:
                with lock:
                    claimed.append(job.job_id)

    run_threads(8, worker)
    counts = Counter(claimed)
    assert max(counts.values()) == 1
    assert set(counts) == {j.job_id for j in jobs} - cancelled


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_blocked_workers_share_jobs_arriving_later(redis_url, strategy):
    claimed: list[str] = []
    lock = threading.Lock()
    producer = jobstore.open(redis_url, strategy)

    def worker(i):
        if i == 0:
            for n in range(60):
                producer.enqueue("ws", "late", job_id=f"late{n}")
            return
        with jobstore.open(redis_url, strategy) as store:
            while (job := store.dequeue(timeout=1.5)) is not None:
                with lock:
                    claimed.append(job.job_id)

    run_threads(5, worker)
    assert sorted(claimed) == sorted(f"late{n}" for n in range(60))
    assert not producer.client.keys("ai:claim:*")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_enqueue_of_one_id_creates_one_job(redis_url, strategy):
    outcomes: list[str] = []

    def client(i):
        with jobstore.open(redis_url, strategy) as store:
            try:
                store.enqueue("ws", f"from-{i}", job_id="contested")
                outcomes.append("created")
            except JobExists:
                outcomes.append("exists")

    run_threads(10, client)
    assert Counter(outcomes) == {"created": 1, "exists": 9}
    probe = jobstore.open(redis_url, strategy)
    assert probe.client.llen("ai:queue") == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_updates_never_interleave(redis_url, strategy):
    setup = jobstore.open(redis_url, strategy)
    jobs = setup.enqueue_many([("ws", "race") for _ in range(100)])
    for job in jobs:
        setup.update_status(job.job_id, "running", workspace_id="ws")
    wins = Counter()

    def finisher(i):
        with jobstore.open(redis_url, strategy) as store:
            for job in jobs:
                try:
                    if i % 2:
                        store.update_status(job.job_id, "completed", workspace_id="ws", result=f"r{i}")
                    else:
                        store.update_status(job.job_id, "failed", workspace_id="ws", error=f"e{i}")
                    wins[i] += 1
                except InvalidTransition:
                    pass

    run_threads(4, finisher)
    assert sum(wins.values()) == len(jobs)  # exactly one finisher per job
    for job in jobs:
        final = setup.get(job.job_id, workspace_id="ws")
        if final.status == "completed":
            assert final.error is None and final.result.startswith("r")
        else:
            assert final.status == "failed" and final.result is None and final.error.startswith("e")
        records = [setup.client.hgetall(s.job_key("ws", job.job_id)) for s in setup.strategy.schemas]
        assert all(r == records[0] for r in records)  # dual: both copies identical


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_call_tokens_differ_between_a_process_and_its_forked_children():
    """Tokens come from jobstore's own generator (os.urandom costs microseconds per
    call); a forked worker must not repeat its parent's tokens, or two calls would share a
    marker (tests/store/test_tokens.py: nor may an application's random.seed)."""
    from jobstore.ops import new_token

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, then out
        os.write(write, " ".join(new_token() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode().split()
    os.close(read)
    mine = [new_token() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(mine)
    assert len(set(mine)) == 3 and all(len(token) == 12 for token in mine)
