"""Every single-job operation is one network round trip on standalone Redis, in every strategy
and phase, on the synchronous and the asyncio store. Counted on the wire: a redis-py connection
that counts what it sends."""

from __future__ import annotations

import threading

import pytest
import redis

import jobstore
from tests.support.aio import FLAVOURS, AsyncCountingConnection

SENT = threading.local()
AsyncCountingConnection.tally = SENT


class CountingConnection(redis.Connection):
    """Counts round trips: a send that follows a read (a pipeline may send in several chunks)."""

    def send_packed_command(self, command, check_health=True):
        if getattr(SENT, "reading", True):
            SENT.count = getattr(SENT, "count", 0) + 1
            SENT.reading = False
        return super().send_packed_command(command, check_health)

    def read_response(self, *args, **kwargs):
        SENT.reading = True
        return super().read_response(*args, **kwargs)


def still(store):
    """Stop the clock the store's cached routing state ages on: a ``dual`` store refreshes it
    when it is 0.5 s old (riding along with the next command) and in a round trip of its own
    when it is 1 s old, which a slow machine reaches between two operations of a test."""
    now = store.driver.core.monotonic()
    store.driver.core.monotonic = lambda: now


def counted(flavour):
    """The client options of a store of ``flavour`` whose round trips are counted."""
    return {"connection_class": AsyncCountingConnection if flavour == "async"
            else CountingConnection}


def round_trips(call):
    SENT.count, SENT.reading = 0, True
    result = call()
    return SENT.count, result


CONFIGS = [("legacy", {}), ("workspace", {})] + [
    ("dual", {"phase": p}) for p in ("off", "dual-write", "read-target", "target-only")
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("strategy, options", CONFIGS, ids=lambda v: str(v))
def test_single_job_operations_take_one_round_trip(open_store, flavour, redis_url, strategy,
                                                   options):
    store = open_store(redis_url, strategy, client_options=counted(flavour), **options)
    # Warm up: the first call of each script loads it into the server's script cache.
    warm = store.enqueue("ws", "warm")
    store.update_status(warm.job_id, "cancelled", workspace_id="ws")
    store.dequeue()
    store.delete(warm.job_id, workspace_id="ws")

    n, job = round_trips(lambda: store.enqueue("ws", "a", {"x": 1}))
    assert n == 1
    assert round_trips(lambda: store.get(job.job_id, workspace_id="ws")) == (1, job)
    assert round_trips(lambda: store.get("missing", workspace_id="ws")) == (1, None)
    n, claimed = round_trips(store.dequeue)
    assert n == 1 and claimed.job_id == job.job_id
    n, done = round_trips(lambda: store.update_status(job.job_id, "completed", workspace_id="ws"))
    assert n == 1 and done.status == "completed"
    n, _ = round_trips(lambda: pytest.raises(jobstore.InvalidTransition, store.update_status,
                                             job.job_id, "running", workspace_id="ws"))
    assert n == 1
    assert round_trips(store.dequeue) == (1, None)
    assert round_trips(lambda: store.delete(job.job_id, workspace_id="ws")) == (1, True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_enqueue_many_and_list_are_pipelined(open_store, flavour, redis_url):
    store = open_store(redis_url, "dual", client_options=counted(flavour))
    store.get("warm", workspace_id="ws")  # connection handshake, first read of the phase
    still(store)  # the phase read stays fresh: no refresh rides along or goes on its own
    n, jobs = round_trips(lambda: store.enqueue_many([("ws", "a")] * 200))
    assert len(jobs) == 200 and n == 1  # one pipeline of EVALSHA calls
    n, listed = round_trips(lambda: store.list("ws", limit=200))
    assert len(listed) == 200 and n == 2  # the index, then every record in one pipeline
