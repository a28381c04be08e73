"""From a URL to a redis-py client. The only module that knows URL schemes."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import ConfigError

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "memory")

# Defaults a service wants from a store: a dead server is reported, not waited on forever.
CLIENT_DEFAULTS = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0, "health_check_interval": 30}


def default_retry() -> Retry:
    """redis-py's own retry, which ``from_url`` leaves off: a command whose connection broke is
    re-sent (every jobstore write recognises its own earlier attempt, so this is safe)."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), retries=3)

_memory_lock = threading.Lock()
_memory_servers: dict[str, Any] = {}


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: the only form of a URL we ever print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:***@{hostinfo}" if userinfo else hostinfo
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, client_options: dict[str, Any] | None = None):
    """A client for ``url``; nothing is sent to Redis yet.

    :raises ConfigError: an unknown scheme, an unparseable URL, or a scheme not supported yet.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("url must be a non-empty str such as redis://localhost:6379/0")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        if client_options:
            raise ConfigError("client_options do not apply to memory:// (an embedded fakeredis)")
        return memory_client(url)
    if scheme == "redis+cluster":
        return cluster_client(url, client_options)
    if scheme not in SCHEMES:
        raise ConfigError(
            f"url {redact(url)!r} has an unknown scheme; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    options = {**CLIENT_DEFAULTS, "retry": default_retry(), "decode_responses": True,
               **(client_options or {})}
    try:
        client = redis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"url {redact(url)!r} is invalid: {exc}") from None
    pool = client.connection_pool
    try:
        # Connections are made lazily; build one (unconnected) now so that a misspelt option
        # fails here, as a ConfigError, and not at the first operation.
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        raise ConfigError(f"client_options: {exc}") from None
    return client


def cluster_client(url: str, client_options: dict[str, Any] | None):
    """A redis-py ``RedisCluster`` on the seed nodes of ``redis+cluster://[user:pass@]h:p,h:p``.

    redis-py asks the seeds for the slot map at once, so an unreachable cluster is reported
    here (StoreUnavailable) rather than at the first operation.
    """
    from redis.cluster import ClusterNode, RedisCluster

    from .errors import StoreUnavailable

    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes = []
    for hostport in filter(None, hosts.split(",")):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"url {redact(url)!r}: seed nodes must be host:port, comma-separated")
        nodes.append(ClusterNode(host, int(port)))
    if not nodes:
        raise ConfigError(f"url {redact(url)!r} names no seed node")
    options = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0, "decode_responses": True,
               **(client_options or {})}
    if user:
        options.setdefault("username", unquote(user))
    if password:
        options.setdefault("password", unquote(password))
    try:
        return RedisCluster(startup_nodes=nodes, **options)
    except TypeError as exc:
        raise ConfigError(f"client_options: {exc}") from None
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"Redis Cluster at {redact(url)} is unavailable: {exc}") from exc


def is_cluster(client) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def memory_client(url: str):
    """An embedded fakeredis server: ``memory://`` is private, ``memory://name`` is shared
    by every store of this process that opens the same name."""
    try:
        import fakeredis
    except ImportError as exc:  # pragma: no cover - fakeredis is a dependency
        raise ConfigError("memory:// needs the fakeredis package (pip install 'fakeredis[lua]')") from exc
    name = url.split("://", 1)[1].strip("/")
    with _memory_lock:
        if not name:
            server = fakeredis.FakeServer()
        else:
            server = _memory_servers.setdefault(name, fakeredis.FakeServer())
    return fakeredis.FakeRedis(server=server, decode_responses=True)
