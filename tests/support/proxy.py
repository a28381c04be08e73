"""A small threaded TCP proxy that injects network faults between a client and Redis.

Point a client at ``FaultProxy.url`` instead of the server, then arm a fault:

* ``drop_next_reply(match)`` - the server executes the command, the client
  never sees the reply (its connection is closed), so a retrying client
  re-sends it.
* ``cut_next_request(match)`` - the command never reaches the server and the
  connection is closed.
* ``pause()``/``resume()`` - stop moving bytes, so clients hang until timeouts.
* ``close_all()`` - drop every open connection.

Faults work on whole ``recv()`` chunks.  redis-py writes one command (or one
whole pipeline) per ``sendall``, which on loopback arrives as one chunk, so
matching a command name such as ``b"EVALSHA"`` in a chunk is reliable enough.
"""

from __future__ import annotations

import selectors
import socket
import threading

from .servers import free_port

__all__ = ["FaultProxy"]

_CHUNK = 65536
# Every blocking wait uses this tick so stop()/close_all()/resume() are noticed
# promptly without any cross-thread wake-up machinery.
_TICK = 0.05


class _Fault:
    """An armed one-shot fault: fires on the next client chunk containing ``match``."""

    def __init__(self, match: bytes | None) -> None:
        self.match = match

    def matches(self, data: bytes) -> bool:
        return self.match is None or self.match in data


class _Pair:
    """One accepted client connection and its upstream server connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.closed = threading.Event()

    def shutdown(self) -> None:
        # shutdown() (not close()) from a foreign thread: it makes the peer see
        # EOF at once and wakes the pair's select(), while the fd stays valid
        # until the owning thread closes it, so no fd can be reused under it.
        self.closed.set()
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.server):
            try:
                s.close()
            except OSError:
                pass


class FaultProxy:
    """Threaded TCP proxy from a free 127.0.0.1 port to ``(target_host, target_port)``."""

    host = "127.0.0.1"

    def __init__(self, target_host: str, target_port: int, *, reply_timeout: float = 5.0) -> None:
        self.target = (target_host, target_port)
        self.reply_timeout = reply_timeout
        self.port: int | None = None
        self.requests_seen = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._drop: _Fault | None = None
        self._cut: _Fault | None = None
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the proxy's listening side."""
        return f"redis://{self.host}:{self.port}/0"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening and accepting connections in a background thread."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = free_port()
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        self._spawn(self._accept_loop, "accept")
        return self

    def stop(self) -> None:
        """Stop accepting, drop every connection and join the worker threads."""
        self._stopping.set()
        self._running.set()  # let paused pair threads notice the stop
        self.close_all()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------

    def drop_next_reply(self, match: bytes | None = None) -> None:
        """Deliver the next request containing ``match`` (None: any), swallow its reply, close.

        The server executes the command; the client sees a closed connection.
        """
        with self._lock:
            self._drop = _Fault(match)

    def cut_next_request(self, match: bytes | None = None) -> None:
        """Do not deliver the next request containing ``match`` (None: any); close the connection."""
        with self._lock:
            self._cut = _Fault(match)

    def pause(self) -> None:
        """Stop forwarding in both directions (new connections are accepted but stall)."""
        self._running.clear()

    def resume(self) -> None:
        """Forward again after ``pause()``."""
        self._running.set()

    def close_all(self) -> None:
        """Drop every currently open connection (both sides)."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.shutdown()

    @property
    def armed(self) -> bool:
        """True while a drop or cut fault is waiting for its request."""
        with self._lock:
            return self._drop is not None or self._cut is not None

    # -- internals ---------------------------------------------------------

    def _spawn(self, target, name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=f"FaultProxy-{self.port}-{name}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                ready = _readable([listener], _TICK)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):  # ValueError: a closed listener has no descriptor
                return  # listener closed by stop()
            try:
                server = socket.create_connection(self.target, timeout=self.reply_timeout)
            except OSError:
                # Upstream down: behave like it, the client sees the connection drop.
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Bounds sendall() towards a peer that stopped reading.
                s.settimeout(self.reply_timeout)
            pair = _Pair(client, server)
            with self._lock:
                self.connections += 1
                self._pairs.add(pair)
            self._spawn(self._pump, "pump", pair)

    def _pump(self, pair: _Pair) -> None:
        try:
            self._pump_until_closed(pair)
        except (OSError, ValueError):  # ValueError: a socket closed meanwhile
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            pair.close()

    def _pump_until_closed(self, pair: _Pair) -> None:
        while not (self._stopping.is_set() or pair.closed.is_set()):
            if not self._running.wait(_TICK):
                continue  # paused: leave the bytes in the kernel buffers
            readable = _readable([pair.client, pair.server], _TICK)
            if not self._running.is_set():
                continue  # paused while we were waiting
            if pair.server in readable:
                data = pair.server.recv(_CHUNK)
                if not data:
                    return
                pair.client.sendall(data)
            if pair.client in readable:
                data = pair.client.recv(_CHUNK)
                if not data or not self._forward_request(pair, data):
                    return

    def _forward_request(self, pair: _Pair, data: bytes) -> bool:
        """Forward one client chunk, applying an armed fault; False closes the pair."""
        with self._lock:
            if self._cut is not None and self._cut.matches(data):
                self._cut = None
                return False
            drop = self._drop is not None and self._drop.matches(data)
            if drop:
                self._drop = None
            self.requests_seen += 1
        pair.server.sendall(data)
        if not drop:
            return True
        # Wait for (and discard) the reply so the command has certainly run
        # before the client's connection goes away.
        ready = _readable([pair.server], self.reply_timeout)
        if ready:
            pair.server.recv(_CHUNK)
        return False


def _readable(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets of ``socks`` ready to read within ``timeout`` seconds: select() through
    ``selectors`` (poll/epoll), which, unlike select.select, takes descriptors above 1023 (a
    process that opened many connections has them)."""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        return [key.fileobj for key, _ in selector.select(timeout)]  # type: ignore[misc]
