"""jobstore's pytest plugin, the ``pytest11`` entry point ``jobstore``: where jobstore's tests
(and the conformance kit) find their Redis.

pytest loads it into every run of every project where jobstore is installed, so it costs
nothing there: it is a top-level module (as Hypothesis's ``_hypothesis_pytestplugin`` is), so
that loading it imports neither the ``jobstore`` package (and with it redis-py) nor Hypothesis
nor fakeredis, and its only hook adds the options below. jobstore is imported when a test asks
for one of its fixtures. Options (each also read from the environment):

``--jobstore-url URL`` (``JOBSTORE_TEST_URL``, default ``memory://``)
    The database the tests use. **It is flushed (FLUSHDB) before every test that uses it**: give
    a throwaway database, never one holding data you want (e.g. ``redis://localhost:6390/15``).
    ``memory://`` gives every test a fresh embedded fakeredis server; ``memory://name`` is one
    shared embedded server, flushed like a real one. Under pytest-xdist, ``{worker}`` in the URL
    is the worker's number (``gw2``: 2; 0 without xdist), so that each worker flushes a
    database of its own (``redis://localhost:6390/{worker}``); a real Redis URL without it is
    refused when more than one worker runs, since the workers would flush each other's data.
``--jobstore-strategy NAME`` (``JOBSTORE_TEST_STRATEGY``, default ``legacy``)
    The strategy of the ``jobstore_store`` fixture, unless the test class names a ``schema``
    (as a :class:`~jobstore.testing.SchemaConformance` subclass does).

Fixtures: ``jobstore_url`` (the prepared URL) and ``jobstore_store`` (a store on it, closed
after the test). ``-p no:jobstore`` leaves the plugin out.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

ENV_URL = "JOBSTORE_TEST_URL"
ENV_STRATEGY = "JOBSTORE_TEST_STRATEGY"
DEFAULT_URL = "memory://"
DEFAULT_STRATEGY = "legacy"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jobstore", "jobstore conformance kit")
    group.addoption(
        "--jobstore-url", default=None, metavar="URL",
        help=f"database for jobstore tests, FLUSHED before each test: a throwaway one "
             f"(env {ENV_URL}; default {DEFAULT_URL}, an embedded fakeredis); under "
             f"pytest-xdist, {WORKER_FIELD} in it is the worker's number",
    )
    group.addoption(
        "--jobstore-strategy", default=None, metavar="NAME",
        help=f"strategy of the jobstore_store fixture when the test class names no schema "
             f"(env {ENV_STRATEGY}; default {DEFAULT_STRATEGY})",
    )


def configured_url(config: pytest.Config) -> str:
    """``--jobstore-url``, else ``JOBSTORE_TEST_URL``, else ``memory://``."""
    return _option(config, "--jobstore-url") or os.environ.get(ENV_URL) or DEFAULT_URL


def configured_strategy(config: pytest.Config) -> str:
    """``--jobstore-strategy``, else ``JOBSTORE_TEST_STRATEGY``, else ``legacy``."""
    return _option(config, "--jobstore-strategy") or os.environ.get(ENV_STRATEGY) or DEFAULT_STRATEGY


def _option(config: pytest.Config, name: str) -> str | None:
    try:
        return config.getoption(name)  # type: ignore[no-any-return]
    except ValueError:  # the plugin is not loaded (the kit also runs without it)
        return None


WORKER_FIELD = "{worker}"


def xdist_worker(config: pytest.Config) -> tuple[str, int]:
    """``(worker id, number of workers)`` of this pytest-xdist worker, ``("", 1)`` outside one.

    Read from the run's own config (``workerinput``), not from the environment: a pytest run
    started by a test (pytester) inherits the worker's ``PYTEST_XDIST_*`` variables without
    being one of its workers."""
    info = getattr(config, "workerinput", None) or {}
    return str(info.get("workerid", "")), int(info.get("workercount", 1) or 1)


def for_this_worker(url: str, worker: str = "", workers: int = 1) -> str:
    """``url`` with ``{worker}`` replaced by the number of the pytest-xdist worker ``worker``
    (``gw2``: 2; 0 outside xdist); ``workers``: how many run (:func:`xdist_worker` gives both).

    :raises pytest.UsageError: more than one xdist worker and a real Redis URL without
        ``{worker}``: every worker would FLUSHDB the one database under the others' tests.
    """
    number = worker[2:] if worker.startswith("gw") and worker[2:].isdigit() else "0"
    if WORKER_FIELD in url:
        return url.replace(WORKER_FIELD, number)
    if not url.startswith("memory://") and workers > 1:
        from jobstore.urls import redact

        raise pytest.UsageError(
            f"--jobstore-url {redact(url)!r} is flushed before every test, and {workers} "
            f"pytest-xdist workers would flush each other's data: put {WORKER_FIELD} where "
            f"each worker's database number goes (redis://host:6390/{WORKER_FIELD}), or run "
            f"with -n 0")
    return url


def prepared_url(url: str) -> Iterator[str]:
    """Yield ``url`` ready for one test: flushed, or a fresh embedded server for ``memory://``.

    Only FLUSHDB on the database the URL names; nothing else is touched. (The kit names it as
    ``jobstore.testing.pytest_plugin.prepared_url``; jobstore is imported when this runs.)

    :raises jobstore.ConfigError: the URL is invalid, or ``memory://`` without the ``embedded``
        extra.
    """
    from jobstore.connection import connect

    if url.rstrip("/") == "memory:":
        url = f"memory://jobstore-test-{uuid.uuid4().hex}"
    client = connect(url)
    try:
        client.flushdb()
        yield url
        if url.startswith("memory://"):
            client.flushdb()  # an embedded server lives as long as the process: leave it empty
    finally:
        client.close()


@pytest.fixture
def jobstore_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The test database's URL, flushed before the test (see ``--jobstore-url``)."""
    yield from prepared_url(for_this_worker(configured_url(request.config),
                                            *xdist_worker(request.config)))


@pytest.fixture
def jobstore_store(request: pytest.FixtureRequest, jobstore_url: str) -> Iterator[Any]:
    """A store on ``jobstore_url``: the test class's ``schema``, else ``--jobstore-strategy``."""
    import jobstore

    strategy = getattr(request.cls, "schema", None) or configured_strategy(request.config)
    store = jobstore.open(jobstore_url, strategy)
    yield store
    store.close()
