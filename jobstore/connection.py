"""From a URL to a redis-py client, and what redis-py raises to jobstore's errors. With
jobstore.urls (reading URLs, hiding their credentials), the only module that knows URL schemes."""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import FullJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .errors import (AuthenticationFailed, ConfigError, JobStoreError, RedisCommandError,
                     StoreUnavailable)
from .scripts import explain as explain_script_error
# URLs are read (and their credentials hidden) by jobstore.urls; its names are importable from
# here too, where they were defined before.
from .urls import HOST_LISTS as HOST_LISTS
from .urls import SCHEMES as SCHEMES
from .urls import _scrub, cluster_seeds, host_list, redact, url_problem
from .urls import _secrets as _secrets
from .wire import tune

# A client jobstore runs on: redis-py's standalone client (fakeredis's is one) or its cluster
# client, with any decode_responses setting.
Client = redis.Redis | RedisCluster



@dataclass(frozen=True)
class Flavour:
    """Which redis-py classes a client is built from: the synchronous ones (:data:`SYNC`) or
    those of ``redis.asyncio`` (:func:`asyncio_flavour`). URLs are read alike for both."""

    redis: Any  # the standalone client class
    cluster: Any  # the cluster client class
    node: Any  # the cluster's seed node class
    retry: Any  # redis-py's Retry of that flavour
    fake: str  # the fakeredis client class behind memory://


SYNC = Flavour(redis.Redis, RedisCluster, None, Retry, "FakeRedis")


def asyncio_flavour() -> Flavour:
    """The ``redis.asyncio`` classes (imported when an asyncio store is first opened)."""
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry

    return Flavour(redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster,
                   redis.asyncio.cluster.ClusterNode, redis.asyncio.retry.Retry, "FakeAsyncRedis")

# How to get the embedded store (fakeredis + lupa) behind memory://, an optional extra.
EMBEDDED_EXTRA = "pip install 'jobstore[embedded]'"

# Defaults a service wants from a store: a dead server is reported, not waited on forever.
CLIENT_DEFAULTS = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0, "health_check_interval": 30}

# How jobstore's clients turn replies into text: UTF-8, and bytes that are not UTF-8 (old code
# wrote some) as lone surrogates instead of a UnicodeDecodeError, so that a reply is always read
# whole; the record reads as corrupt (jobstore.job.record_problem), and a copy written back
# encodes the same way, byte for byte.
DECODING: dict[str, Any] = {"decode_responses": True, "encoding_errors": "surrogateescape"}


# What a command sent through redis-py may raise: reported() says which jobstore error each is.
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

# What the CLI reports as "Redis is unavailable" (exit 3) when such an error reaches it bare.
DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError, redis.exceptions.ClusterError)

# redis-py raises these when the server cannot serve us; a caller sees StoreUnavailable.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterError,  # cluster down, a primary down
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    OSError,
)

# The oldest server jobstore runs on, and why: its operations use BLMOVE and LMOVE (Redis 6.2).
# Valkey reports redis_version 7.2.4 whatever its own version: every Valkey passes.
MINIMUM = (6, 2)
NEEDS_TEXT = "Redis 6.2 or later, or Valkey"


def reported(exc: BaseException, where: str) -> JobStoreError:
    """The jobstore error that a redis-py error from the server ``where`` (a URL with its
    password redacted, or a Cluster node) is reported as.

    A refused login and a database number the server does not have are configuration errors,
    not outages: retrying does not help. A command the server does not know names the version
    jobstore needs. The redis-py error is the caller's to chain.
    """
    text = str(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return AuthenticationFailed(where, text)
    if isinstance(exc, redis.exceptions.ResponseError) and "db index is out of range" in text.lower():
        return ConfigError(f"Redis at {where} has no such database ({text}): the URL's path or "
                           "?db= must name one of its databases, 0 to 15 unless redis.conf's "
                           "'databases' says otherwise (Redis Cluster has only 0)")
    if isinstance(exc, UNAVAILABLE) or demoted(exc):
        return StoreUnavailable(f"Redis at {where} is unavailable: {text}")
    if _unknown_command(exc):
        return RedisCommandError(f"Redis at {where} refused a command: {text} (jobstore needs "
                                 f"{NEEDS_TEXT})")
    # A script's error names the line of the rendered script: add its .lua file and line.
    return RedisCommandError(f"Redis at {where} refused a command: {explain_script_error(text)}")


def demoted(reply: BaseException) -> bool:
    """A refusal that says the server is (now) a replica, a primary a failover demoted: a
    script's write (READONLY), ``WAIT`` ("cannot be used with replica instances"), a blocking
    command cut off (UNBLOCKED; redis-py's Sentinel client makes that a ConnectionError only
    since 8.x)."""
    text = str(reply)
    return isinstance(reply, redis.exceptions.ResponseError) and (
        text.startswith(("READONLY", "UNBLOCKED")) or "cannot be used with replica" in text)


def _unknown_command(reply: BaseException) -> bool:
    """A server's "unknown command" reply, or redis-py's Cluster client's own word for a
    command missing from the server's COMMAND table."""
    text = str(reply).lower()
    return "unknown command" in text or "command doesn't exist" in text


def default_retry(flavour: Flavour | None = None) -> Any:
    """redis-py's own retry, which ``from_url`` leaves off: a command whose connection broke is
    re-sent (every jobstore write recognises its own earlier attempt, so this is safe).

    Waits before each retry a random time up to 10 ms, 20 ms, 40 ms (capped at 0.5 s): "full
    jitter", which every redis-py has (``ExponentialWithJitterBackoff``, much the same, arrived
    in 5.3)."""
    return (flavour or SYNC).retry(FullJitterBackoff(base=0.01, cap=0.5), retries=3)

_memory_lock = threading.Lock()
_memory_servers: dict[str, Any] = {}


def connect(url: str, client_options: dict[str, Any] | None = None,
            flavour: Flavour = SYNC) -> Any:
    """A client for ``url``, of redis-py's synchronous classes or (``flavour``) its asyncio ones;
    nothing is sent to Redis yet.

    :raises ConfigError: an unknown scheme, an unparseable URL, or a scheme not supported yet.
        The message shows the URL only as :func:`redact` does, and chains no exception that
        could quote it.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("url must be a non-empty str such as redis://localhost:6379/0")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        if client_options:
            raise ConfigError("client_options do not apply to memory:// (an embedded fakeredis)")
        return memory_client(url, flavour)
    if scheme not in SCHEMES:
        raise ConfigError(
            f"url {redact(url)!r} has an unknown scheme; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    problem = url_problem(url)
    if problem is None and scheme not in HOST_LISTS:
        try:
            _ = urlsplit(url).port  # parsed for its ValueError
        except ValueError:
            problem = "its port is not a number from 0 to 65535"
    if problem is not None:
        raise ConfigError(f"url {redact(url)!r} cannot be parsed: {problem}")
    if scheme == "redis+cluster":
        return cluster_client(url, client_options, flavour)
    if scheme == "redis+sentinel":
        return sentinel_client(url, client_options, flavour)
    try:
        parsed = url_options(url)
    except ConfigError as exc:
        problem = str(exc)
    if problem is not None:
        raise ConfigError(f"url {redact(url)!r} is invalid: {problem}")
    # What the URL says wins over client_options, as in redis-py's from_url.
    options = {**CLIENT_DEFAULTS, "retry": default_retry(flavour), **DECODING,
               **(client_options or {}), **parsed}
    try:
        # redis-py's own constructor (its pool and close() semantics, whatever the version), on
        # a URL with nothing in it to parse but the scheme: every part of ``url`` was parsed
        # above, by jobstore, the same with every redis-py.
        client = flavour.redis.from_url(f"{scheme}://", **options)
    except (ValueError, TypeError) as exc:
        problem = _scrub(str(exc), url)
    if problem is not None:  # raised here, outside the handler: nothing chained quotes the URL
        raise ConfigError(f"url {redact(url)!r} is invalid: {problem}")
    _check_options(client, url)
    tune(client, asyncio_client=flavour is not SYNC)
    return client


def _check_options(client: redis.Redis, url: str) -> None:
    """Connections are made lazily; build one (unconnected) now so that a misspelt option fails
    here, as a ConfigError, and not at the first operation."""
    pool = client.connection_pool
    problem = None
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        problem = _scrub(str(exc), url)
    if problem is not None:  # raised outside the handler: nothing chained quotes the URL
        raise ConfigError(f"client_options: {problem} (a keyword of client_options or a query "
                          f"parameter of url {redact(url)!r})")


def url_options(url: str) -> dict[str, Any]:
    """The connection settings of a ``redis://``, ``rediss://`` or ``unix://`` URL, as keyword
    arguments of redis-py's connection pool: parsed here, not by redis-py, so that every
    redis-py reads a URL alike (versions differ: 8.2 takes ``REDIS://``, older ones refuse it;
    5.3 to 8.1 decode a ``?password=`` twice).

    The scheme is case-insensitive (RFC 3986). The userinfo and the path are percent-decoded
    once, query values once (``+`` is a space there, as in any query). The userinfo's user name
    and password win over ``?username=`` / ``?password=``; ``?db=`` wins over the path; the
    first of a repeated parameter counts. Query values are converted to the types redis-py
    gives them (``db`` an int, ``socket_timeout`` a float...), by redis-py's own table.

    :raises ConfigError: a value that does not convert, or a path that is not a database
        number; the message names the part, never its value.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    kwargs = query_options(parts.query)
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    path = unquote(parts.path)
    if scheme == "unix":
        if path:
            kwargs["path"] = path
        return kwargs
    if parts.hostname:
        kwargs["host"] = unquote(parts.hostname)
    if parts.port is not None:
        kwargs["port"] = parts.port
    db = path.strip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ConfigError("its path must be a database number (redis://host:6379/0)")
    if db:
        kwargs.setdefault("db", int(db))
    return kwargs


def query_options(query: str) -> dict[str, Any]:
    """A URL's query parameters as keyword arguments of redis-py's connections: each value
    percent-decoded once and converted to the type redis-py gives it (``db`` an int,
    ``socket_timeout`` a float...), by redis-py's own table; the first of a repeated one counts.

    :raises ConfigError: a value that does not convert (named, never quoted).
    """
    converters = getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {})
    kwargs: dict[str, Any] = {}
    for name, value in parse_qsl(query):
        if name in kwargs:
            continue
        convert = converters.get(name)
        if convert is None:
            kwargs[name] = value
            continue
        try:
            kwargs[name] = convert(value)
        except (TypeError, ValueError):
            raise ConfigError(f"its query parameter {name!r} has a value that is not "
                              f"valid for it") from None
    return kwargs


def cluster_client(url: str, client_options: dict[str, Any] | None,
                   flavour: Flavour = SYNC) -> Any:
    """A redis-py ``RedisCluster`` on the seed nodes of ``redis+cluster://[user:pass@]h:p,h:p``.

    redis-py asks the seeds for the slot map at once, so an unreachable cluster is reported
    here (StoreUnavailable) rather than at the first operation (the asyncio client asks at its
    first command).
    """
    from redis.cluster import ClusterNode

    seeds, username, password = cluster_seeds(url)
    nodes = [(flavour.node or ClusterNode)(host, port) for host, port in seeds]
    options = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0, **DECODING,
               **(client_options or {})}
    if username:
        options.setdefault("username", username)
    if password:
        options.setdefault("password", password)
    problem = None
    try:
        return flavour.cluster(startup_nodes=nodes, **options)
    except TypeError as exc:
        problem = _scrub(str(exc), url)
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        # redis-py wraps what the last seed it tried said (a refused login, say) in a
        # RedisClusterException: reported as that, else as the cluster being unavailable.
        cause = exc
        while isinstance(cause, redis.exceptions.RedisClusterException) and cause.__cause__:
            cause = cause.__cause__  # type: ignore[assignment]
        if not isinstance(cause, (redis.exceptions.RedisError, OSError)):
            cause = redis.exceptions.ConnectionError(str(exc))
        error = reported(cause, redact(url))
        error.args = (_scrub(str(error), url),)
        raise error from exc
    raise ConfigError(f"client_options: {problem}")


# Redis Sentinel ---------------------------------------------------------------------------------
#
# ``redis+sentinel://[user:pass@]host:port[,...]/service_name[/db][?query]``: the hosts are the
# sentinels, asked for the primary of ``service_name``. Parsing (pure, ``sentinel_settings``) is
# kept apart from building the client (``sentinel_client``), for other clients to reuse.

# Query parameters for the sentinels themselves (their own ACL user or requirepass), not the data
# nodes: the URL's other credentials are the data nodes' and are never sent to a sentinel.
SENTINEL_CREDENTIALS = {"sentinel_username": "username", "sentinel_password": "password"}


@dataclass(frozen=True)
class SentinelSettings:
    """What a ``redis+sentinel://`` URL says, parsed: no client, nothing connected."""

    sentinels: list[tuple[str, int]]
    service_name: str
    # The data nodes' connection settings: db, username, password, the other query parameters.
    connection: dict[str, Any]
    # The sentinels' own credentials (``username``, ``password``), when the query gives them.
    sentinel: dict[str, Any]


def sentinel_settings(url: str) -> SentinelSettings:
    """Parse ``redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[/db][?...]``.

    The host list and its credentials read as a ``redis+cluster://`` seed list does
    (:func:`host_list`); the path is the service name the sentinels monitor, percent-decoded,
    then optionally a database number (``?db=`` wins over it). ``?sentinel_username=`` and
    ``?sentinel_password=`` are the sentinels' credentials; every other query parameter is a
    setting of the data nodes' connections, as for ``redis://``.

    :raises ConfigError: (the URL redacted) no sentinel, one that is not ``host:port``, no
        service name, a path that is not ``/service_name[/db]``, a query value of the wrong type.
    """
    nodes, username, password, rest = host_list(url, "sentinel")
    path, _, query = rest.partition("?")
    pieces = path.split("/")[1:]
    if len(pieces) > 1 and pieces[-1] == "":
        pieces.pop()  # a trailing '/'
    service = unquote(pieces[0]) if pieces else ""
    form = "redis+sentinel://host:port[,host:port...]/service_name[/db]"
    if not service.strip():
        raise ConfigError(f"url {redact(url)!r} names no service: use {form}, the name the "
                          "sentinels monitor ('sentinel monitor <name> ...' in sentinel.conf)")
    if len(pieces) > 2 or (len(pieces) == 2 and not (pieces[1].isascii() and pieces[1].isdigit())):
        raise ConfigError(f"url {redact(url)!r}: after the service name the path may hold only a "
                          f"database number ({form})")
    problem = None
    try:
        connection = query_options(query)
    except ConfigError as exc:
        problem = str(exc)
    if problem is not None:
        raise ConfigError(f"url {redact(url)!r} is invalid: {problem}")
    sentinel = {SENTINEL_CREDENTIALS[name]: connection.pop(name)
                for name in list(connection) if name in SENTINEL_CREDENTIALS}
    connection.pop("username", None)
    connection.pop("password", None)
    connection.update({k: v for k, v in (("username", username), ("password", password)) if v})
    if len(pieces) == 2:
        connection.setdefault("db", int(pieces[1]))
    return SentinelSettings(nodes, service, connection, sentinel)


class SentinelRedis(redis.Redis):
    """The client of the primary that ``Sentinel.master_for`` makes, closing the connections to
    the sentinels as well when it is closed (a ``Sentinel`` leaves that to its owner)."""

    def close(self) -> None:
        try:
            super().close()
        finally:  # (Sentinel.close is recent: close its clients one by one)
            for sentinel in _sentinels_of(self):
                sentinel.close()


def _sentinels_of(client: Any) -> list[Any]:
    """The clients of the sentinels behind a ``Sentinel.master_for`` client (sync or asyncio)."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


@functools.cache
def _async_sentinel_redis() -> type:
    """:class:`SentinelRedis` for ``redis.asyncio`` (made when an asyncio store first opens a
    ``redis+sentinel://`` URL: importing jobstore imports no ``redis.asyncio``)."""
    import redis.asyncio

    class AsyncSentinelRedis(redis.asyncio.Redis):
        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            try:
                await super().aclose(close_connection_pool)
            finally:
                for sentinel in _sentinels_of(self):
                    await sentinel.aclose()

    return AsyncSentinelRedis


def sentinel_client(url: str, client_options: dict[str, Any] | None,
                    flavour: Flavour = SYNC) -> Any:
    """A client of the primary that the sentinels of ``redis+sentinel://...`` name, made by
    redis-py's ``Sentinel(...).master_for(service_name, ...)`` with jobstore's client defaults
    (timeouts, :func:`default_retry`, :data:`DECODING`), ``client_options`` over them and the
    URL's settings over both. Nothing is sent yet: the first command asks the sentinels, and
    after a failover the next connection made asks them again.

    The sentinels get the same connect and socket timeouts, their own credentials
    (``?sentinel_password=``) and redis-py's retry for them (none: discovery moves on to the
    next sentinel).
    """
    settings = sentinel_settings(url)
    options = {**CLIENT_DEFAULTS, "retry": default_retry(flavour), **DECODING,
               **(client_options or {}), **settings.connection}
    timeouts: dict[str, Any] = {k: options[k] for k in ("socket_connect_timeout", "socket_timeout")
                                if k in options}
    sentinel_class: Any
    if flavour is SYNC:
        from redis.sentinel import Sentinel as sentinel_class

        redis_class: type = SentinelRedis
    else:  # redis.asyncio's Sentinel, with the same settings
        from redis.asyncio.sentinel import Sentinel as sentinel_class

        redis_class = _async_sentinel_redis()
    sentinels = sentinel_class(settings.sentinels,
                               sentinel_kwargs={**timeouts, **settings.sentinel})
    client = sentinels.master_for(settings.service_name, redis_class=redis_class, **options)
    _check_options(client, url)
    return client


def is_cluster(client: object) -> TypeGuard[RedisCluster]:
    """A cluster client, synchronous or (once an asyncio store was opened) asyncio."""
    if isinstance(client, RedisCluster):
        return True
    aio = sys.modules.get("redis.asyncio.cluster")
    return aio is not None and isinstance(client, aio.RedisCluster)


def is_asyncio(client: object) -> bool:
    """A ``redis.asyncio`` client (standalone, cluster, or fakeredis's): its commands are
    coroutines."""
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))


def memory_client(url: str, flavour: Flavour = SYNC) -> Any:
    """An embedded fakeredis server: ``memory://`` is private, ``memory://name`` is shared
    by every store of this process that opens the same name (synchronous and asyncio alike).

    :raises ConfigError: fakeredis or lupa is missing: the message names the ``embedded`` extra.
    """
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis runs jobstore's Lua scripts through it)
    except ImportError as exc:
        missing = exc.name or "fakeredis"
        raise ConfigError(f"memory:// needs jobstore's embedded store, an extra ({missing} is not "
                          f"installed): {EMBEDDED_EXTRA}") from exc
    name = url.split("://", 1)[1].strip("/")
    with _memory_lock:
        if not name:
            server = fakeredis.FakeServer()
        else:
            server = _memory_servers.setdefault(name, fakeredis.FakeServer())
    return getattr(fakeredis, flavour.fake)(server=server, **DECODING)


def block_slice(client: Client) -> float:
    """A blocking wait that ends well before the client's socket timeout would fire."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # RedisCluster: the settings every node connection is made with
        pool = getattr(client, "nodes_manager", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    timeout = kwargs.get("socket_timeout")
    return 1.0 if not timeout else max(0.01, min(1.0, timeout / 2))
