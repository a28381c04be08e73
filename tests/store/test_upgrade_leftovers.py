"""What an earlier version left in Redis keeps working after an upgrade.

Earlier versions claimed a job taken as a bare id from a shared legacy queue under a claim naming
the bare id (``<token>:<job_id>``), and put bare ids a dead dequeue left in its claim list back
into jobstore's own queue as they were. A store without ``legacy_queue`` (after the fleet left
the shared list) used to dead-letter both, leaving such a job ``running`` forever with no lease.
"""

from __future__ import annotations

import pytest

STRATEGIES = ["legacy", "dual"]


@pytest.fixture
def standalone(make_store, backend):
    if not backend.startswith(("memory://", "redis://")):
        pytest.skip("a shared legacy queue is standalone Redis only")
    return make_store


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_expired_lease_of_a_bare_id_claim_is_taken_over(standalone, strategy):
    store = standalone(strategy, max_attempts=3)
    job = store.enqueue("ws", "work", job_id="j1")
    assert store.client.rpop(store.keys.queue) is not None  # taken by the earlier version
    old_claim = "T0ken0ld0000:j1"
    for schema in store.strategy.routing("ws").touched:
        store.client.hset(schema.job_key("ws", "j1"),
                          mapping={"status": "running", "attempts": "1", "claim": old_claim})
    store.client.zadd(store.keys.leases, {old_claim: 0})  # its worker died long ago
    taken = store.dequeue(timeout=0)
    assert taken is not None and taken.job_id == job.job_id
    assert (taken.status, taken.attempts) == ("running", 2)
    assert taken.claim != old_claim and taken.claim.split(":", 1)[1].startswith("ws:j1:")
    assert store.dead_letters() == []
    assert store.client.zscore(store.keys.leases, old_claim) is None
    done = store.update_status("j1", "completed", workspace_id="ws", claim=taken.claim)
    assert done.status == "completed"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_bare_id_an_earlier_version_put_back_in_jobstores_queue_is_handed_out(standalone, strategy):
    store = standalone(strategy)
    store.enqueue("ws", "work", job_id="j1")
    store.client.delete(store.keys.queue)
    store.client.lpush(store.keys.queue, "j1")
    taken = store.dequeue(timeout=0)
    assert taken is not None and taken.job_id == "j1" and taken.workspace_id == "ws"
    assert store.dead_letters() == []


def test_a_bare_entry_with_no_record_is_still_a_dead_letter(standalone):
    store = standalone("legacy")
    store.client.lpush(store.keys.queue, "nocolon")
    assert store.dequeue(timeout=0) is None
    (letter,) = store.dead_letters()
    assert letter.entry == "nocolon" and "no ':'" in letter.reason
