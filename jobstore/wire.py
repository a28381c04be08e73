"""The connections of the clients jobstore makes itself: redis-py's own classes, with two costs
taken out of every command (the same bytes on the wire, the same errors).

- **Packing in one pass.** Without hiredis, redis-py packs a command in Python and appends each
  argument to the command packed so far, a new bytes object per argument, until it holds 6,000
  bytes: a cost that grows with the square of the command's size, up to that size. An enqueue
  (about 35 arguments) spent ~21 µs there, a coalesced call of 100 jobs ~22 µs per job. The
  connections made here pack each argument once and join them once (~7 µs, ~6 µs per job).
  Where redis-py packs with hiredis (installed), hiredis packs.
- **A write timed in the caller's task** (``redis.asyncio``, Python 3.10 and 3.11). redis-py
  bounds each write by ``asyncio.wait_for(..., socket_timeout)``; before Python 3.12,
  ``wait_for`` wraps the write in a new task, and the loop runs once more for it: about as much
  client CPU as the rest of the command. The connections made here bound the write by a timeout
  scope in the caller's own task instead (``asyncio.timeout``, or ``async_timeout``, redis-py's
  dependency, before Python 3.11.3): the same limit, the same ``TimeoutError`` and the
  connection dropped, as redis-py's own write does.

Only the pools of clients jobstore makes itself (:func:`jobstore.connection.connect`: ``redis://``,
``rediss://``, ``unix://``, for the stores, the migrations and the kit) get them; a client handed
in is left as it is, and so is any pool whose connection class is not redis-py's own.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib
import sys
from typing import Any

import redis
import redis.connection

# redis-py's own encoder and Python packer (for another redis-py that has moved them: every
# argument through the connection's encoder, and no packer replaced)
Encoder: Any = getattr(redis.connection, "Encoder", None)
PYTHON_PACKER: Any = getattr(redis.connection, "PythonRespSerializer", None)

# A timeout scope in the running task: asyncio's from Python 3.11.3, as redis-py chooses (earlier
# ones had a bug), else async_timeout, redis-py's own dependency on those versions.
_timeout: Any = (asyncio.__dict__["timeout"] if sys.version_info >= (3, 11, 3)
                 else importlib.import_module("async_timeout").timeout)
SEND_IN_TASK = sys.version_info < (3, 12)  # from 3.12 on, wait_for runs in the caller's task

# Encodings in which ASCII text is its own bytes, one byte per character.
_ASCII_SAFE = frozenset({"utf-8", "ascii", "iso8859-1"})
_OTHER = object()  # (in a list of texts: a command packed one argument at a time)


class OnePassPacker:
    """redis-py's ``PythonRespSerializer`` (``pack(*args)``: a command as a list of bytes to
    send), packing each argument once: the same bytes, the same errors (redis-py's encoder
    turns each argument into bytes). A value longer than ``buffer_cutoff``, or a memoryview,
    is sent as it is, not copied, as redis-py does.

    A command of ASCII text and numbers alone (nearly every command jobstore sends: keys, ids,
    times, JSON that escapes what is not ASCII) is framed as one text and encoded once, where
    its characters are its bytes: about half the cost of encoding and framing each argument
    (~10 -> ~6 us per job of a coalesced enqueue)."""

    __slots__ = ("ascii_safe", "buffer_cutoff", "encode", "encoding", "errors")

    def __init__(self, buffer_cutoff: int, encoder: Any) -> None:
        """``encoder``: the connection's. A str is encoded here as redis-py's own ``Encoder``
        would (one call less per argument); any other encoder (a connection's
        ``encoder_class``) encodes every argument itself."""
        self.buffer_cutoff = buffer_cutoff
        self.encode = encoder.encode
        self.encoding, self.errors = "", "strict"  # ('': no str is encoded here)
        if Encoder is not None and type(encoder) is Encoder:
            self.encoding, self.errors = encoder.encoding, encoder.encoding_errors
        try:
            self.ascii_safe = bool(self.encoding) and codecs.lookup(self.encoding).name in _ASCII_SAFE
        except LookupError:  # an encoding Python does not know: the encoder says so, as before
            self.ascii_safe = False

    def pack(self, *args: Any) -> list[Any]:
        # A command name of several words ('CONFIG GET') goes as separate arguments.
        first = args[0]
        if isinstance(first, str):
            args = tuple(first.encode().split()) + args[1:]
        elif b" " in first:
            args = tuple(first.split()) + args[1:]
        if self.ascii_safe:
            cutoff = self.buffer_cutoff
            try:
                # each argument as text of the bytes redis-py's Encoder writes for it (a number:
                # its repr; bytes: a character per byte), or _OTHER, which len() refuses: a value
                # past the cutoff (redis-py sends it as a chunk of its own, not copied), a
                # memoryview, or what the encoder refuses. Then the framing, in one pass.
                texts: list[Any] = [
                    arg if type(arg) is str and len(arg) <= cutoff
                    else repr(arg) if type(arg) is int or type(arg) is float
                    else arg.decode("latin-1") if type(arg) is bytes and len(arg) <= cutoff
                    else _OTHER for arg in args]
                whole = "".join([f"${len(text)}\r\n{text}\r\n" for text in texts])
            except (TypeError, ValueError):  # (ValueError: an int too long for repr)
                pass  # packed one by one below, with redis-py's errors in its order
            else:
                # ASCII: each length counted in characters is its length in bytes
                if whole.isascii():
                    return [f"*{len(texts)}\r\n{whole}".encode()]
        encode, cutoff, encoding, errors = self.encode, self.buffer_cutoff, self.encoding, self.errors
        output: list[Any] = []
        pieces = [b"*%d\r\n" % len(args)]
        for arg in args:
            # A str encoded here as the encoder would (most arguments are str): one call less.
            value = (arg.encode(encoding, errors) if type(arg) is str and encoding
                     else encode(arg))
            size = len(value)
            if size > cutoff or isinstance(value, memoryview):
                pieces.append(b"$%d\r\n" % size)
                output.append(b"".join(pieces))
                output.append(value)
                pieces = [b"\r\n"]
            else:
                pieces.append(b"$%d\r\n%s\r\n" % (size, value))
        output.append(b"".join(pieces))
        return output


class _PackOnce:
    """Mixed into a redis-py connection class: its commands packed by :class:`OnePassPacker`
    where redis-py would pack them in Python (hiredis's packer, where redis-py uses it, is
    kept: the synchronous connections, and the asyncio ones of the redis-py versions that
    pack with it)."""

    _buffer_cutoff: int
    encoder: Any

    def _construct_command_packer(self, packer: Any) -> Any:  # (synchronous connections)
        chosen = super()._construct_command_packer(packer)  # type: ignore[misc]
        if packer is None and PYTHON_PACKER is not None and type(chosen) is PYTHON_PACKER:
            return OnePassPacker(self._buffer_cutoff, self.encoder)
        return chosen

    def pack_command(self, *args: Any) -> list[Any]:  # (asyncio connections)
        if getattr(self, "_command_packer", None) is not None:  # hiredis's, or the one above
            return super().pack_command(*args)  # type: ignore[misc]
        packer = self.__dict__.get("_one_pass")
        if packer is None:
            packer = self.__dict__["_one_pass"] = OnePassPacker(self._buffer_cutoff,
                                                                 self.encoder)
        return packer.pack(*args)


class _SendInTask:
    """Mixed into a redis.asyncio connection class: its writes, timed without a new task."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)  # type: ignore[misc]
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


def _redis_py_classes(asyncio_client: bool) -> tuple[Any, ...]:
    connections: Any = redis.connection
    if asyncio_client:
        connections = importlib.import_module("redis.asyncio.connection")
    return tuple(cls for cls in (getattr(connections, name, None) for name in (
        "Connection", "UnixDomainSocketConnection", "SSLConnection")) if cls is not None)


def tune(client: Any, asyncio_client: bool) -> None:
    """Give ``client``'s pool (a client of redis-py's, with redis-py's own connection class)
    the connections described above; anything else is left as it is."""
    pool: Any = getattr(client, "connection_pool", None)
    base = getattr(pool, "connection_class", None)
    if base is None or base not in _redis_py_classes(asyncio_client):
        return
    mixins = ((_SendInTask,) if asyncio_client and SEND_IN_TASK else ()) + (_PackOnce,)
    if base not in _CLASSES:
        _CLASSES[base] = type(base.__name__, (*mixins, base), {"__module__": __name__})
    pool.connection_class = _CLASSES[base]
