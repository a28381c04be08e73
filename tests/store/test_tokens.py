"""Call tokens are unique whatever the application does with ``random``; a marker answers its own
call only.

A call's token names its op marker and its claim: two calls that drew the same token would look
like one call and its re-send. Tokens used to come from the process-wide ``random`` module, so
two workers that each called ``random.seed(42)`` (ML jobs seed per job, test suites seed) drew
the same tokens: both received one job with the same claim, and an ``update_status`` of another
job answered with the first job's record.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from jobstore.ops import new_token

STRATEGIES = ["legacy", "workspace", "dual"]


def test_seeding_the_random_module_does_not_repeat_tokens():
    random.seed(42)
    first = [new_token() for _ in range(50)]
    random.seed(42)
    second = [new_token() for _ in range(50)]
    assert len(set(first) | set(second)) == 100


def test_tokens_do_not_draw_from_or_disturb_the_applications_random_sequence():
    random.seed(7)
    expected = [random.random() for _ in range(5)]
    random.seed(7)
    new_token()
    assert [random.random() for _ in range(5)] == expected


def test_threads_draw_distinct_tokens():
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(i: int) -> None:
        random.seed(42)  # every thread seeds the shared generator, as a per-job seed would
        drawn[i].extend(new_token() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [token for tokens in drawn for token in tokens]
    assert len(every) == 16000 and len(set(every)) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_that_seeds_random_does_not_repeat_its_parents_tokens():
    read, write = os.pipe()
    random.seed(42)
    pid = os.fork()
    if pid == 0:  # the child seeds as its parent did, draws, and leaves
        try:
            random.seed(42)
            os.write(write, " ".join(new_token() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode().split()
    os.close(read)
    random.seed(42)
    mine = [new_token() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(mine)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_workers_that_seed_random_never_share_a_job(make_store, strategy):
    """The reported failure: two stores after ``random.seed(42)`` both received j1 with the same
    claim while j2 stayed pending, and update_status("j2") answered with j1."""
    producer = make_store(strategy)
    producer.enqueue("ws", "work", job_id="j1")
    producer.enqueue("ws", "work", job_id="j2")
    one, two = make_store(strategy), make_store(strategy)
    random.seed(42)
    first = one.dequeue(timeout=0)
    random.seed(42)
    second = two.dequeue(timeout=0)
    assert first is not None and second is not None
    assert {first.job_id, second.job_id} == {"j1", "j2"}
    assert first.claim != second.claim
    random.seed(42)
    done_one = one.update_status(first.job_id, "completed", workspace_id="ws", claim=first.claim)
    random.seed(42)
    done_two = two.update_status(second.job_id, "completed", workspace_id="ws", claim=second.claim)
    assert (done_one.job_id, done_two.job_id) == (first.job_id, second.job_id)
    for job_id in ("j1", "j2"):
        assert producer.get(job_id, workspace_id="ws").status == "completed"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_update_never_answers_with_another_calls_marker(make_store, strategy):
    """Even with two calls given the very same token (as a broken generator would), the second
    update writes its own job: a marker answers only a re-send of its own call."""
    store = make_store(strategy)
    store.enqueue("ws", "work", job_id="j1")
    store.enqueue("ws", "work", job_id="j2")
    tokens = iter(["A" * 12, "A" * 12] + [new_token() for _ in range(10)])
    store.context.new_token = lambda: next(tokens)
    assert store.update_status("j1", "running", workspace_id="ws").job_id == "j1"
    updated = store.update_status("j2", "running", workspace_id="ws")
    assert updated.job_id == "j2" and updated.status == "running"
    assert store.get("j2", workspace_id="ws").status == "running"


def test_a_child_forked_without_the_at_fork_hooks_still_draws_its_own_tokens(monkeypatch):
    """A C-level fork() runs no at-fork hook: the child would go on with its parent's generator
    state. The generator notices the process changed and seeds itself again."""
    from jobstore.ops import context

    state = context._TOKENS.getstate()
    parents_next = new_token()
    context._TOKENS.setstate(state)  # the child's copy of the parent's generator, as fork leaves it
    monkeypatch.setattr(context, "_drawn_in", [-1])  # ... in a process it was not seeded in
    assert new_token() != parents_next
    assert context._drawn_in == [os.getpid()]


def test_generated_job_ids_are_uuid4_hex_from_the_os_whatever_random_is_seeded_to():
    """A job enqueued without ``job_id`` gets a uuid4 hex (store.enqueue's promise), drawn from
    the OS: the same text ``uuid.UUID(bytes=..., version=4).hex`` makes of the same bytes, and
    no repeat after ``random.seed``, in a forked child either."""
    import uuid
    from unittest import mock

    from jobstore.ops import context

    drawn = bytes(range(16))
    with mock.patch.object(context.os, "urandom", return_value=drawn) as urandom:
        assert context.new_job_id() == uuid.UUID(bytes=drawn, version=4).hex
    urandom.assert_called_once_with(16)
    for _ in range(200):
        job_id = context.new_job_id()
        parsed = uuid.UUID(hex=job_id)
        assert parsed.hex == job_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    random.seed(42)
    first = {context.new_job_id() for _ in range(50)}
    random.seed(42)
    assert not first & {context.new_job_id() for _ in range(50)}


def test_an_enqueue_without_a_job_id_gets_a_uuid4_hex(make_store):
    import uuid

    store = make_store("legacy")
    jobs = [store.enqueue("ws", "work") for _ in range(20)]
    assert len({job.job_id for job in jobs}) == 20
    for job in jobs:
        assert uuid.UUID(hex=job.job_id).version == 4 and len(job.job_id) == 32
        assert store.get(job.job_id, workspace_id="ws") == job
