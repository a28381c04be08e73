"""A Redis that may evict keys is refused, and a migration state that vanished is not
silently replaced by the default phase.

Each policy runs on a redis-server of its own, started with ``--maxmemory-policy`` as an operator
would configure it; what a refused store sent is read from the server's command statistics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.support.cli import cli_runner

import jobstore
from jobstore import ConfigError, EvictionPolicyError, MigrationStateLost, StoreUnavailable, eviction
from jobstore.cli import main
from jobstore.migration import Migration
from tests.conftest import keys, need_redis_server
from tests.support.servers import RedisServer

EVICTING = ["allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl",
            "allkeys-lfu", "volatile-lfu", "volatile-random"]
# What a client may send before its first command (redis-py's handshake and health check).
HANDSHAKE = {"hello", "ping", "auth", "select", "client|setinfo"}


@pytest.fixture(scope="module")
def servers():
    """``servers(policy)``: a redis-server started with that maxmemory-policy, flushed, its
    command statistics reset; one per policy for the module, stopped after it."""
    need_redis_server()
    started: dict[str, RedisServer] = {}

    def get(policy: str, password: str | None = None) -> RedisServer:
        name = f"{policy}:{password}"
        if name not in started:
            started[name] = RedisServer(password, args=["--maxmemory-policy", policy]).start()
        server = started[name]
        admin = server.client(decode_responses=True)
        admin.flushall()
        admin.config_resetstat()
        return server

    yield get
    for server in started.values():
        server.stop()


def sent(server: RedisServer) -> dict[str, int]:
    """Commands the server ran since its statistics were reset, by name, with their calls."""
    stats = server.client(decode_responses=True).info("commandstats")
    return {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()
            if name != "cmdstat_config|resetstat"}


def sent_besides_handshake(server: RedisServer) -> set[str]:
    """Command names, without the handshake and the test's own DBSIZE."""
    return set(sent(server)) - HANDSHAKE - {"dbsize"}


# -- standalone ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", EVICTING)
@pytest.mark.parametrize("strategy", ["legacy", "dual"])
def test_a_store_refuses_an_evicting_redis_before_writing_anything(servers, policy, strategy):
    server = servers(policy)
    store = jobstore.open(server.url, strategy)
    with pytest.raises(EvictionPolicyError) as refused:
        store.enqueue("ws", "a", {"n": 1}, job_id="j1")
    assert isinstance(refused.value, ConfigError)
    assert refused.value.policy == policy
    assert refused.value.node == server.url
    message = str(refused.value)
    for words in (repr(policy), server.url, "noeviction", "CONFIG SET maxmemory-policy noeviction",
                  "redis.conf", "acknowledged jobs", "allow_eviction=True"):
        assert words in message
    assert server.client().dbsize() == 0
    assert sent_besides_handshake(server) == {"info"}  # only the check reached Redis
    # Not remembered as passed: every operation is refused, none writes.
    with pytest.raises(EvictionPolicyError):
        store.dequeue()
    with pytest.raises(EvictionPolicyError):
        store.enqueue_many([("ws", "a"), ("ws", "b")])
    assert server.client().dbsize() == 0
    assert sent_besides_handshake(server) == {"info"}
    store.close()


def test_the_error_never_shows_the_password(servers):
    server = servers("allkeys-lru", password="hunter2")
    store = jobstore.open(server.url, "legacy")
    with pytest.raises(EvictionPolicyError) as refused:
        store.get("j1", workspace_id="ws")
    assert "hunter2" not in str(refused.value) + refused.value.node
    assert "***" in refused.value.node and str(server.port) in refused.value.node


def test_noeviction_is_checked_once_per_store(servers):
    server = servers("noeviction")
    store = jobstore.open(server.url, "dual")
    job = store.enqueue("ws", "a", job_id="j1")
    assert store.get("j1", workspace_id="ws") == job
    assert store.dequeue().job_id == "j1"
    store.update_status("j1", "completed", workspace_id="ws")
    assert store.delete("j1", workspace_id="ws") is True
    assert sent(server)["info"] == 1
    server.client().config_resetstat()
    jobstore.open(server.url, "legacy").get("j1", workspace_id="ws")  # another store checks too
    assert sent(server)["info"] == 1


def test_threads_starting_together_check_once(servers):
    server = servers("noeviction")
    store = jobstore.open(server.url, "legacy")
    start = threading.Barrier(8)

    def first_operation():
        start.wait()
        return store.get("j1", workspace_id="ws")

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: first_operation(), range(8))) == [None] * 8
    assert sent(server)["info"] == 1


def test_allow_eviction_opts_out_and_sends_nothing_extra(servers):
    """The one INFO (for the server's version) is all the store adds, as without the opt-out."""
    server = servers("allkeys-lru")
    store = jobstore.open(server.url, "dual", allow_eviction=True)
    job = store.enqueue("ws", "a", job_id="j1")
    assert store.get("j1", workspace_id="ws") == job
    assert sent(server)["info"] == 1


def test_allow_eviction_must_be_a_bool():
    with pytest.raises(ConfigError, match="allow_eviction must be True or False"):
        jobstore.open("memory://", "legacy", allow_eviction="yes")


def test_a_policy_that_cannot_be_read_is_refused(servers):
    """An ACL user denied INFO: the policy is unknown, and unknown is not noeviction."""
    server = servers("noeviction")
    server.client().acl_setuser("app", enabled=True, passwords=["+s3cret"], keys=["*"],
                                commands=["+@all", "-info"])
    url = f"redis://app:s3cret@127.0.0.1:{server.port}/0"
    try:
        with pytest.raises(EvictionPolicyError, match="could not be read .*INFO was refused") as refused:
            jobstore.open(url, "legacy").enqueue("ws", "a")
        assert refused.value.policy is None and "s3cret" not in str(refused.value)
        assert server.client().dbsize() == 0
        assert jobstore.open(url, "legacy", allow_eviction=True).enqueue("ws", "a").action == "a"
    finally:
        server.client().acl_deluser("app")


def test_a_store_follows_a_policy_fixed_meanwhile(servers):
    server = servers("volatile-lru")
    store = jobstore.open(server.url, "legacy")
    with pytest.raises(EvictionPolicyError):
        store.enqueue("ws", "a", job_id="j1")
    server.client().config_set("maxmemory-policy", "noeviction")
    try:
        assert store.enqueue("ws", "a", job_id="j1").job_id == "j1"
    finally:
        server.client().config_set("maxmemory-policy", "volatile-lru")


def test_check_on_its_own(servers):
    lru = servers("allkeys-lru").client()
    with pytest.raises(EvictionPolicyError, match="allkeys-lru") as refused:
        eviction.check(lru, allow=False)
    assert refused.value.node == servers("allkeys-lru").url
    eviction.check(lru, allow=True)
    eviction.check(servers("noeviction").client(), allow=False)


def test_an_unreachable_redis_is_store_unavailable():
    store = jobstore.open("redis://:hunter2@127.0.0.1:1/0", "legacy",
                          client_options={"socket_connect_timeout": 0.5})
    with pytest.raises(StoreUnavailable) as down:
        store.get("j1", workspace_id="ws")
    assert "hunter2" not in str(down.value)
    with pytest.raises(StoreUnavailable):
        eviction.check(store.client, allow=False)


def test_memory_store_never_evicts_and_has_nothing_to_check():
    store = jobstore.open("memory://", "dual")
    job = store.enqueue("ws", "a", job_id="j1")
    assert store.get("j1", workspace_id="ws") == job
    eviction.check(store.client, allow=False)  # fakeredis has no INFO: nothing to check


# -- Redis Cluster -------------------------------------------------------------------------------


@pytest.mark.cluster
def test_a_cluster_store_refuses_when_one_primary_may_evict(cluster_url):
    admin = jobstore.open(cluster_url, "legacy").client
    node = sorted(admin.get_primaries(), key=lambda n: n.name)[1]
    server = admin.get_redis_connection(node)
    server.config_set("maxmemory-policy", "allkeys-lru")
    try:
        store = jobstore.open(cluster_url, "dual")
        with pytest.raises(EvictionPolicyError) as refused:
            store.enqueue("ws", "a", job_id="j1")
        assert refused.value.policy == "allkeys-lru" and refused.value.node == node.name
        assert node.name in str(refused.value)
        assert keys(admin) == []
        assert jobstore.open(cluster_url, "dual", allow_eviction=True).enqueue("ws", "a").action == "a"
    finally:
        server.config_set("maxmemory-policy", "noeviction")
    assert store.enqueue("ws", "a", job_id="j1").job_id == "j1"


# -- from the environment ------------------------------------------------------------------------


@pytest.mark.parametrize("value, allowed", [("1", True), ("true", True), ("YES", True), ("on", True),
                                            ("0", False), ("false", False), ("no", False),
                                            ("Off", False), ("", False)])
def test_from_env_reads_allow_eviction(servers, value, allowed):
    server = servers("allkeys-lru")
    store = jobstore.JobStore.from_env({"JOBSTORE_REDIS_URL": server.url,
                                        "JOBSTORE_ALLOW_EVICTION": value})
    assert store.allow_eviction is allowed
    if allowed:
        store.enqueue("ws", "a")
    else:
        with pytest.raises(EvictionPolicyError):
            store.enqueue("ws", "a")


def test_from_env_refuses_other_values_naming_the_variable():
    with pytest.raises(ConfigError, match="JOBSTORE_ALLOW_EVICTION='maybe'.*1, true, yes or on"):
        jobstore.JobStore.from_env({"JOBSTORE_REDIS_URL": "memory://",
                                    "JOBSTORE_ALLOW_EVICTION": "maybe"})


def test_an_explicit_option_wins_over_the_variable():
    store = jobstore.JobStore.from_env({"JOBSTORE_REDIS_URL": "memory://",
                                        "JOBSTORE_ALLOW_EVICTION": "1"}, allow_eviction=False)
    assert store.allow_eviction is False


# -- command line --------------------------------------------------------------------------------

MIGRATE = [["status"], ["phase", "off"], ["rollout", "--percent", "10"], ["backfill"],
           ["reverse-sync"], ["cleanup"], ["verify"]]


def cli(*args, url=None):
    environ = {k: v for k, v in os.environ.items() if k != "JOBSTORE_REDIS_URL"}
    if url:
        environ["JOBSTORE_REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "jobstore.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


class FakeLRU:
    """A client whose server reports allkeys-lru (to the one INFO of the check, pipelined)."""

    connection_pool = None

    def pipeline(self, transaction=False):
        return self

    def execute_command(self, *args):
        assert args == ("INFO",), args

    def execute(self, raise_on_error=True):
        return [{"maxmemory_policy": "allkeys-lru"}]


LRU_CLIENT = FakeLRU()


@pytest.mark.parametrize("command", MIGRATE, ids=lambda c: c[0])
def test_every_migrate_command_passes_allow_eviction(monkeypatch, command):
    """``--allow-eviction`` reaches ``open_migration``; without it, False. A refusal there
    (EvictionPolicyError) exits 2 like every configuration error, with the message."""
    seen = []

    def fake_open_migration(url, **options):
        seen.append(options["allow_eviction"])
        eviction.check(LRU_CLIENT, allow=options["allow_eviction"])
        raise SystemExit(0)  # stop here: the migration itself is not under test

    monkeypatch.setattr("jobstore.migration.open_migration", fake_open_migration)
    runner = cli_runner()
    allowed = runner.invoke(main, ["migrate", *command, "--url", "redis://x", "--allow-eviction"])
    assert allowed.exit_code == 0, allowed.output
    refused = runner.invoke(main, ["migrate", *command, "--url", "redis://x"])
    assert seen == [True, False]
    assert refused.exit_code == 2 and "maxmemory-policy 'allkeys-lru'" in refused.stderr


def test_demo_refuses_an_evicting_redis_and_allows_it_with_the_flag(servers):
    server = servers("allkeys-lru")
    refused = cli("demo", "--url", server.url, "--jobs", "20")
    assert refused.returncode == 2, refused.stderr
    assert "maxmemory-policy 'allkeys-lru'" in refused.stderr and "--allow-eviction" in refused.stderr
    assert server.client().dbsize() == 0
    allowed = cli("demo", "--url", server.url, "--jobs", "20", "--allow-eviction")
    assert allowed.returncode == 0, allowed.stderr
    assert "0 lost" in allowed.stdout


def test_migrate_refuses_an_evicting_redis_and_allows_it_with_the_flag(servers):
    server = servers("volatile-ttl")
    refused = cli("migrate", "phase", "off", url=server.url)
    assert refused.returncode == 2 and "maxmemory-policy 'volatile-ttl'" in refused.stderr
    assert server.client().dbsize() == 0
    allowed = cli("migrate", "phase", "off", "--allow-eviction", url=server.url)
    assert allowed.returncode == 0, allowed.stderr


# -- a migration state that vanished -------------------------------------------------------------


def following(url: str, phase: str):
    """A dual store following ``phase``, stored in Redis, and the migration that stored it."""
    store = jobstore.open(url, "dual")
    migration = Migration(store.client)
    steps = ("off", "dual-write", "read-target")
    for step in steps[: steps.index(phase) + 1]:
        migration.set_phase(step, wait=False, force=True, reason="test")
    store.get("warm", workspace_id="ws")  # reads the stored phase
    assert store.strategy.phase.value == phase
    return store, migration


def read_state_first(store) -> None:
    """Make the store's next operation read the state before it sends anything (as it does once
    its copy is a second old) instead of waiting that second."""
    store.strategy._fetched_at = None


def test_a_vanished_state_is_refused_naming_the_last_phase(backend):
    store, migration = following(backend, "dual-write")
    store.client.delete(store.strategy.state_key)
    read_state_first(store)
    with pytest.raises(MigrationStateLost) as lost:
        store.enqueue("ws", "a", job_id="j1")
    assert isinstance(lost.value, StoreUnavailable)
    assert lost.value.key == store.strategy.state_key and lost.value.phase == "dual-write"
    message = str(lost.value)
    assert store.strategy.state_key in message
    assert "jobstore migrate phase dual-write --force --reason" in message
    assert not store.client.exists("ai:jobs:j1", "ai:job:ws:j1")
    with pytest.raises(MigrationStateLost):  # every operation, until it is restored
        store.get("j1", workspace_id="ws")
    assert store.strategy.phase.value == "dual-write"  # no silent fall back to read-target

    migration.set_phase("dual-write", force=True, reason="restore lost state", wait=False)
    job = store.enqueue("ws", "a", job_id="j1")
    assert store.get("j1", workspace_id="ws") == job
    assert store.client.exists("ai:jobs:j1", "ai:job:ws:j1") == 2  # dual-write: both schemas


def test_a_vanished_state_found_by_a_read_riding_along_with_a_write(redis_url):
    """The state read rides along with the write (its copy is due, not overdue): the fence
    refuses the write, and the refresh that follows raises; nothing is written."""
    store, _ = following(redis_url, "dual-write")
    store.client.delete(store.strategy.state_key)
    store.strategy._fetched_at = time.monotonic() - 0.75  # due for a refresh, not overdue
    with pytest.raises(MigrationStateLost):
        store.enqueue("ws", "a", job_id="j1")
    assert not store.client.exists("ai:jobs:j1", "ai:job:ws:j1")


def test_a_write_that_landed_with_the_read_succeeds_and_the_next_operation_refuses(redis_url):
    """In read-target (the default phase) the fence lets the write through: it landed, so it
    succeeds; the next operation is refused."""
    store, _ = following(redis_url, "read-target")
    store.client.delete(store.strategy.state_key)
    store.strategy._fetched_at = time.monotonic() - 0.75
    job = store.enqueue("ws", "a", job_id="j1")
    assert store.client.exists("ai:jobs:j1", "ai:job:ws:j1") == 2
    with pytest.raises(MigrationStateLost, match="'read-target'"):
        store.get(job.job_id, workspace_id="ws")


def test_only_stores_that_followed_a_stored_phase_refuse(backend):
    """A store that never saw a stored state (none yet, or opened after it vanished) runs in
    the default phase, as before."""
    never = jobstore.open(backend, "dual")
    never.get("warm", workspace_id="ws")
    read_state_first(never)
    assert never.enqueue("ws", "a", job_id="j1").job_id == "j1"
    assert never.strategy.phase.value == "read-target"

    followed, _ = following(backend, "dual-write")
    followed.client.delete(followed.strategy.state_key)
    read_state_first(followed)
    with pytest.raises(MigrationStateLost):
        followed.get("j1", workspace_id="ws")
    opened_after = jobstore.open(backend, "dual")
    assert opened_after.get("j1", workspace_id="ws").job_id == "j1"
    assert opened_after.strategy.phase.value == "read-target"
    read_state_first(never)
    assert never.get("j1", workspace_id="ws").job_id == "j1"
