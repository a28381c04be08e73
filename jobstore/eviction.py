"""Refusing a Redis that may evict keys, or that is too old for jobstore.

jobstore's promises rest on Redis keeping every key it was told to keep: an acknowledged job must
not vanish, and the short-lived op markers that let a re-sent write recognise its own earlier
attempt must outlive the retry. Under any ``maxmemory-policy`` but ``noeviction`` Redis drops
keys when memory runs short (``volatile-*`` policies drop the markers first, the only keys with a
TTL, and a retried enqueue then raises ``JobExists`` for its own write). So stores and migration
commands read the policy first and refuse with :class:`EvictionPolicyError`.

The same reply tells the server's version: one older than jobstore needs
(:data:`jobstore.connection.MINIMUM`, Redis 6.2: BLMOVE, LMOVE) is refused with
:class:`UnsupportedServer` before anything is written, instead of failing at the first
command it lacks (a worker's first wait on an empty queue).

Both are read with one ``INFO`` (its default sections hold ``redis_version`` and
``maxmemory_policy``), which works where ``CONFIG`` is renamed or disabled, as on managed Redis.
On Redis Cluster every primary is asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .connection import (MINIMUM, REDIS_ERRORS, UNAVAILABLE, _unknown_command, is_cluster,
                         reported)
from .errors import EvictionPolicyError, RedisCommandError, StoreUnavailable, UnsupportedServer

NOEVICTION = "noeviction"


def check(client, *, allow: bool, label: str | None = None) -> None:
    """Refuse a server older than jobstore needs, and one that may evict keys, unless ``allow``.

    Sends one ``INFO`` to the server (on Cluster: to every primary, one round trip each),
    with ``allow`` too (for the version). A server without ``INFO`` (the embedded ``memory://``
    store, which never evicts) has nothing to check. ``label``: how to name a standalone server
    in errors (default: its URL, password redacted, from the client's settings).

    :raises UnsupportedServer: a server older than :data:`jobstore.connection.MINIMUM`. One whose
        ``INFO`` is refused (an ACL) or has no parseable ``redis_version`` is not refused for
        its version: a command it lacks is reported when it fails, as RedisCommandError.
    :raises EvictionPolicyError: (not ``allow``) a policy other than ``noeviction``, or one
        that could not be read (``policy`` None; e.g. an ACL that denies ``INFO``).
    :raises AuthenticationFailed: the server refused the URL's credentials.
    :raises ConfigError: the server has no database of the URL's number.
    :raises StoreUnavailable: Redis could not be reached.
    """
    for node, info, detail in _infos(client, label=label):
        if info is not None:
            _check_version(node, info)
        if allow:
            continue
        policy, detail = _policy(info, detail)
        if policy != NOEVICTION:
            raise EvictionPolicyError(policy, node, detail)


def policies(client, *, label: str | None = None) -> Iterator[tuple[str, str | None, str]]:
    """``(node, maxmemory-policy, detail)`` for each server behind ``client``.

    ``policy`` is None when it could not be read, and ``detail`` then says why. Yields nothing
    for a server that does not implement ``INFO`` (fakeredis).

    :raises StoreUnavailable: Redis could not be reached.
    """
    for node, info, detail in _infos(client, label=label):
        yield (node, *_policy(info, detail))


def version(info: dict[str, Any]) -> tuple[str, tuple[int, ...] | None]:
    """``(what the server is, as shown: "Redis 6.2.14", "Valkey 8.1.8"; its redis_version as
    numbers, None when it has none that parses)``, from an ``INFO`` reply."""
    redis_version = str(info.get("redis_version", ""))
    try:
        numbers: tuple[int, ...] | None = tuple(int(part) for part in redis_version.split("."))
    except ValueError:
        numbers = None
    if info.get("valkey_version"):  # Valkey's redis_version is the Redis it is compatible with
        return f"Valkey {info['valkey_version']}", numbers
    return f"Redis {redis_version or '(version unknown)'}", numbers


def _check_version(node: str, info: dict[str, Any]) -> None:
    shown, numbers = version(info)
    if numbers is not None and numbers < MINIMUM:
        raise UnsupportedServer(node, shown, ".".join(map(str, MINIMUM)))


def _infos(client, *, label: str | None) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """``(node, INFO reply, detail)`` of each server; the reply is None when INFO was refused,
    and ``detail`` then says why."""
    if is_cluster(client):
        try:
            primaries = client.get_primaries()
        except UNAVAILABLE as exc:
            where = f" at {label}" if label else ""
            raise StoreUnavailable(f"Redis Cluster{where} is unavailable: {exc}") from exc
        for node in sorted(primaries, key=lambda n: n.name):
            yield from _info(node.name, lambda node=node: client.info(target_nodes=node))
    else:
        yield from _info(label or address(client), client.info)


def _info(node: str, info) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    try:
        reply = info()
    except REDIS_ERRORS as exc:
        error = reported(exc, node)
        if type(error) is not RedisCommandError:  # down, a refused login, no such database
            raise error from exc
        if _unknown_command(exc):
            return  # no INFO: the embedded store, which never evicts
        yield node, None, f"INFO was refused: {exc}"
        return
    if not isinstance(reply, dict):
        yield node, None, "INFO did not answer with its fields"
        return
    yield node, {str(k): v.decode() if isinstance(v, bytes) else v for k, v in reply.items()}, ""


def _policy(info: dict[str, Any] | None, detail: str) -> tuple[str | None, str]:
    if info is None:
        return None, detail
    policy = info.get("maxmemory_policy")
    if not policy:
        return None, "INFO has no maxmemory_policy field"
    return str(policy), ""


def address(client) -> str:
    """A standalone client's server as a URL with any password shown as ``***`` (the form every
    jobstore message uses), built from the client's connection settings."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    if not kwargs.get("host"):
        return type(client).__name__
    user = kwargs.get("username") or ""
    auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
    tls = "ssl" in getattr(getattr(pool, "connection_class", None), "__name__", "").lower()
    return (f"{'rediss' if tls else 'redis'}://{auth}{kwargs['host']}:{kwargs.get('port', 6379)}"
            f"/{kwargs.get('db', 0)}")
