"""The servers and redis-py jobstore runs on, and "Errors that tell the
truth": an old server, a refused login, a database the server lacks and a command it lacks are
each reported as what they are, before anything is written.

A server older than Redis 6.2 cannot be started here, so its INFO reply is made to say one:
the check reads nothing else. A server that lacks a command is a real one with the command
renamed away. The embedded ``memory://`` store has no INFO, no login and one database: nothing
here applies to it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import jobstore
from jobstore import (AuthenticationFailed, ConfigError, EvictionPolicyError, RedisCommandError,
                      StoreUnavailable, UnsupportedServer, eviction)
from tests.conftest import keys, need_redis_server
from tests.support.servers import RedisServer, add_all_slots, wait_cluster_ok

pytestmark = pytest.mark.core


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def real_url(request) -> str:
    return request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")


def pretend(store_client, **fields) -> None:
    """Make every INFO reply ``store_client`` reads (each Cluster node's too) say ``fields``:
    with a ``redis_version``, those of an old Redis (Valkey's own fields dropped). The parser
    of INFO replies is wrapped, so whichever way the reply comes (alone or pipelined) says so."""
    drop = {"valkey_version", "server_name"} if "redis_version" in fields else set()
    if hasattr(store_client, "get_nodes"):  # Cluster: each node's own client parses its replies
        targets = [node.redis_connection for node in store_client.get_nodes()]
    else:
        targets = [store_client]
    for target in targets:
        real = target.response_callbacks["INFO"]

        def info(response, real=real, **kwargs):
            reply = real(response, **kwargs)
            return {**{k: v for k, v in reply.items() if k not in drop}, **fields}

        target.response_callbacks["INFO"] = info


def admin_keys(url: str) -> list[str]:
    with jobstore.open(url, "legacy", allow_eviction=True) as admin:
        return keys(admin.client)


@pytest.mark.parametrize("allow_eviction", [False, True])
@pytest.mark.parametrize("strategy", ["legacy", "workspace", "dual"])
def test_a_server_older_than_6_2_is_refused_before_anything_is_written(real_url, strategy,
                                                                        allow_eviction):
    store = jobstore.open(real_url, strategy, allow_eviction=allow_eviction)
    pretend(store.client, redis_version="5.0.14")
    for operation in (lambda: store.enqueue("ws", "a", job_id="j1"),
                      lambda: store.dequeue(timeout=0.2),
                      lambda: store.enqueue_many([("ws", "a")])):
        with pytest.raises(UnsupportedServer) as refused:
            operation()
        assert isinstance(refused.value, ConfigError)
        assert (refused.value.found, refused.value.needed) == ("Redis 5.0.14", "6.2")
        assert "Redis 5.0.14" in str(refused.value) and "Redis 6.2 or later" in str(refused.value)
    assert admin_keys(real_url) == []
    store.close()


def test_a_migration_on_an_old_server_is_refused_before_it_writes(real_url):
    migration = jobstore.open_migration(real_url)
    pretend(migration.client, redis_version="6.0.20")
    with pytest.raises(UnsupportedServer, match="Redis 6.0.20 .* too old"):
        migration.set_phase("dual-write")
    assert admin_keys(real_url) == []


def test_the_versions_found_are_named_as_the_server_names_itself():
    assert eviction.version({"redis_version": "6.2.14"}) == ("Redis 6.2.14", (6, 2, 14))
    # Valkey reports the Redis it is compatible with (7.2.4) beside its own version.
    assert eviction.version({"redis_version": "7.2.4", "valkey_version": "8.1.8",
                             "server_name": "valkey"}) == ("Valkey 8.1.8", (7, 2, 4))
    assert eviction.version({"redis_version": "255.255.255"})[1] == (255, 255, 255)
    assert eviction.version({})[1] is None  # no version: not refused for it


def test_the_real_servers_version_passes(real_url):
    store = jobstore.open(real_url, "dual")
    pretend(store.client)  # nothing changed: what the server really says
    assert store.enqueue("ws", "a", job_id="j1").job_id == "j1"


# -- a command the server lacks ------------------------------------------------------------------

NO_BLMOVE = ["--rename-command", "BLMOVE", ""]


@pytest.fixture(scope="module")
def redis_without_blmove():
    need_redis_server()
    server = RedisServer(args=NO_BLMOVE).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster_without_blmove():
    """A one-node Redis Cluster (every slot on one node) whose BLMOVE is renamed away."""
    need_redis_server()
    server = RedisServer(args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                               *NO_BLMOVE], need_bus=True).start()
    try:
        add_all_slots(server.client())
        wait_cluster_ok(server.client())
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("where", ["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def test_a_command_the_server_lacks_is_a_redis_command_error_naming_what_is_needed(
        request, where):
    server = request.getfixturevalue(f"{where}_without_blmove")
    url = server.url if where == "redis" else f"redis+cluster://127.0.0.1:{server.port}"
    with jobstore.open(url, "dual", phase="dual-write") as store:
        job = store.enqueue("ws", "a")  # scripts and LMOVE work: only the wait needs BLMOVE
        assert store.dequeue().job_id == job.job_id
        with pytest.raises(RedisCommandError) as refused:
            store.dequeue(timeout=0.2)  # an empty queue: a worker waits, with BLMOVE
        assert "BLMOVE" in str(refused.value).upper()
        assert "Redis 6.2 or later" in str(refused.value)


# -- a refused login, a database the server lacks -----------------------------------------------


@pytest.fixture(scope="module")
def password_server():
    need_redis_server()
    server = RedisServer("s3cret-pw").start()
    yield server
    server.stop()


def cli(*args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "JOBSTORE_REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "jobstore.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


@pytest.mark.parametrize("allow_eviction", [False, True])
def test_a_wrong_or_missing_password_is_a_config_error_not_an_outage(password_server,
                                                                     allow_eviction):
    port = password_server.port
    for url in (f"redis://:wrong-pw@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0",
                f"redis://127.0.0.1:{port}/0?password=wrong-pw"):
        store = jobstore.open(url, "dual", allow_eviction=allow_eviction)
        with pytest.raises(AuthenticationFailed) as refused:
            store.enqueue("ws", "a")
        assert isinstance(refused.value, ConfigError)
        assert not isinstance(refused.value, StoreUnavailable)
        assert "credentials" in str(refused.value) and "wrong-pw" not in str(refused.value)
        store.close()
    out = cli("migrate", "status", "--url", f"redis://:wrong-pw@127.0.0.1:{port}/0")
    assert out.returncode == 2, out.stdout + out.stderr  # a configuration error, not 3
    assert "credentials" in out.stderr and "wrong-pw" not in out.stdout + out.stderr


@pytest.mark.cluster
def test_a_wrong_password_on_cluster_is_a_config_error(cluster_url):
    nodes = cluster_url.removeprefix("redis+cluster://")
    admin = jobstore.open(cluster_url, "legacy").client
    admin.execute_command("ACL", "SETUSER", "alice", "on", ">right-pw", "~*", "&*", "+@all",
                          target_nodes=admin.ALL_NODES)
    try:
        with pytest.raises(AuthenticationFailed) as refused:
            jobstore.open(f"redis+cluster://alice:wrong-pw@{nodes}", "workspace")
        assert "wrong-pw" not in str(refused.value) and "***" in str(refused.value)
        with jobstore.open(f"redis+cluster://alice:right-pw@{nodes}", "workspace") as store:
            assert store.enqueue("ws", "a").action == "a"
    finally:
        admin.execute_command("ACL", "DELUSER", "alice", target_nodes=admin.ALL_NODES)


@pytest.mark.parametrize("allow_eviction", [False, True])
def test_a_database_the_server_lacks_is_a_config_error_saying_so(password_server,
                                                                 allow_eviction):
    url = f"redis://:s3cret-pw@127.0.0.1:{password_server.port}/99"
    store = jobstore.open(url, "legacy", allow_eviction=allow_eviction)
    with pytest.raises(ConfigError) as refused:
        store.enqueue("ws", "a")
    assert not isinstance(refused.value, EvictionPolicyError)
    assert "no such database" in str(refused.value) and "/99" in str(refused.value)
    assert "maxmemory" not in str(refused.value) and "s3cret" not in str(refused.value)
    out = cli("migrate", "status", "--url", url)
    assert out.returncode == 2 and "no such database" in out.stderr, out.stdout + out.stderr


# -- docs/compatibility.md is what CI runs ------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_the_compatibility_page_says_what_ci_runs_and_the_metadata_allows():
    import re

    from jobstore.driver import MINIMUM

    page, ci, pyproject, readme = (read("docs/compatibility.md"), read(".ci/run"),
                                   read("pyproject.toml"), read("README.md"))
    # The redis-py floor: the metadata's, the page's, the one .ci/run reads (from the metadata).
    floor = re.search(r'"redis>=([0-9.]+)"', pyproject).group(1)
    assert f"{floor} (the floor: `redis>={floor}`)" in page
    assert 'redis>=\\([0-9.]*\\)' in ci and '"redis==$floor"' in ci
    # ... on the Python floor, with every runtime dependency's floor, each in the page's table.
    assert "requires-python" in ci and '"$floor_python" -m venv .venv-floor' in ci
    assert '["project"]["dependencies"]' in ci and "$floors" in ci
    for name, low in re.findall(r'^    "([a-z-]+)>=([0-9.]+)",$', pyproject.split("[project.optional")[0], re.M):
        assert f"| `{name}` | {low} |" in page, name
    # Every server build .ci/run installs is in the table, pinned alike, and tested by core_on.
    installed = re.findall(r"\b([a-z-]+==[0-9.]+)", ci.split("for package in", 1)[1].split(";")[0])
    assert len(installed) == 3
    for package in installed:
        assert f"`{package}`" in page, package
    assert ci.count("\ncore_on ") == 3
    # The minimum the check enforces is the one the page and the README state.
    minimum = ".".join(map(str, MINIMUM))
    assert f"**Redis {minimum} or later, or Valkey**" in page
    assert f"Redis {minimum} or later" in readme and "docs/compatibility.md" in readme
    python = re.search(r'requires-python = ">=([0-9.]+)"', pyproject).group(1)
    assert f'`requires-python = ">={python}"`' in page
