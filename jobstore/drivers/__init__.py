"""The drivers that run operations against Redis: :mod:`.common` holds every decision and no I/O,
:mod:`.sync` (redis-py) and :mod:`.aio` (redis-py's asyncio client) only carry out its I/O."""
