"""jobstore's own keys named apart from the records: ``own_prefix``.

A replaced system whose queue is ``ai:queue`` had no way in: that is jobstore's own queue key for
prefix ``ai``, and another prefix moved every record key too. ``own_prefix`` puts the queue,
indexes, leases, markers and migration state under a prefix of their own, and leaves the records
where the old system keeps them. Without it every key keeps today's name: existing data works
with no action.
"""

from __future__ import annotations

import pytest
import redis

import jobstore
from jobstore import JobStatus
from jobstore.migration import Migration
from tests.conftest import keys
from tests.support.old_queue import SimpleQueue
from tests.cli.test_cli import run

OWN = "jobstore"


def test_a_service_whose_queue_is_ai_queue_is_adopted_and_migrated(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    old = SimpleQueue(client, queue="ai:queue")
    store = jobstore.open(redis_url, "dual", own_prefix=OWN, legacy_queue="ai:queue")
    migration = store.migration()
    migration.set_phase("off")
    first = old.enqueue("acme", "a", {"n": 1})
    second = store.enqueue("acme", "b", {"n": 2})
    assert client.lrange("ai:queue", 0, -1) == [first, second.job_id]  # bare ids, shared
    assert old.dequeue() == first
    taken = store.dequeue()
    assert taken.job_id == second.job_id and taken.status is JobStatus.RUNNING
    # Under ai: only what the old system keeps (its records, its queue); the rest is jobstore's.
    assert keys(client, "ai:*") == sorted([f"ai:jobs:{first}", f"ai:jobs:{second.job_id}"])
    assert set(keys(client, f"{OWN}:*")) >= {f"{OWN}:index:{{acme}}",
                                             f"{OWN}:migration:{{legacy:workspace}}"}

    # The whole migration, the phase stored among jobstore's own keys, followed by the store.
    migration.set_phase("dual-write")
    assert store.strategy.state_key == f"{OWN}:migration:{{legacy:workspace}}"
    assert migration.backfill().counts == {"copied": 2}
    assert migration.verify().clean
    assert store.leave_legacy_queue() == {"moved": 0, "dropped": 0, "remaining": 0}
    assert client.hget(f"{OWN}:queue:mode", "mode") == "left"
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    assert migration.cleanup().counts == {"deleted": 2}
    third = store.enqueue("acme", "c")
    assert store.dequeue().job_id == third.job_id
    assert store.get(second.job_id, workspace_id="acme").status is JobStatus.RUNNING
    assert not keys(client, "ai:jobs:*") and client.llen("ai:queue") == 0


def test_every_operation_works_under_an_own_prefix(make_store):
    store = make_store("dual", own_prefix=OWN, phase="read-target")
    job = store.enqueue("acme", "a", {"n": 1})
    assert store.list("acme") == [job]
    taken = store.dequeue()
    store.extend(taken)
    done = store.update_status(job.job_id, "completed", workspace_id="acme", claim=taken.claim)
    assert store.get(job.job_id, workspace_id="acme") == done
    assert store.delete(job.job_id, workspace_id="acme")
    names = keys(store.client)
    assert names and all(k.startswith(f"{OWN}:") for k in names), names  # records deleted


def test_without_own_prefix_the_keys_keep_today_s_names(make_store):
    """Existing stores: nothing to do. One opened with own_prefix equal to the prefix is the
    same store."""
    before = make_store("legacy")
    job = before.enqueue("acme", "a")
    assert before.client.exists("ai:index:{acme}") and before.client.llen("ai:queue") == 1
    after = make_store("legacy", own_prefix="ai")
    assert after.list("acme") == [job] and after.dequeue().job_id == job.job_id


@pytest.mark.parametrize("options, refused", [
    ({"legacy_queue": "ai:queue"}, r"own_prefix='jobstore' \(JOBSTORE_OWN_PREFIX"),
    ({"legacy_queue": "ai:leases:{ai:queue}"}, "lies among jobstore's own keys"),
    ({"own_prefix": OWN, "legacy_queue": f"{OWN}:queue"}, "choose another own_prefix"),
    ({"legacy_queue": "ai:jobs:queue"}, "a record key of schema 'legacy'"),
    ({"own_prefix": "ai:own"}, "own_prefix 'ai:own' and the key prefix 'ai'"),
    ({"own_prefix": "svc", "prefix": "svc:ai"}, "neither inside the other"),
    ({"own_prefix": "a b"}, "own_prefix 'a b' must be segments"),
    ({"own_prefix": 7}, "own_prefix 7"),
])
def test_own_keys_and_records_never_share_a_name(redis_url, options, refused):
    with pytest.raises(jobstore.ConfigError, match=refused):
        jobstore.open(redis_url, "legacy", **options)


def test_an_own_prefix_inside_the_records_is_refused_by_the_migration_too(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(jobstore.ConfigError, match="own_prefix 'ai:x'"):
        Migration(client, own_prefix="ai:x")


def test_the_environment_and_the_command_line_name_it_too(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {"JOBSTORE_REDIS_URL": redis_url, "JOBSTORE_OWN_PREFIX": OWN,
           "JOBSTORE_LEGACY_QUEUE": "ai:queue", "JOBSTORE_STRATEGY": "dual"}
    store = jobstore.JobStore.from_env(env)
    assert (store.own_prefix, store.keys.queue) == (OWN, f"{OWN}:queue")
    done = run("migrate", "phase", "off", "--own-prefix", OWN, url=redis_url)
    assert done.returncode == 0, done.stderr
    assert client.hget(f"{OWN}:migration:{{legacy:workspace}}", "phase") == "off"
    assert not client.exists("ai:migration:{legacy:workspace}")
    shown = run("migrate", "status", "--json", url=redis_url, env={"JOBSTORE_OWN_PREFIX": OWN})
    assert shown.returncode == 0 and '"phase": "off"' in shown.stdout, shown.stdout
    store.enqueue("acme", "a")
    assert store.strategy.phase.value == "off"  # the store follows the phase the CLI stored
    client.rpush("ai:queue", "ghost")  # an id whose job does not exist: left for the command
    left = run("legacy-queue", "leave", "--legacy-queue", "ai:queue", "--json", url=redis_url,
               env={"JOBSTORE_OWN_PREFIX": OWN})
    assert left.returncode == 0, left.stderr
    assert client.hget(f"{OWN}:queue:mode", "mode") == "left" and not client.exists("ai:queue:mode")


def test_a_migration_keeps_its_state_under_the_own_prefix(make_store):
    legacy = make_store("legacy", own_prefix=OWN)
    jobs = legacy.enqueue_many([(f"ws{i % 3}", "a", {"i": i}) for i in range(9)])
    dual = make_store("dual", own_prefix=OWN)
    migration = dual.migration()
    migration.set_phase("off")
    migration.set_phase("dual-write")
    assert migration.backfill().counts == {"copied": 9}
    assert migration.verify().clean
    migration.set_phase("read-target")
    assert dual.get(jobs[0].job_id, workspace_id="ws0") == jobs[0]
    assert dual.strategy.phase.value == "read-target"  # followed from jobstore:migration:...
    names = keys(dual.client)
    assert f"{OWN}:migration:{{legacy:workspace}}" in names
    assert [k for k in names if not k.startswith((f"{OWN}:", "ai:jobs:", "ai:job:"))] == []
    assert "own keys jobstore" in migration.label
