"""The operations on their own, without Redis: each runs through the scripted driver
(tests/support/scripted.py), which checks every step it yields against the steps expected and
answers with canned replies. What is asserted is the operation's own decisions: which keys and
scripts it routes to, how it reads each reply, when it tries again, what it waits for. The
clocks are one fake (the kit's jobstore.testing.FakeClock), handed in as the context's ``clock``
and ``timer``.
"""

from __future__ import annotations

import json
from itertools import count

import pytest

from jobstore import ops
from jobstore.builtins.dual import DualStrategy
from jobstore.builtins.legacy import LegacySchema
from jobstore.builtins.workspace import WorkspaceSchema
from jobstore.errors import EnqueueIncomplete, InvalidTransition, JobExists, JobNotFound, LeaseLost
from jobstore.events import Events
from jobstore.job import Job, JobStatus
from jobstore.layout import StoreKeys
from jobstore.ops import cluster
from jobstore.phases import Phase
from jobstore.rules import OP
from jobstore.steps import Batch, Command, Refresh, Refused
from jobstore.strategy import SchemaStrategy, Strategy
from jobstore.testing import FakeClock
from tests.support.scripted import Expect, Scripted, batch, run

START = 1_700_000_000.0
LEGACY_KEY = "ai:jobs:j1"          # the legacy schema's record of job j1
TARGET_KEY = "ai:job:acme:j1"      # the workspace schema's


class Recorder(Events):
    """The events an operation reports, as ``(name, *arguments)``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[object, ...]] = []

    def read_fallback(self, workspace_id: str) -> None:
        self.seen.append(("read_fallback", workspace_id))

    def shadow_read(self, workspace_id: str, job_id: str, outcome: str,
                    fields: tuple[str, ...] = ()) -> None:
        self.seen.append(("shadow_read", workspace_id, job_id, outcome, fields))


def legacy() -> Strategy:
    return SchemaStrategy(LegacySchema("ai"))


def dual(phase: Phase) -> Strategy:
    return DualStrategy(LegacySchema("ai"), WorkspaceSchema("ai"), pinned=phase)


def context(strategy: Strategy | None = None, **knobs) -> tuple[ops.Context, FakeClock]:
    clock = FakeClock(start=START, tick=0)
    tokens = (f"tok{n}" for n in count())
    ctx = ops.Context(StoreKeys("ai"), strategy or legacy(), clock=clock, timer=clock,
                      new_token=lambda: next(tokens), events=Recorder(), **knobs)
    return ctx, clock


def record(job_id: str = "j1", workspace_id: str = "acme", **changes: str) -> dict[str, str]:
    _, fields = Job.pending(job_id, workspace_id, "work", "{}", START - 60)
    return {**fields, **changes}


def flat(fields: dict[str, str]) -> list[str]:
    return [part for item in fields.items() for part in item]


def hgetall(*keys: str) -> Batch:
    return Batch(tuple(Command(("HGETALL", key)) for key in keys))


# -- get: where it reads, and how it reads the replies ------------------------------------------


def test_get_reads_the_one_schemas_key_and_takes_only_its_workspaces_record():
    ctx, _ = context()
    assert run(ops.get(ctx, "j1", "acme"), [Expect(hgetall(LEGACY_KEY), [{}])]) is None
    other = record(workspace_id="globex")
    assert run(ops.get(ctx, "j1", "acme"), [Expect(hgetall(LEGACY_KEY), [other])]) is None
    job = run(ops.get(ctx, "j1", "acme"), [Expect(hgetall(LEGACY_KEY), [record()])])
    assert (job.job_id, job.workspace_id, job.status) == ("j1", "acme", JobStatus.PENDING)


def test_get_in_read_target_reads_target_then_source_in_one_script_and_reports_a_fallback():
    ctx, _ = context(dual(Phase.READ_TARGET))
    first_of_both = batch("read_first", check=lambda b: b.calls[0].keys == (TARGET_KEY, LEGACY_KEY))
    job = run(ops.get(ctx, "j1", "acme"), [Expect(first_of_both, [[2, flat(record())]])])
    assert job.job_id == "j1"
    assert ctx.events.seen == [("read_fallback", "acme")]  # found in the source, second
    ctx.events.seen.clear()
    assert run(ops.get(ctx, "j1", "acme"), [Expect(first_of_both, [[1, flat(record())]])])
    assert ctx.events.seen == []  # found in the target: no fallback
    assert run(ops.get(ctx, "j1", "acme"), [Expect(first_of_both, [[0]])]) is None


def test_get_in_read_target_on_a_cluster_reads_each_key_apart_and_falls_back_in_order():
    """No script spans two slots: one HGETALL per key, the target first."""
    ctx, _ = context(dual(Phase.READ_TARGET), cluster=True)
    job = run(ops.get(ctx, "j1", "acme"),
              [Expect(hgetall(TARGET_KEY, LEGACY_KEY), [{}, record(status="running")])])
    assert job.status is JobStatus.RUNNING
    assert ctx.events.seen == [("read_fallback", "acme")]


def test_get_in_dual_write_returns_the_source_and_compares_the_target_copy():
    ctx, _ = context(dual(Phase.DUAL_WRITE))
    job = run(ops.get(ctx, "j1", "acme"),
              [Expect(hgetall(LEGACY_KEY, TARGET_KEY), [record(), record(status="running")])])
    assert job.status is JobStatus.PENDING  # the source's, never the shadow's
    assert ctx.events.seen == [("shadow_read", "acme", "j1", "mismatch", ("status",))]
    ctx.events.seen.clear()
    run(ops.get(ctx, "j1", "acme"), [Expect(hgetall(LEGACY_KEY, TARGET_KEY), [record(), {}])])
    assert ctx.events.seen == [("shadow_read", "acme", "j1", "missing", ("*",))]


# -- enqueue -------------------------------------------------------------------------------------


def pending(job_id: str = "j1") -> tuple[Job, dict[str, str]]:
    return Job.pending(job_id, "acme", "work", "{}", START)


def test_enqueue_reads_an_exists_reply_as_job_exists():
    ctx, _ = context()
    job, fields = pending()
    with pytest.raises(JobExists) as raised:
        run(ops.enqueue(ctx, job, {**fields, OP: "tok"}), [Expect(batch("enqueue"), ["exists"])])
    assert raised.value.job_ids == ["j1"]


def test_enqueue_refreshes_a_stale_routing_and_sends_again_then_reads_a_refusal():
    ctx, _ = context()
    job, fields = pending()
    fields[OP] = "tok"
    assert run(ops.enqueue(ctx, job, fields), [
        Expect(batch("enqueue"), [["stale"]]),
        Expect(Refresh()),
        Expect(batch("enqueue"), ["created"]),  # the call's words in one string
    ]) == job
    with pytest.raises(Refused, match="OOM"):
        run(ops.enqueue(ctx, job, fields), [Expect(batch("enqueue"), [[["error", "OOM command"]]])])


def test_enqueue_many_reads_each_jobs_outcome_of_a_call_in_either_form():
    """A call answers its jobs' words in one string, or (a job refused) a word or an error per
    job: each job gets its own outcome, in the call's order, either way."""
    ctx, _ = context()
    jobs = [pending(f"j{n}") for n in range(4)]
    for _, fields in jobs:
        fields[OP] = "tok"
    created = run(ops.enqueue_many(ctx, [jobs[0], jobs[1]]),
                  [Expect(batch("enqueue"), ["created replayed"])])
    assert created == [jobs[0][0], jobs[1][0]]
    with pytest.raises(JobExists) as exists:
        run(ops.enqueue_many(ctx, jobs[:3]), [Expect(batch("enqueue"), ["created exists created"])])
    assert exists.value.job_ids == ["j1"] and exists.value.created == [jobs[0][0], jobs[2][0]]
    with pytest.raises(EnqueueIncomplete) as incomplete:
        run(ops.enqueue_many(ctx, jobs), [
            Expect(batch("enqueue"), [["created", ["error", "OOM command"], "exists", "created"]])])
    assert incomplete.value.failed == {"j1": "OOM command"}
    assert incomplete.value.created == [jobs[0][0], jobs[3][0]]
    assert incomplete.value.existing == ["j2"]


# -- update_status -------------------------------------------------------------------------------


def test_update_status_reads_invalid_and_lease_lost_replies_as_their_errors():
    ctx, _ = context()
    with pytest.raises(InvalidTransition) as invalid:
        run(ops.update_status(ctx, "j1", "acme", JobStatus.RUNNING, {}),
            [Expect(batch("update_status"), [["invalid", "completed"]])])
    assert (invalid.value.current, invalid.value.requested) == ("completed", "running")
    with pytest.raises(LeaseLost) as held:
        run(ops.update_status(ctx, "j1", "acme", JobStatus.COMPLETED, {}, claim="c1"),
            [Expect(batch("update_status"), [["lease_lost", "2", "running"]])])
    assert (held.value.claim, held.value.holder_attempt) == ("c1", 2)  # another worker holds it
    with pytest.raises(LeaseLost) as finished:
        run(ops.update_status(ctx, "j1", "acme", JobStatus.COMPLETED, {}, claim="c1"),
            [Expect(batch("update_status"), [["lease_lost", "1", "completed"]])])
    assert finished.value.holder_attempt is None  # nobody holds a finished job
    with pytest.raises(JobNotFound):
        run(ops.update_status(ctx, "j1", "acme", JobStatus.RUNNING, {}),
            [Expect(batch("update_status"), [["missing"]])])


def test_update_status_stamps_the_contexts_clock_and_retries_another_calls_marker_anew():
    ctx, clock = context()
    scripted = Scripted()
    job = scripted.run(ops.update_status(ctx, "j1", "acme", JobStatus.RUNNING, {}), [
        Expect(batch("update_status"), [["not_mine"]]),
        Expect(batch("update_status"), [["ok", flat(record(status="running"))]]),
    ])
    assert job.status is JobStatus.RUNNING
    first, second = (step.calls[0] for step in scripted.steps)
    assert first.keys[1] != second.keys[1]  # a new token, so a new op marker
    assert second.keys[1].endswith(":tok1") and list(ctx.spent_markers) == [second.keys[1]]
    assert second.args[-2:] == ("updated_at", repr(clock.now))  # the fake clock's, not time.time


# -- dequeue: an empty queue, and the wait -------------------------------------------------------


def test_dequeue_without_a_wait_answers_none_from_an_empty_queue_in_one_step():
    ctx, _ = context()
    scripted = Scripted()
    assert scripted.run(ops.dequeue(ctx, timeout=0), [Expect(batch("dequeue"), [["empty"]])]) is None
    assert len(scripted.steps) == 1


def blocking_wait(seconds: float, ctx: ops.Context):
    """The wait step: lease the claim list, block on the queue for ``seconds``, claim."""

    def check(step: Batch) -> bool:
        lease, move, _ = step.calls
        return (move.args[0] == "BLMOVE" and move.args[-1] == seconds
                and lease.args[1] == int((seconds + ctx.list_grace) * 1000))

    return batch("lease_list", "BLMOVE", "dequeue", check=check)


def test_dequeue_waits_in_slices_until_its_timeout_on_the_contexts_timer():
    """2.5 s in slices of at most block_slice (1 s): 1, 1, then what is left, 0.5; the deadline
    is read from ctx.timer, which each wait moves on as the server's would."""
    ctx, clock = context()
    script = []
    for seconds in (1.0, 1.0, 0.5):  # each round: look at the queue, then block on it
        script += [Expect(batch("dequeue"), [["empty"]]),
                   Expect(blocking_wait(seconds, ctx), [1, None, ["empty"]],
                          effect=lambda step: clock.wait(step.calls[1].args[-1]))]
    script.append(Expect(batch("dequeue"), [["empty"]]))  # the deadline has passed: no more wait
    assert run(ops.dequeue(ctx, timeout=2.5), script) is None
    assert clock.waits == [1.0, 1.0, 0.5]


def test_dequeue_without_a_timeout_waits_until_a_job_comes():
    ctx, clock = context()
    script = []
    for _ in range(5):
        script += [Expect(batch("dequeue"), [["empty"]]),
                   Expect(blocking_wait(1.0, ctx), [1, None, ["empty"]],
                          effect=lambda step: clock.wait(1.0))]
    script += [Expect(batch("dequeue"), [["empty"]]),
               Expect(blocking_wait(1.0, ctx),
                      [1, "entry", ["job", json.dumps(["ai:jobs:j1", flat(record())])]])]
    job = run(ops.dequeue(ctx, timeout=None), script)
    assert job.job_id == "j1"


# -- Redis Cluster: one slot per script ----------------------------------------------------------


def test_a_cluster_update_moves_the_first_copy_then_mirrors_the_other_and_ends_the_claim():
    ctx, _ = context(dual(Phase.DUAL_WRITE), cluster=True)
    claimed = record(status="running", claim="tok9:acme:j1:1")
    done = {**claimed, "status": "completed"}
    scripted = Scripted()
    job = scripted.run(ops_update(ctx, JobStatus.COMPLETED), [
        Expect(hgetall(LEGACY_KEY, TARGET_KEY), [claimed, claimed]),  # all copies decodable?
        Expect(batch("update_status", check=lambda b: b.calls[0].keys[-1] == LEGACY_KEY),
               [["ok", flat(done), LEGACY_KEY]]),
        Expect(batch("mirror", check=lambda b: b.calls[0].keys[-1] == TARGET_KEY), [1]),
        Expect(Batch((Command(("ZREM", ctx.keys.leases, "tok9:acme:j1:1")),)), [1]),
    ])
    assert job.status is JobStatus.COMPLETED
    mirror = scripted.steps[2].calls[0]
    # after the workspace, the marker ttl and the expiry (none: the reply carried none)
    assert mirror.args[2] == "" and ("status", "completed") in zip(mirror.args[3::2],
                                                                   mirror.args[4::2])
    # The arbiter of the finished claim goes with the markers, for a later Tidy.
    assert ctx.keys.claimed("acme", "j1", "1") in ctx.spent_anywhere


def ops_update(ctx: ops.Context, status: JobStatus):
    return cluster.update_status(ctx, "j1", "acme", status, {})


def test_a_cluster_update_skips_a_missing_copy_and_fails_when_none_holds_the_job():
    ctx, _ = context(dual(Phase.DUAL_WRITE), cluster=True)
    with pytest.raises(JobNotFound):
        run(ops_update(ctx, JobStatus.RUNNING), [
            Expect(hgetall(LEGACY_KEY, TARGET_KEY), [{}, {}]),
            Expect(batch("update_status"), [["missing"]]),
            Expect(batch("update_status"), [["missing"]]),
        ])


@pytest.mark.parametrize("claim_seconds, leased_again", [(4.0, False), (6.0, True)])
def test_a_cluster_dequeue_leases_again_a_claim_slower_than_half_its_lease(claim_seconds,
                                                                         leased_again):
    """The claim's lease (10 s) was taken before the record moved; a move that took longer
    than half of it (by ctx.timer) is leased afresh."""
    ctx, clock = context(cluster=True)
    entry = ctx.keys.queue_entry("acme", "j1", record()["created_at"])
    running = record(status="running", claim=f"tok0:{entry}", attempts="1")
    lease_claim = Expect(batch("lease_claim"), [1])
    script = [
        Expect(batch("take"), [[entry, None]]),
        Expect(batch("LRANGE"), [[entry]]),
        Expect(batch("arbitrate"), [["won"]]),
        lease_claim,
        Expect(batch("update_status"), [["ok", flat(running), LEGACY_KEY]],
               effect=lambda step: clock.wait(claim_seconds)),
        *([lease_claim] if leased_again else []),
        Expect(batch("took", check=lambda b: b.calls[0].args[1:] == (entry, "")), [1]),
        Expect(batch("return_claims"), [0]),
    ]
    job = run(cluster.dequeue(ctx, timeout=0, lease_ms=10_000), script)
    assert (job.status, job.claim) == (JobStatus.RUNNING, f"tok0:{entry}")


@pytest.mark.parametrize("holder, handed_out", [("tok0", True), ("tok7", False)])
def test_a_cluster_dequeue_re_sent_after_its_claim_answers_with_the_job_it_claimed(holder,
                                                                                 handed_out):
    """The take finds the call's marker naming the entry it claimed: the job, if it still runs
    under the call's claim (else None: taken over since); nothing else is taken or moved."""
    ctx, _ = context(cluster=True)
    entry = ctx.keys.queue_entry("acme", "j1", record()["created_at"])
    marker = ctx.keys.op("tok0", near=ctx.keys.queue)
    running = record(status="running", claim=f"{holder}:{entry}", attempts="1")
    job = run(cluster.dequeue(ctx, timeout=0), [
        Expect(batch("take", check=lambda b: b.calls[0].keys[3] == marker), [[None, entry]]),
        Expect(hgetall(LEGACY_KEY), [running]),
    ])
    assert (job.claim if job else None) == (f"tok0:{entry}" if handed_out else None)


def test_a_cluster_dequeue_re_sent_after_a_take_over_answers_with_the_job_it_took_over():
    """Cut between the take-over's move and its last step, the call re-sent finds the expired
    claim still listed and the record under its own claim: that job, with the step that drops
    the expired lease and marks the call."""
    ctx, _ = context(cluster=True)
    entry = ctx.keys.queue_entry("acme", "j1", record()["created_at"])
    expired = f"tok9:{entry}"
    running = record(status="running", claim=f"tok0:{entry}", attempts="2")
    job = run(cluster.dequeue(ctx, timeout=0), [
        Expect(batch("take"), [[None, None, expired, "5000"]]),
        Expect(hgetall(LEGACY_KEY), [running]),
        Expect(batch("took", check=lambda b: b.calls[0].args[1:] == (entry, expired)), [1]),
    ])
    assert (job.claim, job.attempts) == (f"tok0:{entry}", 2)


def test_the_scripted_driver_fails_an_unexpected_step_and_an_unfinished_script():
    """The driver the tests above rely on: a wrong step or a step left over is a failure."""
    ctx, _ = context()
    with pytest.raises(AssertionError, match="expected batch"):
        run(ops.get(ctx, "j1", "acme"), [Expect(batch("read_first"), [[0]])])
    with pytest.raises(AssertionError, match="script expected 2"):
        run(ops.get(ctx, "j1", "acme"),
            [Expect(hgetall(LEGACY_KEY), [{}]), Expect(hgetall(LEGACY_KEY), [{}])])
    with pytest.raises(AssertionError, match="past the script's end"):
        run(ops.dequeue(ctx, timeout=None), [Expect(batch("dequeue"), [["empty"]])])


def test_a_range_read_with_scores_is_pairs_whichever_way_redis_py_parsed_it():
    # RESP2 (redis-py before 8, or a client asked for it) gives a raw WITHSCORES reply flat;
    # RESP3 gives pairs. list and the sweep read both.
    from jobstore.ops.records import score_pairs

    assert score_pairs(["a", "1.5", "b", "2"]) == [("a", "1.5"), ("b", "2")]
    assert score_pairs([["a", 1.5], ["b", 2.0]]) == [("a", 1.5), ("b", 2.0)]
    assert score_pairs([]) == [] and score_pairs(None) == []
