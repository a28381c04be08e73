"""Tests of the test-support helpers in ``tests/support`` against real redis-server processes."""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.proxy import FaultProxy
from tests.support.servers import (
    CLUSTER_BUS_OFFSET,
    RedisCluster,
    RedisServer,
    free_port,
    redis_cli_path,
    redis_server_path,
)

pytestmark = pytest.mark.redis


def _require(tool: str, path: str | None) -> None:
    # On CI a missing binary must not silently turn the suite green.
    if path is not None:
        return
    reason = f"{tool} not found on PATH; install Redis to run real-server tests"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


@pytest.fixture(scope="module")
def server():
    _require("redis-server", redis_server_path())
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def direct(server):
    """Client talking to the server directly (bypassing any proxy), on a clean db."""
    c = server.client(decode_responses=True)
    c.flushall()
    return c


@pytest.fixture
def proxy(server):
    with FaultProxy(server.host, server.port) as p:
        yield p


@pytest.fixture
def via_proxy(proxy):
    """A default-configured client (default retry policy) that talks through the proxy."""
    # Not Redis.from_url(): in redis-py 8.1 that path builds connections
    # without the client's default Retry, i.e. with zero retries.
    c = redis.Redis(host=proxy.host, port=proxy.port, decode_responses=True)
    yield c
    c.close()


# -- free_port ---------------------------------------------------------------


def test_free_port_never_repeats_and_is_bindable():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_free_port_with_bus_leaves_bus_port_free():
    port = free_port(need_bus=True)
    assert port + CLUSTER_BUS_OFFSET <= 65535
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", port))
        b.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))


# -- RedisServer -----------------------------------------------------------------


def test_server_answers_ping_set_get(server, direct):
    assert direct.ping() is True
    assert direct.set("greeting", "hello")
    assert direct.get("greeting") == "hello"
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert redis.Redis.from_url(server.url).ping()


def test_server_is_private_and_persistence_off(server, direct):
    assert server.port != 6379
    cfg = direct.config_get("*")
    assert cfg["save"] == ""
    assert cfg["appendonly"] == "no"
    assert cfg["dir"] == os.path.realpath(server.dir)
    assert cfg["bind"] == "127.0.0.1"


def test_requirepass_enforced():
    _require("redis-server", redis_server_path())
    with RedisServer(requirepass="s3cr:et") as srv:
        assert srv.password == "s3cr:et"
        assert srv.url == f"redis://:s3cr%3Aet@127.0.0.1:{srv.port}/0"
        assert srv.client().ping()
        assert redis.Redis.from_url(srv.url).ping()
        anon = redis.Redis(host=srv.host, port=srv.port, retry=_no_retry())
        with pytest.raises(redis.AuthenticationError):
            anon.set("k", "v")
        wrong = redis.Redis(host=srv.host, port=srv.port, password="nope", retry=_no_retry())
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        anon.close()
        wrong.close()


def test_kill_then_ping_fails_and_restart_reuses_port():
    _require("redis-server", redis_server_path())
    with RedisServer() as srv:
        c = srv.client(retry=_no_retry(), socket_connect_timeout=1)
        c.set("k", "v")
        port = srv.port
        srv.kill()
        assert not srv.running
        with pytest.raises(redis.ConnectionError):
            c.ping()
        srv.restart()
        assert srv.port == port
        assert c.ping()
        assert c.get("k") is None  # no persistence: a restart starts empty


def test_stop_terminates_and_removes_dir():
    _require("redis-server", redis_server_path())
    srv = RedisServer().start()
    proc, tmp = srv.proc, srv.dir
    assert os.path.isdir(tmp)
    srv.stop()
    assert proc.poll() is not None
    assert not os.path.exists(tmp)
    srv.stop()  # idempotent


def test_bad_arguments_raise_with_log():
    _require("redis-server", redis_server_path())
    srv = RedisServer(args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="no-such-option"):
        srv.start()
    assert not srv.running


# -- FaultProxy --------------------------------------------------------------------


def test_proxy_forwards_commands(proxy, via_proxy, direct):
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    assert via_proxy.set("k", "v")
    assert via_proxy.get("k") == "v"
    assert direct.get("k") == "v"
    assert proxy.connections == 1
    assert proxy.requests_seen >= 2


def test_drop_next_reply_makes_default_client_resend(proxy, via_proxy, direct):
    via_proxy.ping()  # connect first so the fault cannot hit the handshake
    proxy.drop_next_reply(b"INCR")
    # One client call, but the server executed INCR twice: the reply of the
    # first one was lost and redis-py's default retry re-sent the command.
    assert via_proxy.incr("counter") == 2
    assert direct.get("counter") == "2"
    assert proxy.connections == 2
    assert not proxy.armed


def test_drop_next_reply_without_retry_surfaces_error_after_execution(proxy, direct):
    c = redis.Redis.from_url(proxy.url, retry=_no_retry())
    proxy.drop_next_reply(b"INCR")
    with pytest.raises(redis.ConnectionError):
        c.incr("counter")
    assert direct.get("counter") == "1"  # executed although the client saw an error
    c.close()


def test_from_url_client_does_not_retry_by_default(proxy, direct):
    """Characterises redis-py 8.1: Redis.from_url() gets Retry(NoBackoff(), 0), not the default Retry."""
    c = redis.Redis.from_url(proxy.url)
    c.ping()
    proxy.drop_next_reply(b"INCR")
    with pytest.raises(redis.ConnectionError):
        c.incr("counter")
    assert direct.get("counter") == "1"
    c.close()


def test_drop_only_fires_on_match_and_once(proxy, via_proxy, direct):
    proxy.drop_next_reply(b"INCR")
    via_proxy.set("a", "1")
    assert via_proxy.get("a") == "1"
    assert proxy.armed and proxy.connections == 1
    assert via_proxy.incr("a") == 3  # fired: executed twice
    assert via_proxy.incr("a") == 4  # one-shot: now normal again
    assert proxy.connections == 2


def test_drop_next_reply_evalsha_is_resent(proxy, via_proxy, direct):
    script = via_proxy.register_script("return redis.call('INCR', KEYS[1])")
    direct.script_load(script.script)  # else the first EVALSHA answers NOSCRIPT
    proxy.drop_next_reply(b"EVALSHA")
    assert script(keys=["s"]) == 2
    assert direct.get("s") == "2"


def test_cut_next_request_never_reaches_server(proxy, via_proxy, direct):
    via_proxy.ping()
    proxy.cut_next_request(b"INCR")
    # The cut attempt never executed; the retry applied it exactly once.
    assert via_proxy.incr("counter") == 1
    assert direct.get("counter") == "1"
    assert proxy.connections == 2


def test_cut_next_request_without_retry(proxy, direct):
    c = redis.Redis.from_url(proxy.url, retry=_no_retry())
    c.ping()
    seen = proxy.requests_seen
    proxy.cut_next_request(b"INCR")
    with pytest.raises(redis.ConnectionError):
        c.incr("counter")
    assert direct.get("counter") is None
    assert proxy.requests_seen == seen
    c.close()


def test_pause_makes_clients_time_out_until_resume(proxy, direct):
    c = redis.Redis.from_url(proxy.url, socket_timeout=0.3, retry=_no_retry())
    c.set("k", "v")
    proxy.pause()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        c.get("k")
    assert time.monotonic() - started >= 0.25
    proxy.resume()
    assert c.get("k") == b"v"
    c.close()


def test_close_all_drops_open_connections(proxy, server):
    raw = socket.create_connection((proxy.host, proxy.port), timeout=2)
    raw.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert raw.recv(64).startswith(b"+PONG")
    proxy.close_all()
    assert raw.recv(64) == b""  # EOF, not a timeout
    raw.close()
    # The proxy itself keeps accepting.
    c = redis.Redis.from_url(proxy.url)
    assert c.ping()
    c.close()


def test_proxy_stop_joins_threads(server):
    p = FaultProxy(server.host, server.port).start()
    c = redis.Redis.from_url(p.url)
    c.ping()
    p.pause()
    p.stop()
    assert p._threads == []
    c.close()
    with pytest.raises(OSError):
        socket.create_connection((p.host, p.port), timeout=1).close()


# -- RedisCluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    _require("redis-server", redis_server_path())
    _require("redis-cli", redis_cli_path())
    with RedisCluster() as cl:
        yield cl


@pytest.mark.cluster
def test_cluster_every_node_ok(cluster):
    assert len(cluster.nodes) == 3
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for _, p in cluster.nodes)
    for host, port in cluster.nodes:
        node = redis.Redis(host=host, port=port, decode_responses=True)
        info = node.cluster("INFO")
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == "16384"
        node.close()


@pytest.mark.cluster
def test_cluster_client_set_get_across_slots(cluster):
    rc = cluster.client()
    # Find one key owned by each master so every node serves a command.
    by_node: dict[str, str] = {}
    i = 0
    while len(by_node) < 3:
        key = f"key:{i}"
        by_node.setdefault(rc.get_node_from_key(key).name, key)
        i += 1
    for key in by_node.values():
        assert rc.set(key, key.upper())
    for name, key in by_node.items():
        assert rc.get(key) == key.upper()
        host, port = name.rsplit(":", 1)
        owner = redis.Redis(host=host, port=int(port), decode_responses=True)
        assert owner.get(key) == key.upper()  # really stored on that node
        owner.close()


def test_the_server_build_is_chosen_by_the_environment(monkeypatch, tmp_path):
    """.ci/run points the fixtures at other builds (Redis 6.2, 8.2, Valkey) this way."""
    from tests.support import servers

    fake = tmp_path / "valkey-server"
    fake.write_text("#!/bin/sh\necho 'Valkey server v=8.1.8 sha=00000000:1 malloc=libc bits=64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv(servers.SERVER_ENV, str(fake))
    monkeypatch.setenv(servers.CLI_ENV, "/nowhere/valkey-cli")
    assert servers.redis_server_path() == str(fake)
    assert servers.redis_cli_path() == "/nowhere/valkey-cli"
    assert servers.server_version() == ("valkey", (8, 1, 8))
    assert servers.debug_command_args() == ["--enable-debug-command", "yes"]
