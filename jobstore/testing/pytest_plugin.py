"""The kit's side of jobstore's pytest plugin: preparing the test database.

The plugin itself (options ``--jobstore-url`` and ``--jobstore-strategy``, fixtures
``jobstore_url`` and ``jobstore_store``) is the top-level module ``_jobstore_pytestplugin``,
the ``pytest11`` entry point: pytest loads it into every run wherever jobstore is installed,
and importing anything under ``jobstore`` would import the whole package and redis-py there.
This module is what its fixtures import when a test uses them; see docs/testing.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from _jobstore_pytestplugin import (
    DEFAULT_STRATEGY,
    DEFAULT_URL,
    ENV_STRATEGY,
    ENV_URL,
    configured_strategy,
    configured_url,
)

from ..connection import connect

__all__ = [
    "DEFAULT_STRATEGY",
    "DEFAULT_URL",
    "ENV_STRATEGY",
    "ENV_URL",
    "configured_strategy",
    "configured_url",
    "prepared_url",
]


def prepared_url(url: str) -> Iterator[str]:
    """Yield ``url`` ready for one test: flushed, or a fresh embedded server for ``memory://``.

    Only FLUSHDB on the database the URL names; nothing else is touched.

    :raises jobstore.ConfigError: the URL is invalid, or ``memory://`` without the ``embedded``
        extra.
    """
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
