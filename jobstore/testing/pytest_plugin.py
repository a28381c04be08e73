"""The kit's side of jobstore's pytest plugin: its options, and preparing the test database.

The plugin itself (options ``--jobstore-url`` and ``--jobstore-strategy``, fixtures
``jobstore_url`` and ``jobstore_store``) is the top-level module ``_jobstore_pytestplugin``,
the ``pytest11`` entry point: pytest loads it into every run wherever jobstore is installed,
and importing anything under ``jobstore`` would import the whole package and redis-py there.
Everything here is defined there and named here for the kit (and for tests of your own): this
module imports the plugin, which imports jobstore only inside what a test runs, so the two do
not import each other (see docs/testing.md).
"""

from __future__ import annotations

from _jobstore_pytestplugin import (
    DEFAULT_STRATEGY,
    DEFAULT_URL,
    ENV_STRATEGY,
    ENV_URL,
    configured_strategy,
    configured_url,
    for_this_worker,
    prepared_url,
    xdist_worker,
)

__all__ = [
    "DEFAULT_STRATEGY",
    "DEFAULT_URL",
    "ENV_STRATEGY",
    "ENV_URL",
    "configured_strategy",
    "configured_url",
    "for_this_worker",
    "prepared_url",
    "xdist_worker",
]
