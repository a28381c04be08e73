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

from . import server_check
from .connection import is_cluster
from .drivers.sync import SyncDriver
from .server_check import NOEVICTION as NOEVICTION
from .server_check import version as version


def check(client: Any, *, allow: bool, label: str | None = None) -> None:
    """Refuse a server older than jobstore needs, and one that may evict keys, unless ``allow``.

    Runs :func:`jobstore.server_check.check` on ``client``: one ``INFO`` to the server (on
    Cluster: to every primary, one round trip each), with ``allow`` too (for the version). A
    server without ``INFO`` (the embedded ``memory://`` store, which never evicts) has nothing
    to check. ``label``: how to name a standalone server in errors (default: its URL, password
    redacted, from the client's settings).

    :raises UnsupportedServer: a server older than :data:`jobstore.connection.MINIMUM`. One whose
        ``INFO`` is refused (an ACL) or has no parseable ``redis_version`` is not refused for
        its version: a command it lacks is reported when it fails, as RedisCommandError.
    :raises EvictionPolicyError: (not ``allow``) a policy other than ``noeviction``, or one
        that could not be read (``policy`` None; e.g. an ACL that denies ``INFO``).
    :raises AuthenticationFailed: the server refused the URL's credentials.
    :raises ConfigError: the server has no database of the URL's number.
    :raises StoreUnavailable: Redis could not be reached.
    """
    label = label or label_of(client)
    SyncDriver(client, None, label).run(server_check.check(allow, label))


def policies(client: Any, *, label: str | None = None) -> Iterator[tuple[str, str | None, str]]:
    """``(node, maxmemory-policy, detail)`` for each server behind ``client``.

    ``policy`` is None when it could not be read, and ``detail`` then says why. Yields nothing
    for a server that does not implement ``INFO`` (fakeredis).

    :raises StoreUnavailable: Redis could not be reached.
    """
    label = label or label_of(client)
    for node, info, detail in SyncDriver(client, None, label).run(server_check.infos(label)):
        yield (node, *server_check.policy_of(info, detail))


def label_of(client: Any) -> str:
    """How errors name the server(s) behind ``client``."""
    return "Redis Cluster" if is_cluster(client) else address(client)


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
