"""The asyncio store with the synchronous store's face, so that a test written against
:class:`jobstore.JobStore` runs unchanged on :class:`jobstore.aio.AsyncJobStore` too.

``SyncFace(url, strategy, **options)`` opens an asyncio store and runs each of its coroutines to
its end on an event loop of its own (one per face: the store's connections belong to that loop).
What the tests read besides the operations passes through (``context``, ``keys``, ``_writes``,
``_new_job``...); ``client`` is a synchronous client of the same Redis (or the same
``memory://`` server), as the tests inspect keys with; ``driver._do(step)`` and
``driver.run(op)`` send a step or run an operation through the asyncio driver.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import redis.asyncio

import jobstore
import jobstore.aio

FLAVOURS = ["sync", "async"]


class _DriverFace:
    def __init__(self, face: SyncFace) -> None:
        self._face = face
        self._driver = face.aio.driver
        self.cluster = self._driver.cluster
        self.core = self._driver.core
        self.tidier = self  # tidier.wait(): every delete submitted so far was tried

    def _do(self, step: Any) -> Any:
        return self._face.wait(self._driver._do(step))

    def run(self, op: Any, **kwargs: Any) -> Any:
        return self._face.wait(self._driver.run(op, **kwargs))

    def wait(self, timeout: float | None = None) -> bool:
        self._face.wait(self._driver.tidier.wait())
        return True


class SyncFace:
    """An :class:`jobstore.aio.AsyncJobStore` whose coroutine methods are plain calls."""

    def __init__(self, url: str, strategy: str = "legacy", **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.aio = jobstore.aio.open(url, strategy, **options)
        self._reader = jobstore.open(url, "legacy")  # its client only, for the tests' reads
        self.client = self._reader.client
        self.driver = _DriverFace(self)

    def wait(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.aio, name)
        if inspect.iscoroutinefunction(found):
            def call(*args: Any, **kwargs: Any) -> Any:
                return self.wait(found(*args, **kwargs))
            return call
        return found

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.wait(self.aio.close())
        self._reader.close()
        self.loop.close()

    def __enter__(self) -> SyncFace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(flavour: str, url: str, strategy: str = "legacy", **options: Any) -> Any:
    """A synchronous store, or (``flavour`` "async") an asyncio one behind a :class:`SyncFace`."""
    if flavour == "async":
        return SyncFace(url, strategy, **options)
    return jobstore.open(url, strategy, **options)


class AsyncCountingConnection(redis.asyncio.Connection):
    """tests/store/test_roundtrips.py's CountingConnection for ``redis.asyncio``: counts round trips
    in the same tally (a send that follows a read)."""

    tally: Any = None  # the namespace with ``count`` and ``reading`` (set by test_roundtrips)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if getattr(self.tally, "reading", True):
            self.tally.count = getattr(self.tally, "count", 0) + 1
            self.tally.reading = False
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self.tally.reading = True
        return await super().read_response(*args, **kwargs)
