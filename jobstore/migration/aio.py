"""The migration on asyncio: :class:`AsyncMigration` awaits the very operations
:class:`~jobstore.migration.Migration` runs (:class:`~jobstore.migration.control.Operations`),
on :class:`jobstore.drivers.aio.AsyncDriver`. Each step is awaited, so a pass of many batches
leaves the event loop free between its round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from ..connection import asyncio_flavour, connect
from ..drivers.aio import AsyncDriver
from ..events import Events
from ..phases import MigrationState, Phase
from .control import Operations
from .core import Progress, Run
from .plan import SAMPLE, TIMED
from .reports import PassReport, PlanReport, SetAsideReport, VerifyReport

T = TypeVar("T")


def open_migration(url: str, *, source: str = "legacy", target: str = "workspace",
                   prefix: str = "ai", client_options: dict[str, Any] | None = None,
                   events: Events | None = None, allow_eviction: bool = False,
                   own_prefix: str | None = None) -> AsyncMigration:
    """An :class:`AsyncMigration` on ``url`` (as :func:`jobstore.open_migration`). Nothing is
    sent until its first call is awaited.

    :raises ConfigError, UnknownStrategy: bad URL, prefix or schema name.
    """
    migration = AsyncMigration(connect(url, client_options, asyncio_flavour()), source=source,
                               target=target, prefix=prefix, url=url, events=events,
                               allow_eviction=allow_eviction, own_prefix=own_prefix)
    migration.owns_client = True
    return migration


class AsyncMigration(Operations):
    """:class:`jobstore.migration.Migration` on asyncio: the same calls as coroutines, with the
    same checks, errors, reports, events and metrics (see each method there).

    ``client``: a ``redis.asyncio`` client (or fakeredis's); the other arguments as
    ``Migration``'s, but ``wait`` (how it waits for a switch to reach every store) defaults to
    ``asyncio.sleep`` and may be a coroutine function or a plain one.

    A cancelled call stops at the await it was in. A pass resumes from its checkpoint when run
    again (at most its last batch is done twice, which every step allows); a cancelled verify
    records nothing. Ctrl-C that reaches a pass as a KeyboardInterrupt raises
    :class:`~jobstore.migration.MigrationInterrupted`, as the synchronous migration does.
    """

    _driver_class = AsyncDriver
    driver: AsyncDriver
    client: Any  # a redis.asyncio client
    # Whether close() closes the client too (one open_migration opened; a store's is the store's).
    owns_client = False

    def __init__(self, client: Any, *, source: str = "legacy", target: str = "workspace",
                 prefix: str = "ai", url: str | None = None, events: Events | None = None,
                 clock: Callable[[], float] | None = None,
                 wait: Callable[[float], Any] = asyncio.sleep, allow_eviction: bool = False,
                 own_prefix: str | None = None) -> None:
        super().__init__(client, source=source, target=target, prefix=prefix, url=url,
                         events=events, clock=clock, wait=wait, allow_eviction=allow_eviction,
                         own_prefix=own_prefix)

    async def state(self) -> MigrationState:
        """:meth:`jobstore.migration.Migration.state`."""
        return await self._go(self._call_state())

    async def now(self) -> float:
        """:meth:`jobstore.migration.Migration.now`."""
        return await self._go(self._call_now())

    async def set_phase(self, phase: str | Phase, *, force: bool = False, reason: str = "",
                        wait: bool = True) -> MigrationState:
        """:meth:`jobstore.migration.Migration.set_phase` (``wait`` leaves the loop free)."""
        return await self._go(self._call_set_phase(phase, force, reason, wait))

    async def plan(self, *, rate: float | None = None, sample: int = SAMPLE, top: int = 10,
                   batch: int = 500, keys_per_call: int | None = None, timed: int = TIMED,
                   seed: int | None = None) -> PlanReport:
        """:meth:`jobstore.migration.Migration.plan`."""
        return await self._go(self._call_plan(rate, sample, top, batch, keys_per_call, timed,
                                              seed))

    async def fit_refusal(self, state: MigrationState, new: Phase) -> str:
        """:meth:`jobstore.migration.Migration.fit_refusal`."""
        return await self._go(self._call_fit_refusal(state, new))

    async def set_rollout(self, *, percent: float | None = None, allow: list[str] | None = None,
                          deny: list[str] | None = None) -> MigrationState:
        """:meth:`jobstore.migration.Migration.set_rollout`."""
        return await self._go(self._call_set_rollout(percent, allow, deny))

    async def log(self, limit: int = 20) -> list[dict[str, Any]]:
        """:meth:`jobstore.migration.Migration.log`."""
        return await self._go(self._call_log(limit))

    async def status(self) -> dict[str, Any]:
        """:meth:`jobstore.migration.Migration.status`."""
        return await self._go(self._call_status())

    async def backfill(self, *, batch: int = 500, rate: float | None = None,
                       dry_run: bool = False, restart: bool = False,
                       progress: Progress | None = None,
                       keys_per_call: int | None = None) -> PassReport:
        """:meth:`jobstore.migration.Migration.backfill`."""
        return await self._go(self._call_backfill(batch, rate, dry_run, restart, progress,
                                                  keys_per_call))

    async def reverse_sync(self, *, batch: int = 500, rate: float | None = None,
                           dry_run: bool = False, restart: bool = False,
                           progress: Progress | None = None,
                           keys_per_call: int | None = None) -> PassReport:
        """:meth:`jobstore.migration.Migration.reverse_sync`."""
        return await self._go(self._call_reverse_sync(batch, rate, dry_run, restart, progress,
                                                      keys_per_call))

    async def cleanup(self, *, batch: int = 500, rate: float | None = None,
                      dry_run: bool = False, restart: bool = False,
                      progress: Progress | None = None,
                      keys_per_call: int | None = None) -> PassReport:
        """:meth:`jobstore.migration.Migration.cleanup`."""
        return await self._go(self._call_cleanup(batch, rate, dry_run, restart, progress,
                                                 keys_per_call))

    async def verify(self, *, sample: int | None = None, repair: bool = False,
                     examples: int = 10, batch: int = 500, progress: Progress | None = None,
                     keys_per_call: int | None = None) -> VerifyReport:
        """:meth:`jobstore.migration.Migration.verify`."""
        return await self._go(self._call_verify(sample, repair, examples, batch, progress,
                                                keys_per_call))

    async def set_aside(self, *, batch: int = 500, dry_run: bool = False,
                        progress: Progress | None = None) -> SetAsideReport:
        """:meth:`jobstore.migration.Migration.set_aside`."""
        return await self._go(self._call_set_aside(batch, dry_run, progress))

    async def set_aside_records(self) -> list[dict[str, Any]]:
        """:meth:`jobstore.migration.Migration.set_aside_records`."""
        return await self._go(self._call_set_aside_records())

    async def restore_aside(self, key: str) -> str:
        """:meth:`jobstore.migration.Migration.restore_aside`."""
        return await self._go(self._call_restore_aside(key))

    async def close(self) -> None:
        """Release what the migration holds: the connections :func:`open_migration` opened
        (one from :meth:`jobstore.aio.AsyncJobStore.migration` shares the store's, which the
        store's close releases)."""
        await self.driver.close()
        if self.owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> AsyncMigration:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _go(self, run: Run[T]) -> T:
        """As :meth:`jobstore.migration.Migration._go`, awaited."""
        try:
            return await self.driver.run(run.op)
        except KeyboardInterrupt as exc:
            stop = None if run.interrupted is None else await self.driver.run(run.interrupted())
            if stop is None:
                raise
            raise stop from exc
