"""Throwaway ``redis-server`` processes (standalone, 3-node cluster, and a primary with a
replica under three sentinels) for tests.

Every server binds 127.0.0.1 on a port of its own, runs without persistence in a
private temp directory, and is torn down by ``stop()`` (or the context manager).
Nothing here touches a Redis that the tests did not start themselves.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from urllib.parse import quote

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "free_port",
    "redis_server_path",
    "redis_cli_path",
    "RedisServer",
    "RedisCluster",
    "RedisSentinel",
]

HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000

# Ports handed out by free_port() in this process; a port that is free now may
# not yet be bound by the server it was meant for, so never give it out twice.
_handed_out: set[int] = set()
# SystemRandom so that tests seeding ``random`` (hypothesis, pytest-randomly)
# cannot make parallel test processes pick the same sequence of ports.
_rng = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux default


def _can_bind(port: int) -> bool:
    # Deliberately without SO_REUSEADDR: a port still in TIME_WAIT is refused
    # too, which errs on the safe side.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(need_bus: bool = False) -> int:
    """Return a currently free 127.0.0.1 TCP port never returned before in this process.

    With ``need_bus=True`` the cluster bus port (``port + 10000``) is free too.
    """
    # Pick below the kernel's ephemeral range: a port the OS may hand out as
    # the source port of some outgoing connection could be taken between this
    # check and the server binding it.
    low, high = _ephemeral_range()
    if low > 12000:
        lo, hi = 10000, low - 1
    else:  # unusual port range: fall back to the ports above it
        lo, hi = high + 1, 65535
    if need_bus:
        hi = min(hi, 65535) - CLUSTER_BUS_OFFSET
    for _ in range(1000):
        port = _rng.randint(lo, hi)
        candidates = [port, port + CLUSTER_BUS_OFFSET] if need_bus else [port]
        if any(p in _handed_out for p in candidates):
            continue
        if all(_can_bind(p) for p in candidates):
            _handed_out.update(candidates)
            return port
    raise RuntimeError(f"no free port found in {lo}..{hi}")


# The server build the suite runs on: JOBSTORE_TEST_REDIS_SERVER / JOBSTORE_TEST_REDIS_CLI name
# the executables (another Redis, Valkey: .ci/run runs the core tests on several), else
# redis-server and redis-cli on PATH.
SERVER_ENV, CLI_ENV = "JOBSTORE_TEST_REDIS_SERVER", "JOBSTORE_TEST_REDIS_CLI"


def redis_server_path() -> str | None:
    """Path of the server executable (``$JOBSTORE_TEST_REDIS_SERVER``, else ``redis-server`` on
    PATH), or None if it is not installed."""
    return os.environ.get(SERVER_ENV) or shutil.which("redis-server")


def redis_cli_path() -> str | None:
    """Path of the CLI (``$JOBSTORE_TEST_REDIS_CLI``, else ``redis-cli`` on PATH), or None."""
    return os.environ.get(CLI_ENV) or shutil.which("redis-cli")


_version_cache: dict[str, tuple[str, tuple[int, ...]]] = {}


def server_version() -> tuple[str, tuple[int, ...]]:
    """``("redis" or "valkey", (major, minor, patch))`` of the server executable the suite
    runs (from its ``--version``); ``("", ())`` when there is none."""
    path = redis_server_path()
    if path is None:
        return "", ()
    if path not in _version_cache:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        name = "valkey" if out.lower().startswith("valkey") else "redis"
        version = out.split("v=", 1)[1].split()[0] if "v=" in out else ""
        _version_cache[path] = name, tuple(int(p) for p in version.split(".") if p.isdigit())
    return _version_cache[path]


def debug_command_args() -> list[str]:
    """What lets a test send DEBUG (RELOAD, SLEEP...): ``--enable-debug-command yes`` where the
    server has that option (Redis 7.0+, Valkey); before 7.0 DEBUG is always on."""
    name, version = server_version()
    return ["--enable-debug-command", "yes"] if name == "valkey" or version >= (7,) else []


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def add_all_slots(client: redis.Redis) -> None:
    """Give one cluster node every slot (CLUSTER ADDSLOTS: ADDSLOTSRANGE arrived in 7.0)."""
    client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))


def wait_cluster_ok(client: redis.Redis, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.execute_command("CLUSTER", "INFO")  # raw text, or a dict (RESP3)
        if isinstance(reply, dict):
            reply = "\n".join(f"{_str(k)}:{_str(v)}" for k, v in reply.items())
        if "cluster_state:ok" in _str(reply):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not reach cluster_state:ok")
        time.sleep(0.05)


# Safety net: servers still running when the interpreter exits (a test run
# aborted half-way, a forgotten stop()) are killed instead of outliving pytest.
_live: weakref.WeakSet[RedisServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        try:
            server.stop()
        except Exception:
            pass


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "<no log>"


class RedisServer:
    """One ``redis-server`` process on a private port and temp dir.

    Use as a context manager or call ``start()``/``stop()``.  ``kill()`` and
    ``restart()`` exist for fault tests; data does not survive a restart
    (persistence is off).
    """

    host = HOST

    def __init__(
        self,
        requirepass: str | None = None,
        args: list[str] | tuple[str, ...] = (),
        *,
        need_bus: bool = False,
        startup_timeout: float = 10.0,
    ) -> None:
        self.password = requirepass
        self.extra_args = list(args)
        self.need_bus = need_bus
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.dir: str | None = None
        self.proc: subprocess.Popen | None = None
        self._clients: list[redis.Redis] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server on a fresh free port and wait until it answers PING."""
        path = redis_server_path()
        if path is None:
            raise RuntimeError("redis-server is not installed (not on PATH)")
        if self.running:
            return self
        # Another process can grab the port between free_port() and the
        # server's bind(); a couple of attempts on new ports cover that race.
        last_error: RuntimeError | None = None
        for _ in range(3):
            if self.dir is not None:  # fresh dir so old logs don't mislead
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = tempfile.mkdtemp(prefix="jobstore-redis-")
            self.port = free_port(need_bus=self.need_bus)
            try:
                self._spawn(path)
                return self
            except RuntimeError as exc:
                last_error = exc
                if "Address already in use" not in str(exc):
                    break
        self.stop()
        assert last_error is not None
        raise last_error

    def restart(self) -> RedisServer:
        """(Re)start the server on the same port, e.g. after ``kill()``."""
        if self.port is None or self.dir is None:
            return self.start()
        if self.running:
            self._terminate()
        path = redis_server_path()
        if path is None:
            raise RuntimeError("redis-server is not installed (not on PATH)")
        self._spawn(path)
        return self

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown); ``restart()`` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Terminate the server, close clients made by ``client()``, remove the temp dir."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        self._terminate()
        _live.discard(self)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- info --------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def log_path(self) -> str | None:
        """The server's logfile (inside its temp dir)."""
        return os.path.join(self.dir, "redis.log") if self.dir else None

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the logfile plus anything printed to stderr before it opened."""
        if self.dir is None:
            return "<no log>"
        out = _tail(os.path.join(self.dir, "redis.log"), lines)
        err = _tail(os.path.join(self.dir, "stderr.log"), lines)
        return out + (f"\n[stderr]\n{err}" if err.strip() and err != "<no log>" else "")

    def client(self, **kw: object) -> redis.Redis:
        """A ``redis.Redis`` connected to this server (closed again by ``stop()``)."""
        options: dict[str, object] = {"host": self.host, "port": self.port, "password": self.password}
        options.update(kw)
        c = redis.Redis(**options)  # type: ignore[arg-type]
        self._clients.append(c)
        return c

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"

    # -- internals ---------------------------------------------------------

    def _spawn(self, path: str) -> None:
        assert self.dir is not None and self.port is not None
        cmd = [
            path,
            *self._leading_args(),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self.dir,
            # Absolute, because a relative logfile is resolved against the cwd.
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        cmd += self.extra_args
        # Errors in the arguments are reported on stderr before the logfile is
        # opened, so keep that too for the startup error message.
        with open(os.path.join(self.dir, "stderr.log"), "ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.dir
            )
        _live.add(self)
        self._wait_ready()

    def _leading_args(self) -> list[str]:
        """What goes before every other argument: a config file (a sentinel's)."""
        return []

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        # No retries/backoff: the polling loop is the retry.
        probe = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    break
                try:
                    if probe.ping():
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)
        finally:
            probe.close()
        exit_code = self.proc.poll() if self.proc else None
        log = self.log_tail()
        self._terminate()
        raise RuntimeError(
            f"redis-server on {self.host}:{self.port} did not answer PING within "
            f"{self.startup_timeout}s (exit code {exit_code}); log tail:\n{log}"
        )

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisCluster:
    """A 3-master, 0-replica Redis Cluster of local ``redis-server`` processes."""

    host = HOST

    def __init__(self, size: int = 3, *, ready_timeout: float = 30.0,
                 args: list[str] | tuple[str, ...] = ()) -> None:
        self.size = size
        self.ready_timeout = ready_timeout
        self.extra_args = list(args)  # for every node, e.g. ["--appendonly", "yes"]
        self.servers: list[RedisServer] = []
        self._clients: list[redis.cluster.RedisCluster] = []

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(s.host, s.port) for s in self.servers if s.port is not None]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3``."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.nodes)

    def start(self) -> RedisCluster:
        """Start the nodes, join them with ``redis-cli --cluster create``, wait for ``cluster_state:ok``."""
        cli = redis_cli_path()
        if cli is None:
            raise RuntimeError("redis-cli is not installed (not on PATH)")
        try:
            for _ in range(self.size):
                server = RedisServer(
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000",
                        *self.extra_args,
                    ],
                    need_bus=True,
                )
                self.servers.append(server)
                server.start()
            self._create(cli)
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and remove their temp dirs."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        for server in self.servers:
            server.stop()
        self.servers.clear()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(self, **kw: object) -> redis.cluster.RedisCluster:
        """A ``redis.cluster.RedisCluster`` (``decode_responses=True`` unless overridden)."""
        host, port = self.nodes[0]
        options: dict[str, object] = {"host": host, "port": port, "decode_responses": True}
        options.update(kw)
        c = redis.cluster.RedisCluster(**options)  # type: ignore[arg-type]
        self._clients.append(c)
        return c

    def logs(self) -> str:
        """Log tails of every node, for error messages."""
        return "\n".join(f"--- node {s.port} ---\n{s.log_tail()}" for s in self.servers)

    def _create(self, cli: str) -> None:
        cmd = [cli, "--cluster", "create"]
        cmd += [f"{h}:{p}" for h, p in self.nodes]
        cmd += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            res = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"redis-cli --cluster create timed out\n{self.logs()}") from exc
        if res.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({res.returncode}):\n"
                f"{res.stdout}\n{res.stderr}\n{self.logs()}"
            )

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        probes = [(s.port, s.client(socket_timeout=1, decode_responses=True)) for s in self.servers]
        pending: dict[int | None, str] = {}
        while time.monotonic() < deadline:
            pending = {}
            for port, probe in probes:
                try:
                    info = probe.execute_command("CLUSTER INFO")
                except redis.RedisError as exc:
                    pending[port] = repr(exc)
                    continue
                # redis-py parses CLUSTER INFO into a dict of strings.
                fields = {str(k): str(v) for k, v in dict(info).items()}
                # cluster_state:ok alone can be reported by a node that does not
                # know every peer yet; clients bootstrapping from it would then
                # see a partial topology.
                if fields.get("cluster_state") != "ok" or fields.get(
                    "cluster_known_nodes"
                ) != str(self.size):
                    pending[port] = str(fields)
            if not pending:
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"cluster not ok after {self.ready_timeout}s; nodes not ready: {pending}\n{self.logs()}"
        )


class SentinelProcess(RedisServer):
    """One sentinel (``redis-server <conf> --sentinel``) monitoring ``service`` on ``primary``.

    Sentinel rewrites its config file as it learns the topology, so the file lives in the
    process's temp dir; a ``restart()`` keeps what it learnt."""

    def __init__(self, service: str, primary: tuple[str, int], quorum: int, *,
                 down_after_ms: int, failover_timeout_ms: int) -> None:
        super().__init__()
        self.service = service
        self.monitor = primary
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def _leading_args(self) -> list[str]:
        assert self.dir is not None
        conf = os.path.join(self.dir, "sentinel.conf")
        if not os.path.exists(conf):
            host, port = self.monitor
            with open(conf, "w") as f:
                f.write(f"sentinel monitor {self.service} {host} {port} {self.quorum}\n"
                        f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
                        f"sentinel parallel-syncs {self.service} 1\n")
        return [conf, "--sentinel"]


class RedisSentinel:
    """A primary, its replica and three sentinels (quorum 2) on loopback, with failure detection
    and failover timeouts low enough for a failover to take a few seconds."""

    host = HOST
    service = "jobstore"

    def __init__(self, sentinels: int = 3, quorum: int = 2, *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000, ready_timeout: float = 90.0) -> None:
        self.size = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.ready_timeout = ready_timeout
        self.data: list[RedisServer] = []  # the primary and the replica, whichever is which
        self.sentinels: list[SentinelProcess] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/jobstore``."""
        return ("redis+sentinel://" + ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
                + f"/{self.service}")

    def start(self) -> RedisSentinel:
        """Start the primary, the replica and the sentinels; return once all agree."""
        try:
            primary = RedisServer().start()
            self.data.append(primary)
            self.data.append(RedisServer(args=["--replicaof", primary.host, str(primary.port)]).start())
            for _ in range(self.size):
                sentinel = SentinelProcess(self.service, (primary.host, primary.port), self.quorum,
                                           down_after_ms=self.down_after_ms,
                                           failover_timeout_ms=self.failover_timeout_ms)
                self.sentinels.append(sentinel)
                sentinel.start()
            self.wait_settled()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, *self.data]:
            server.stop()
        self.sentinels.clear()
        self.data.clear()

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _sentinel_client(self, sentinel: RedisServer) -> redis.Redis:
        return sentinel.client(socket_timeout=1, decode_responses=True)

    def _by_port(self, port: int) -> RedisServer:
        (server,) = [s for s in self.data if s.port == port]
        return server

    def primary(self) -> RedisServer:
        """The data node the sentinels name as the primary now."""
        host, port = self._sentinel_client(self.sentinels[0]).sentinel_get_master_addr_by_name(
            self.service)
        return self._by_port(int(port))

    def replica(self) -> RedisServer:
        """The data node that is not the primary."""
        primary = self.primary()
        (other,) = [s for s in self.data if s is not primary]
        return other

    def failover(self) -> tuple[RedisServer, RedisServer]:
        """``SENTINEL FAILOVER``: the replica is promoted, the old primary made its replica.
        Returns ``(old primary, new primary)`` once every sentinel and both nodes agree."""
        old = self.primary()
        self._sentinel_client(self.sentinels[0]).execute_command("SENTINEL", "FAILOVER",
                                                                 self.service)
        new = self.wait_settled(not_on=old)
        return old, new

    def kill_primary(self, on_killed: Callable[[], None] | None = None
                     ) -> tuple[RedisServer, RedisServer]:
        """SIGKILL the primary (then call ``on_killed()``, the process gone); once the
        sentinels promoted the replica (after ``down_after_ms``, a second or two), restart the
        old one as the new one's replica (empty: persistence is off), as an operator or a
        managed service brings a failed node back. Returns ``(old, new)`` once all agree."""
        old = self.primary()
        old.kill()
        if on_killed is not None:
            on_killed()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                new = self.primary()
            except (redis.RedisError, OSError, ValueError):
                new = old
            if new is not old and new.client(decode_responses=True).info(
                    "replication")["role"] == "master":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica was promoted in {self.ready_timeout}s\n"
                                   + "\n".join(s.log_tail() for s in self.sentinels))
            time.sleep(0.05)
        # Brought back empty, the old node must not be promoted before it holds the data: a
        # second failover soon after the first (a sentinel that saw the new primary late, on a
        # loaded machine) would otherwise pick it mid-sync and lose every write. Priority 0
        # until it is linked, as an operator brings a failed node back (docs/sentinel.md).
        old.extra_args = ["--replicaof", new.host, str(new.port), "--replica-priority", "0"]
        old.restart()
        settled = self.wait_settled(not_on=old)
        old.client().config_set("replica-priority", 100)
        return old, settled

    def wait_settled(self, not_on: RedisServer | None = None) -> RedisServer:
        """Wait until every sentinel names the same primary (not ``not_on``) with no failover
        under way and sees every other sentinel and the replica, the primary says it is one,
        and the replica's link to it is up; return the primary."""
        deadline = time.monotonic() + self.ready_timeout
        why = ""
        while time.monotonic() < deadline:
            why = self._unsettled(not_on)
            if not why:
                return self.primary()
            time.sleep(0.1)
        logs = "\n".join(f"--- {s.port} ---\n{s.log_tail()}" for s in [*self.data, *self.sentinels])
        raise RuntimeError(f"the sentinel setup did not settle in {self.ready_timeout}s: {why}\n{logs}")

    def _unsettled(self, not_on: RedisServer | None) -> str:
        """Why the setup has not settled yet, or ``""``."""
        try:
            states = [self._sentinel_client(s).sentinel_master(self.service) for s in self.sentinels]
            ports = {int(state["port"]) for state in states}
            if len(ports) != 1:
                return f"the sentinels name different primaries: {ports}"
            (port,) = ports
            if not_on is not None and port == not_on.port:
                return "the sentinels still name the old primary"
            for state in states:
                if state["flags"] != "master" or state["num-slaves"] < 1 or (
                        state["num-other-sentinels"] < self.size - 1):
                    return f"a sentinel sees {state}"
            primary = self._by_port(port)
            if primary.client(decode_responses=True).info("replication")["role"] != "master":
                return "the primary named is not one yet"
            for server in self.data:
                if server is not primary and server.client(decode_responses=True).info(
                        "replication").get("master_link_status") != "up":
                    return f"the replica {server.port} is not linked to the primary yet"
            for sentinel in self.sentinels:
                replicas = self._sentinel_client(sentinel).sentinel_slaves(self.service)
                if not any(r["port"] != port and "s_down" not in r["flags"] for r in replicas):
                    return f"sentinel {sentinel.port} has no live replica: {replicas}"
        except (redis.RedisError, OSError, KeyError, ValueError) as exc:
            return repr(exc)
        return ""
