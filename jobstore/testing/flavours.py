"""The two flavours of store the kit's machines drive: ``"sync"`` (:class:`jobstore.JobStore`)
and ``"async"`` (:class:`jobstore.aio.AsyncJobStore`, with its migration
:class:`jobstore.migration.aio.AsyncMigration`).

Hypothesis's rules are plain functions, so an asyncio store is driven through
:class:`Blocking`, which runs each of its coroutines to its end on an :class:`EventLoop` and
hands back the result or raises the error: the machines' rules and
checks are the same for both flavours, and the model is the same model. Within
:func:`one_loop` (:func:`jobstore.testing.running.run_machine` opens one per test run) every
asyncio machine shares one loop, opened on first use and closed when the run ends; a machine
driven outside it opens a loop of its own and closes it in ``teardown``.

The asyncio machines make fewer runs than the synchronous ones (:func:`flavour_settings`):
a share of the profile's ``max_examples``, :data:`ASYNC_SHARE` unless
``JOBSTORE_KIT_ASYNC_SHARE`` (or a class's ``async_share``) says otherwise; 0 leaves the
asyncio flavour out (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Generic, TypeVar

from hypothesis import settings as Settings

from ..connection import DECODING, asyncio_flavour, connect

__all__ = ["ASYNC_SHARE", "ENV_ASYNC_SHARE", "FLAVOURS", "Blocking", "EventLoop", "async_client",
           "async_share", "check_flavour", "flavour_settings", "flavours", "machine_loop",
           "one_loop"]

T = TypeVar("T")
W = TypeVar("W")

FLAVOURS = ("sync", "async")
ENV_ASYNC_SHARE = "JOBSTORE_KIT_ASYNC_SHARE"
# The asyncio store runs the very operations the synchronous one does (only the driver
# differs), so a tenth of the runs covers its driver, its coalesced enqueues and its migration.
# A tenth, not a quarter: a profile's first runs are its longest (the ci profile's first 7 of
# 25 runs make 29% of its steps and half its time), and a tenth adds about a fifth to the
# kit's time.
ASYNC_SHARE = 0.1


def check_flavour(flavour: str) -> str:
    """``flavour`` if it is one of :data:`FLAVOURS`.

    :raises ValueError: another value.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(map(repr, FLAVOURS))}, not {flavour!r}")
    return flavour


def async_share(share: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """The share of a profile's machine runs the asyncio flavour makes: ``share`` if given,
    else ``JOBSTORE_KIT_ASYNC_SHARE``, else :data:`ASYNC_SHARE`.

    :raises ValueError: a share that is not a number from 0 to 1.
    """
    if share is None:
        env = os.environ if environ is None else environ
        text = env.get(ENV_ASYNC_SHARE, "").strip()
        try:
            share = float(text) if text else ASYNC_SHARE
        except ValueError:
            raise ValueError(f"{ENV_ASYNC_SHARE}={text!r} is not a number from 0 to 1") from None
        where = f"{ENV_ASYNC_SHARE}={text!r}"
    else:
        where = f"async_share={share!r}"
    if not 0 <= share <= 1:
        raise ValueError(f"{where} is not a number from 0 to 1")
    return share


def flavours(share: float | None = None, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The flavours the machines run in: both, or ``("sync",)`` when the share is 0."""
    return FLAVOURS if async_share(share, environ) > 0 else ("sync",)


def flavour_settings(base: Settings, flavour: str, share: float | None = None) -> Settings:
    """``base`` for the synchronous machines; for the asyncio ones, ``base`` with
    ``max_examples`` cut to its share (at least one run)."""
    if check_flavour(flavour) == "sync":
        return base
    fraction = async_share(share)
    if fraction >= 1:
        return base
    return Settings(base, max_examples=max(1, math.ceil(base.max_examples * fraction)))


class EventLoop:
    """An event loop that runs one coroutine at a time to its end in the calling thread, as
    ``asyncio.Runner`` does (which Python 3.10 lacks)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result, or its error, once it ran to its end on the loop.

        :raises RuntimeError: the loop is closed, or this thread is running another one (the
            machines are driven from synchronous code: not from within an ``async`` test).
        """
        problem = ("the kit's event loop is closed" if self.closed else
                   "the kit drives asyncio stores from synchronous code; this thread is already "
                   "running an event loop (run the machines from a plain, not an async, test)"
                   if asyncio._get_running_loop() is not None else None)
        if problem:
            coroutine.close()
            raise RuntimeError(problem)
        return self._loop.run_until_complete(coroutine)

    def close(self) -> None:
        """Cancel what is left on the loop (deletes of spent keys under way), and close it."""
        if self.closed:
            return
        try:
            self.run(_cancel_the_rest())
            self.run(self._loop.shutdown_asyncgens())
            self.run(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()


async def _cancel_the_rest() -> None:
    """Cancel the loop's other tasks (deletes of spent keys still under way) and wait for them."""
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class Blocking(Generic[W]):
    """An asyncio object (an :class:`~jobstore.aio.AsyncJobStore`, an
    :class:`~jobstore.migration.aio.AsyncMigration`) with a synchronous face: each of its
    coroutine methods is a plain call run on ``loop``; other attributes pass through."""

    def __init__(self, wrapped: W, loop: EventLoop) -> None:
        self.wrapped = wrapped
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.wrapped, name)
        if not inspect.iscoroutinefunction(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.loop.run(found(*args, **kwargs))

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<blocking {self.wrapped!r}>"


class _Shared(threading.local):
    depth = 0
    loop: EventLoop | None = None


_shared = _Shared()


@contextlib.contextmanager
def one_loop() -> Iterator[None]:
    """Within the block, the asyncio machines of this thread share one :class:`EventLoop`,
    opened when the first asks for it and closed when the outermost block ends."""
    _shared.depth += 1
    try:
        yield
    finally:
        _shared.depth -= 1
        if _shared.depth == 0 and _shared.loop is not None:
            loop, _shared.loop = _shared.loop, None
            loop.close()


def machine_loop() -> tuple[EventLoop, bool]:
    """The loop an asyncio machine runs on, and whether the machine owns it (closes it in its
    teardown): the block's shared loop within :func:`one_loop`, else a new one."""
    if _shared.depth == 0:
        return EventLoop(), True
    if _shared.loop is None or _shared.loop.closed:
        _shared.loop = EventLoop()
    return _shared.loop, False


def async_client(url: str, client: Any) -> Any:
    """A ``redis.asyncio`` client of the server ``client`` (a synchronous client opened on
    ``url``) talks to: for ``memory://``, the same embedded server, even a private one."""
    flavour = asyncio_flavour()
    server = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}).get("server")
    if url.startswith("memory:") and server is not None:
        import fakeredis

        return getattr(fakeredis, flavour.fake)(server=server, **DECODING)
    return connect(url, None, flavour)
