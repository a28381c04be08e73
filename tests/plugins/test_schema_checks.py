"""Schemas that compute their keys, and the checks every schema passes when it is
registered and when a store opens it.

A computed schema (no ``key_format``: ``job_key``, ``parse_key``, ``scan_pattern``) used to
register, enqueue, read, verify clean and migrate, and then ``dequeue`` silently dropped every
queue entry, because the dequeue script rebuilt record keys from the template. Now a queue entry
carries the keys the script cannot build (or the store computes them and asks again), and a
schema that cannot work is refused up front, naming the plugin, the method and a counter-example.
"""

from __future__ import annotations

import itertools
import os
import re
import zlib

import pytest

import jobstore
from jobstore import KeySchema, PluginError, plugins
from jobstore.schema import SAMPLE_JOBS, SAMPLE_WORKSPACES, glob_regex
from jobstore.ops import queue as ops_queue
from tests.plugins.test_plugins import extra_plugin, make_plugin  # noqa: F401 - the fixture

ID = r"[A-Za-z0-9_.\-]{1,128}"


class Buckets(KeySchema):
    """A computed schema (the bucketed plugin's layout), written here so that the tests do not
    depend on the plugin package."""

    name = "buckets"

    def job_key(self, workspace_id, job_id):
        return f"{self.prefix}:bk:{zlib.crc32(workspace_id.encode()) % 16:02x}:{workspace_id}:{job_id}"

    def parse_key(self, key):
        head = f"{self.prefix}:bk:"
        match = re.fullmatch(rf"[0-9a-f]{{2}}:({ID}):({ID})", key[len(head):]) if key.startswith(head) else None
        if match is None or self.job_key(*match.groups()) != key:
            return None
        return match.groups()

    def scan_pattern(self):
        return f"{self.prefix}:bk:*"


# -- broken variants: each refused at registration, with the method and a counter-example -------

class IgnoresWorkspace(Buckets):
    name = "ignores-ws"

    def job_key(self, workspace_id, job_id):
        return f"{self.prefix}:bk:00:w:{job_id}"  # every workspace's job in one key

    def parse_key(self, key):
        match = re.fullmatch(rf"{re.escape(self.prefix)}:bk:00:w:({ID})", key)
        return ("w", match[1]) if match else None


class FoldsCase(Buckets):
    name = "folds-case"

    def parse_key(self, key):  # workspace 'Acme' would vanish after target-only
        parsed = super().parse_key(key)
        return parsed and (parsed[0].lower(), parsed[1])


class TooWide(Buckets):
    name = "too-wide"

    def scan_pattern(self):
        return f"{self.prefix}:*"


class Unstable(Buckets):
    name = "unstable"
    calls = itertools.count()

    def job_key(self, workspace_id, job_id):
        return f"{self.prefix}:bk:{next(self.calls) % 16:02x}:{workspace_id}:{job_id}"


class Truncates(Buckets):
    name = "truncates"

    def job_key(self, workspace_id, job_id):
        return super().job_key(workspace_id, job_id[:64])


class OverridesOnlyJobKey(KeySchema):
    name = "half-computed"
    key_format = "${prefix}:half:${workspace_id}:${job_id}"

    def job_key(self, workspace_id, job_id):
        return f"{self.prefix}:half:{workspace_id.upper()}:{job_id}"


class ShadowsWorkspace(Buckets):
    name = "shadows"

    def job_key(self, workspace_id, job_id):
        return f"{self.prefix}:job:{workspace_id}:x{job_id}"

    def parse_key(self, key):
        match = re.fullmatch(rf"{re.escape(self.prefix)}:job:({ID}):x({ID})", key)
        return (match[1], match[2]) if match else None

    def scan_pattern(self):
        return f"{self.prefix}:job:*"  # also every key of the built-in 'workspace' schema


class ByWorkspaceUnscoped(Buckets):
    """Keyed through the workspace, parsed back without it: a job of one id per store whose key
    changes with the workspace it is asked for in."""

    name = "unscoped-by-ws"

    def parse_key(self, key):
        parsed = super().parse_key(key)
        return parsed and (None, parsed[1])


BROKEN = [
    (IgnoresWorkspace, "parse_key", "is not job_key's inverse"),
    (FoldsCase, "parse_key", "is not job_key's inverse"),
    (TooWide, "scan_pattern", "jobstore's own key"),
    (Unstable, "job_key", "different key on a second call"),
    (Truncates, "parse_key", "is not job_key's inverse"),
    (OverridesOnlyJobKey, "parse_key", "is not job_key's inverse"),
    (ShadowsWorkspace, "scan_pattern", "schema 'workspace'"),
    (ByWorkspaceUnscoped, "job_key", "depends on the workspace, but parse_key gives none"),
]


@pytest.mark.parametrize("schema, method, problem", BROKEN, ids=[b[0].name for b in BROKEN])
def test_a_schema_that_cannot_work_is_refused_at_registration(extra_plugin, schema, method,
                                                              problem):
    extra_plugin(make_plugin(schema), "acme-schemas")
    with pytest.raises(PluginError) as refused:
        jobstore.strategies()
    message = str(refused.value)
    assert f"schema {schema.name!r} (plugin 'acme-schemas')" in message
    assert f": {method}: " in message and problem in message
    assert "counter-example: workspace_id=" in message


# -- keys that are not a function of the prefix and the ids -------------------------------------

class SaltedBuckets(Buckets):
    """Buckets by Python's hash(): salted per process, so another process computes other keys."""

    name = "salted"

    def job_key(self, workspace_id, job_id):
        return f"{self.prefix}:bk:{hash(workspace_id) % 16:02x}:{workspace_id}:{job_id}"


class EnvShards(Buckets):
    """Reads its shard count from the environment: processes configured apart disagree."""

    name = "env-shards"

    def job_key(self, workspace_id, job_id):
        shards = int(os.environ.get("ACME_SHARDS", "4"))
        return f"{self.prefix}:bk:{zlib.crc32(workspace_id.encode()) % shards:02x}:{workspace_id}:{job_id}"


class NeedsEnv(Buckets):
    """Cannot even be built without its environment variable."""

    name = "needs-env"

    def __init__(self, prefix="ai"):
        self.region = os.environ["ACME_REGION"]
        super().__init__(prefix)


@pytest.mark.parametrize("schema", [SaltedBuckets, EnvShards], ids=lambda s: s.name)
def test_keys_another_process_computes_otherwise_are_refused_at_registration(
        extra_plugin, monkeypatch, schema):
    # This process is configured (ACME_SHARDS=8: keys differ from the default's 4 for most
    # workspaces); a process without that configuration would look elsewhere for every job.
    monkeypatch.setenv("ACME_SHARDS", "8")
    monkeypatch.setenv("ACME_REGION", "eu")
    extra_plugin(make_plugin(schema), "acme-schemas")
    with pytest.raises(PluginError) as refused:
        jobstore.strategies()
    message = str(refused.value)
    assert f"schema {schema.name!r} (plugin 'acme-schemas')" in message
    assert "in a second Python process" in message and "docs/plugins.md#configuration" in message
    assert ": job_key: gives another key" in message and "counter-example: workspace_id=" in message


def test_a_schema_a_second_process_cannot_build_is_logged_at_registration_refused_by_the_kit(
        extra_plugin, monkeypatch, caplog):
    """Not a verdict on its keys (a plugin module may read the environment for other reasons):
    registration warns and goes on, so an upgrade never stops every store; the kit refuses."""
    from jobstore.determinism import check_across_processes

    monkeypatch.setenv("ACME_REGION", "eu")
    extra_plugin(make_plugin(NeedsEnv), "acme-schemas")
    assert "needs-env" in {row.name for row in jobstore.strategies()}
    assert "KeyError: 'ACME_REGION'" in caplog.text and "needs-env" in caplog.text
    with pytest.raises(PluginError, match="KeyError: 'ACME_REGION'"):
        check_across_processes([(NeedsEnv("ai"), "acme-schemas")], strict=True)


class Sixteen(Buckets):
    """The count fixed in the class, so part of the schema's identity: 16 shards is this schema,
    another count would be another schema (and a migration between the two)."""

    name = "sixteen"
    shards = 16

    def job_key(self, workspace_id, job_id):
        bucket = zlib.crc32(workspace_id.encode()) % self.shards
        return f"{self.prefix}:sx:{bucket:02x}:{workspace_id}:{job_id}"

    def parse_key(self, key):
        match = re.fullmatch(rf"{re.escape(self.prefix)}:sx:[0-9a-f]{{2}}:({ID}):({ID})", key)
        return (match[1], match[2]) if match and self.job_key(match[1], match[2]) == key else None

    def scan_pattern(self):
        return f"{self.prefix}:sx:*"


def test_a_schema_configured_in_its_class_passes_in_every_process(extra_plugin, monkeypatch):
    monkeypatch.setenv("ACME_SHARDS", "8")  # read by no schema here: changes nothing
    extra_plugin(make_plugin(Sixteen, Buckets), "acme-schemas")
    assert {"sixteen", "buckets"} <= {row.name for row in jobstore.strategies()}


def test_the_second_interpreter_is_asked_once_per_class_and_can_be_skipped(extra_plugin, monkeypatch):
    from jobstore import determinism

    calls = []
    real = determinism._ask
    monkeypatch.setattr(determinism, "_ask", lambda asked, strict: calls.append(
        [s.name for s, _ in asked]) or real(asked, strict))
    determinism._passed.clear()
    extra_plugin(make_plugin(Buckets), "acme-schemas")
    jobstore.strategies()
    assert calls[-1] == ["bucketed", "buckets"]  # every computed schema, one interpreter
    plugins.reset()
    jobstore.strategies()
    assert len(calls) == 1  # the verdicts are kept for the process
    monkeypatch.setenv("JOBSTORE_SCHEMA_CHECK", "local")
    extra_plugin(make_plugin(SaltedBuckets), "acme-schemas")
    assert "salted" in {row.name for row in jobstore.strategies()}
    assert len(calls) == 1


def test_a_schema_no_second_interpreter_can_import_is_logged_not_refused(extra_plugin, caplog):
    class Local(Buckets):
        name = "local"

    extra_plugin(make_plugin(Local), "acme-schemas")
    assert "local" in {row.name for row in jobstore.strategies()}
    assert "defined inside a function" in caplog.text
    from jobstore.determinism import check_across_processes

    with pytest.raises(PluginError, match="defined inside a function"):  # the kit's strict form
        check_across_processes([(Local("ai"), "acme-schemas")], strict=True)


@pytest.mark.parametrize("order", ["wide first", "narrow first"])
def test_overlapping_schemas_are_refused_whichever_registers_first(extra_plugin, order):
    class Narrow(Buckets):  # its own keys sit under Buckets' pattern 'ai:bk:*'
        name = "narrow"

        def job_key(self, workspace_id, job_id):
            return f"{self.prefix}:bk:zz:{workspace_id}:{job_id}"

        def parse_key(self, key):
            match = re.fullmatch(rf"{re.escape(self.prefix)}:bk:zz:({ID}):({ID})", key)
            return (match[1], match[2]) if match else None

        def scan_pattern(self):
            return f"{self.prefix}:bk:zz:*"

    schemas = (Buckets, Narrow) if order == "wide first" else (Narrow, Buckets)
    extra_plugin(make_plugin(*schemas), "acme-schemas")
    with pytest.raises(PluginError, match=r"'narrow'.*'buckets'|'buckets'.*'narrow'") as refused:
        jobstore.strategies()
    assert "scan_pattern" in str(refused.value)


def test_the_case_folding_counter_example_is_a_mixed_case_workspace(extra_plugin):
    extra_plugin(make_plugin(FoldsCase), "acme-schemas")
    with pytest.raises(PluginError, match=r"workspace_id='W'"):
        jobstore.strategies()


def test_a_schema_with_neither_a_format_nor_the_methods_is_refused(extra_plugin):
    class Nothing(KeySchema):
        name = "nothing"

        def job_key(self, workspace_id, job_id):
            return f"{self.prefix}:n:{job_id}"

    extra_plugin(make_plugin(Nothing), "acme-schemas")
    with pytest.raises(PluginError, match="missing: parse_key, scan_pattern"):
        jobstore.strategies()


def test_a_schema_that_breaks_only_under_another_prefix_is_refused_at_open(extra_plugin):
    class PrefixBlind(Buckets):
        name = "prefix-blind"

        def parse_key(self, key):
            return super().parse_key(key) if self.prefix == "ai" else None

    extra_plugin(make_plugin(PrefixBlind), "acme-schemas")
    assert "prefix-blind" in {row.name for row in jobstore.strategies()}
    jobstore.open("memory://", "prefix-blind")
    with pytest.raises(PluginError, match="parse_key"):
        jobstore.open("memory://", "prefix-blind", prefix="svc")


def test_the_built_in_and_example_schemas_pass():
    for name in ("legacy", "workspace", "hashtag", "bucketed"):
        for prefix in ("ai", "svc:jobs", "a-b.c"):
            plugins.get_registry().schema(name, prefix)  # raises if not


def test_the_glob_is_redis_s():
    match = lambda pattern, key: bool(glob_regex(pattern).fullmatch(key))  # noqa: E731
    assert match("ai:job:*:*", "ai:job:w:j") and not match("ai:job:*:*", "ai:jobs:j")
    assert match("ai:{*}:job:*", "ai:{w}:job:j")
    assert match(r"ai:\*[^a]?", "ai:*bz") and not match(r"ai:\*[^a]?", "ai:*az")
    assert match("a[b-d]", "ac") and not match("a[b-d]", "ae")


def test_samples_cover_the_alphabet_both_cases_and_every_length_class():
    for samples in (SAMPLE_WORKSPACES, SAMPLE_JOBS):
        assert set("".join(samples)) == set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
        assert {1, 128} <= {len(s) for s in samples} and any(30 < len(s) < 128 for s in samples)


# -- a computed schema at work ----------------------------------------------------------------

@pytest.fixture
def buckets(extra_plugin):
    extra_plugin(make_plugin(Buckets), "buckets-plugin")


@pytest.mark.usefixtures("buckets")
def test_a_computed_schema_stores_reads_and_dequeues(make_store):
    store = make_store("buckets")
    jobs = [store.enqueue(f"Ws{i % 3}", "a", {"i": i}) for i in range(12)]
    key = Buckets("ai").job_key("Ws1", jobs[1].job_id)
    assert store.client.hget(key, "job_id") == jobs[1].job_id
    assert store.get(jobs[1].job_id, workspace_id="Ws1") == jobs[1]
    assert store.get(jobs[1].job_id, workspace_id="Ws2") is None
    handed = [store.dequeue() for _ in jobs]
    assert [job.job_id for job in handed] == [job.job_id for job in jobs]  # none dropped
    assert store.dequeue() is None
    assert store.list("Ws1", status="running", limit=100) != []


@pytest.mark.usefixtures("buckets")
def test_entries_enqueued_before_the_migration_are_dequeued_from_the_computed_keys(make_store):
    # 5,545 of 5,547 pending jobs were never handed out after a migration to a computed schema:
    # their queue entries (written by legacy stores) carried no computed key.
    legacy = make_store("legacy")
    jobs = [legacy.enqueue(f"Ws{i % 4}", "a") for i in range(40)]
    migration = jobstore.Migration(legacy.client, target="buckets")
    dual = jobstore.JobStore(legacy.client, "dual", target="buckets")
    migration.set_phase("dual-write")
    during = [dual.enqueue("Ws9", "b") for _ in range(5)]  # these carry the computed key
    migration.backfill()
    assert migration.verify().clean
    migration.set_phase("read-target")
    migration.set_phase("target-only")
    migration.cleanup()

    handed = []
    while (job := dual.dequeue(timeout=0)) is not None:
        handed.append(job.job_id)

    assert handed == [job.job_id for job in [*jobs, *during]]
    for job in jobs[:3]:
        key = Buckets("ai").job_key(job.workspace_id, job.job_id)
        assert legacy.client.hget(key, "status") == "running"
    assert not legacy.client.keys("ai:jobs:*")


@pytest.mark.usefixtures("buckets")
def test_a_blocking_dequeue_takes_an_old_entry_from_the_computed_keys(make_store):
    legacy = make_store("legacy")
    migration = jobstore.Migration(legacy.client, target="buckets")
    migration.set_phase("dual-write")
    dual = jobstore.JobStore(legacy.client, "dual", target="buckets")
    old = legacy.enqueue("Ws1", "a")  # a legacy process, still running beside the dual fleet
    migration.backfill()
    got = dual.dequeue(timeout=2)
    assert got.job_id == old.job_id
    for key in (f"ai:jobs:{old.job_id}", Buckets("ai").job_key("Ws1", old.job_id)):
        assert legacy.client.hget(key, "status") == "running"


@pytest.mark.usefixtures("buckets")
def test_a_job_failed_at_max_attempts_expires_its_computed_copy_its_entry_does_not_name(
        make_store):
    # A job enqueued before the migration (its entry carries no computed key), copied by the
    # backfill and handed out in dual-write; after a rollback to off its last lease runs out:
    # the dequeue that fails it reads the source copy only, and the computed copy, whose key
    # the store computes for it, expires with it.
    legacy = make_store("legacy")
    job = legacy.enqueue("Ws1", "a", ttl=3600)
    migration = jobstore.Migration(legacy.client, target="buckets")
    migration.set_phase("dual-write")
    migration.backfill()
    dual = jobstore.JobStore(legacy.client, "dual", target="buckets", max_attempts=1)
    claimed = dual.dequeue()
    assert claimed.job_id == job.job_id
    rolled = jobstore.JobStore(legacy.client, "dual", target="buckets", phase="off",
                               max_attempts=1)
    legacy.client.zadd(legacy.keys.leases, {claimed.claim: 0})  # its last lease ran out
    assert rolled.dequeue() is None
    source, computed = f"ai:jobs:{job.job_id}", Buckets("ai").job_key("Ws1", job.job_id)
    assert legacy.client.hget(source, "status") == "failed"
    assert 0 < legacy.client.pttl(computed) <= legacy.client.pttl(source) + 1000


@pytest.mark.usefixtures("buckets")
@pytest.mark.parametrize("wait", [False, True])
def test_finish_fails_an_old_entry_job_and_expires_its_computed_copy(make_store, wait):
    """finish (and a waiting dequeue) failing, at max_attempts, a job whose entry predates the
    computed schema: its computed copy, not read in phase off, expires with it."""
    legacy = make_store("legacy")
    x = legacy.enqueue("Ws1", "a", ttl=3600)
    w = legacy.enqueue("Ws1", "b")
    migration = jobstore.Migration(legacy.client, target="buckets")
    migration.set_phase("dual-write")
    migration.backfill()
    dual = jobstore.JobStore(legacy.client, "dual", target="buckets", max_attempts=1)
    cx = dual.dequeue()
    cw = dual.dequeue()
    assert (cx.job_id, cw.job_id) == (x.job_id, w.job_id)
    rolled = jobstore.JobStore(legacy.client, "dual", target="buckets", phase="off",
                               max_attempts=1)
    legacy.client.zadd(legacy.keys.leases, {cx.claim: 0})
    if wait:
        assert rolled.dequeue(timeout=0.2) is None
    else:
        assert rolled.finish(cw, result={"ok": 1}) is None
    source, computed = f"ai:jobs:{x.job_id}", Buckets("ai").job_key("Ws1", x.job_id)
    assert legacy.client.hget(source, "status") == "failed"
    assert 0 < legacy.client.pttl(computed) <= legacy.client.pttl(source) + 1000


@pytest.mark.usefixtures("buckets")
def test_no_resolve_round_trip_when_the_failed_job_sets_no_expiry(make_store, monkeypatch):
    """The other copies' keys are asked for only when the failed job expires: without a
    retention, no 'need' reply and no second call."""
    legacy = make_store("legacy")
    x = legacy.enqueue("Ws1", "a")  # no ttl, no finished_ttl: nothing will expire
    migration = jobstore.Migration(legacy.client, target="buckets")
    migration.set_phase("dual-write")
    migration.backfill()
    dual = jobstore.JobStore(legacy.client, "dual", target="buckets", max_attempts=1)
    cx = dual.dequeue()
    rolled = jobstore.JobStore(legacy.client, "dual", target="buckets", phase="off",
                               max_attempts=1)
    legacy.client.zadd(legacy.keys.leases, {cx.claim: 0})
    calls = []
    real = ops_queue.resolve
    monkeypatch.setattr(ops_queue, "resolve", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert rolled.dequeue() is None
    assert legacy.client.hget(f"ai:jobs:{x.job_id}", "status") == "failed"
    assert calls == []
