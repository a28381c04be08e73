"""redis.asyncio connections that send a command without a task of its own (Python 3.10, 3.11).

redis-py's asyncio connection bounds each write by ``asyncio.wait_for(..., socket_timeout)``;
before Python 3.12, ``wait_for`` wraps the write in a new task, and the loop runs once more for
it: about as much client CPU as the rest of the command (a one-at-a-time enqueue spent 1.7x the
synchronous client's CPU on redis-py's asyncio side). The connections made here bound the write
by a timeout scope in the caller's own task instead (``asyncio.timeout``, or ``async_timeout``,
redis-py's dependency, before Python 3.11.3): the same limit, the same ``TimeoutError`` and the
connection dropped, as redis-py's own write does. Only the pools of clients jobstore makes itself
(:func:`jobstore.aio.open`) for ``redis://``, ``rediss://`` and ``unix://`` get them; a client
handed in is left as it is.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any

import redis
import redis.asyncio.connection as aio_connection

# A timeout scope in the running task: asyncio's from Python 3.11.3, as redis-py chooses (earlier
# ones had a bug), else async_timeout, redis-py's own dependency on those versions.
_timeout: Any = (asyncio.__dict__["timeout"] if sys.version_info >= (3, 11, 3)
                 else importlib.import_module("async_timeout").timeout)
NEEDED = sys.version_info < (3, 12)  # from 3.12 on, wait_for runs in the caller's task


class _SendInTask:
    """Mixed into a redis.asyncio connection class: its writes, timed without a new task."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)  # type: ignore[misc,no-any-return]
        # Connecting (its handshake bounded by socket_connect_timeout, as redis-py does) and the
        # health check come first, outside the write's own limit; then only the write is timed.
        if not self.is_connected:  # type: ignore[attr-defined]
            connect = getattr(self, "connect_check_health", None)
            await (connect(check_health=False) if connect is not None
                   else self.connect())  # type: ignore[attr-defined]
        if check_health:
            await self.check_health()  # type: ignore[attr-defined]
        self.socket_timeout = None  # (redis-py's write then runs as it would untimed)
        try:
            async with _timeout(timeout):
                await super().send_packed_command(command, False)  # type: ignore[misc]
        except asyncio.TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout
        return None


_CLASSES: dict[type, type] = {}


def send_in_task(client: Any) -> None:
    """Give ``client``'s pool (a redis.asyncio client's, with redis-py's own connection class)
    connections that write without a task of their own; anything else is left as it is."""
    pool = getattr(client, "connection_pool", None)
    if not NEEDED or pool is None:
        return
    base = getattr(pool, "connection_class", None)
    if base not in (aio_connection.Connection, aio_connection.UnixDomainSocketConnection,
                    getattr(aio_connection, "SSLConnection", None)) or base is None:
        return
    if base not in _CLASSES:
        _CLASSES[base] = type(base.__name__, (_SendInTask, base), {"__module__": __name__})
    pool.connection_class = _CLASSES[base]
