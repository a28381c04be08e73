"""The server check as an operation: refuse a Redis too old for jobstore, or one that may evict
keys (why: :mod:`jobstore.eviction`). Steps only (one ``INFO`` per server), so every driver runs
it: the synchronous store, the asyncio store and the migrations alike."""

from __future__ import annotations

from typing import Any

from .connection import MINIMUM, _unknown_command
from .errors import EvictionPolicyError, UnsupportedServer
from .ops import Op
from .steps import Batch, Command, Primaries, Refused

NOEVICTION = "noeviction"

# (node, INFO reply as a dict or None when refused, why it is None)
Info = tuple[str, "dict[str, Any] | None", str]


def check(allow: bool, label: str) -> Op[None]:
    """Refuse a server older than :data:`jobstore.connection.MINIMUM`, and (unless ``allow``) one whose
    ``maxmemory-policy`` is not ``noeviction`` or cannot be read. ``label``: how a standalone
    server is named in errors (a Cluster's primaries by their names)."""
    for node, info, detail in (yield from infos(label)):
        if info is not None:
            check_version(node, info)
        if allow:
            continue
        policy, detail = policy_of(info, detail)
        if policy != NOEVICTION:
            raise EvictionPolicyError(policy, node, detail)


def infos(label: str) -> Op[list[Info]]:
    """``(node, INFO reply, detail)`` of each server; a server without INFO (the embedded
    store, which never evicts) is left out."""
    found: list[Info] = []
    for name in (yield Primaries()):
        (reply,) = yield Batch((Command(("INFO",), node=name),), tolerate_errors=True)
        node = label if name is None else name
        if isinstance(reply, Exception):
            text = str(reply)
            if _unknown_command(reply):
                continue  # no INFO: the embedded store, which never evicts
            if "db index is out of range" in text.lower():
                raise Refused(text)  # reported as the configuration error it is
            found.append((node, None, f"INFO was refused: {text}"))
        elif not isinstance(reply, dict):
            found.append((node, None, "INFO did not answer with its fields"))
        else:
            found.append((node, {str(k): v for k, v in reply.items()}, ""))
    return found


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


def check_version(node: str, info: dict[str, Any]) -> None:
    shown, numbers = version(info)
    if numbers is not None and numbers < MINIMUM:
        raise UnsupportedServer(node, shown, ".".join(map(str, MINIMUM)))


def policy_of(info: dict[str, Any] | None, detail: str) -> tuple[str | None, str]:
    if info is None:
        return None, detail
    policy = info.get("maxmemory_policy")
    if not policy:
        return None, "INFO has no maxmemory_policy field"
    return str(policy), ""
