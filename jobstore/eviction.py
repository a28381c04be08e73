"""Refusing a Redis that may evict keys.

jobstore's promises rest on Redis keeping every key it was told to keep: an acknowledged job must
not vanish, and the short-lived op markers that let a re-sent write recognise its own earlier
attempt must outlive the retry. Under any ``maxmemory-policy`` but ``noeviction`` Redis drops
keys when memory runs short (``volatile-*`` policies drop the markers first, the only keys with a
TTL, and a retried enqueue then raises ``JobExists`` for its own write). So stores and migration
commands read the policy first and refuse with :class:`EvictionPolicyError`.

The policy is read with ``INFO memory`` (field ``maxmemory_policy``), which works where
``CONFIG`` is renamed or disabled, as on managed Redis. On Redis Cluster every primary is asked.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from .connection import is_cluster
from .driver import UNAVAILABLE
from .errors import EvictionPolicyError, StoreUnavailable

NOEVICTION = "noeviction"


def check(client, *, allow: bool, label: str | None = None) -> None:
    """Refuse a Redis that may evict keys, unless ``allow``.

    Sends ``INFO memory`` to the server (on Cluster: to every primary, one round trip each);
    with ``allow`` sends nothing. A server without ``INFO`` (the embedded ``memory://`` store,
    which never evicts) has nothing to check. ``label``: how to name a standalone server in
    errors (default: its URL, password redacted, from the client's settings).

    :raises EvictionPolicyError: a policy other than ``noeviction``, or one that could not be read
        (``policy`` None; e.g. an ACL that denies ``INFO``).
    :raises StoreUnavailable: Redis could not be reached.
    """
    if allow:
        return
    for node, policy, detail in policies(client, label=label):
        if policy != NOEVICTION:
            raise EvictionPolicyError(policy, node, detail)


def policies(client, *, label: str | None = None) -> Iterator[tuple[str, str | None, str]]:
    """``(node, maxmemory-policy, detail)`` for each server behind ``client``.

    ``policy`` is None when it could not be read, and ``detail`` then says why. Yields nothing
    for a server that does not implement ``INFO`` (fakeredis).

    :raises StoreUnavailable: Redis could not be reached.
    """
    if is_cluster(client):
        try:
            primaries = client.get_primaries()
        except UNAVAILABLE as exc:
            where = f" at {label}" if label else ""
            raise StoreUnavailable(f"Redis Cluster{where} is unavailable: {exc}") from exc
        for node in sorted(primaries, key=lambda n: n.name):
            yield from _policy(node.name, lambda node=node: client.info("memory", target_nodes=node))
    else:
        yield from _policy(label or address(client), lambda: client.info("memory"))


def _policy(node: str, info) -> Iterator[tuple[str, str | None, str]]:
    try:
        reply = info()
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"Redis at {node} is unavailable: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            return  # no INFO: the embedded store, which never evicts
        yield node, None, f"INFO memory was refused: {exc}"
        return
    policy = reply.get("maxmemory_policy") if isinstance(reply, dict) else None
    if isinstance(policy, bytes):
        policy = policy.decode()
    if not policy:
        yield node, None, "INFO memory has no maxmemory_policy field"
        return
    yield node, str(policy), ""


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
