"""The asyncio store's checks before anything else: the server check once however many first
calls come at once, and a client of the wrong kind refused by either store's constructor."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

import jobstore
import jobstore.aio
from jobstore import ConfigError
from jobstore.drivers.common import One, Pipe


def infos(requests) -> int:
    """How many INFO commands these driver requests carried."""
    calls = [c for r in requests
             for c in (r.calls if isinstance(r, Pipe) else (r.call,) if isinstance(r, One) else ())]
    return sum(1 for c in calls if str(getattr(c, "args", ("",))[0]).upper() == "INFO")


def test_concurrent_first_calls_run_one_server_check(backend):
    async def main():
        async with jobstore.aio.open(backend, "workspace") as store:
            sent = []
            real = store.driver._io

            async def recording(request):
                sent.append(request)
                await asyncio.sleep(0)  # every first call reaches the check before any passes
                return await real(request)

            store.driver._io = recording
            primaries = 3 if backend.startswith("redis+cluster") else 1
            await asyncio.gather(*(store.get(f"j{n}", workspace_id="ws") for n in range(10)))
            assert infos(sent) == primaries
            await store.get("j", workspace_id="ws")
            assert infos(sent) == primaries

    asyncio.run(main())


def test_a_failed_server_check_is_tried_again_by_the_next_call():
    """Refused (an evicting server), the check is not remembered as passed."""
    async def main():
        store = jobstore.aio.open("memory://", "legacy")
        real = store.driver._io
        refused = [True]

        async def refusing(request):
            if refused[0] and infos([request]):
                raise redis.exceptions.ConnectionError("down")
            return await real(request)

        store.driver._io = refusing
        results = await asyncio.gather(*(store.get("j", workspace_id="ws") for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, jobstore.StoreUnavailable) for r in results)
        refused[0] = False
        assert await store.get("j", workspace_id="ws") is None
        await store.close()

    asyncio.run(main())


def test_a_store_refuses_a_client_of_the_other_kind():
    with pytest.raises(ConfigError, match="redis.asyncio client"):
        jobstore.aio.AsyncJobStore(redis.Redis(port=1), "legacy")
    with pytest.raises(ConfigError, match="synchronous redis-py client"):
        jobstore.JobStore(redis.asyncio.Redis(port=1), "legacy")
    with pytest.raises(ConfigError, match="synchronous"):
        jobstore.JobStore(jobstore.aio.open("memory://").client)
    with pytest.raises(ConfigError, match="asyncio"):
        jobstore.aio.AsyncJobStore(jobstore.open("memory://").client)
