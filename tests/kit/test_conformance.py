"""The conformance kit (jobstore.testing) run on jobstore's own strategies, on every backend.

The same ``SchemaConformance`` class a plugin author subclasses runs here on ``legacy`` and
``workspace`` (and ``hashtag`` and ``bucketed``, the example plugins in plugins/), each on fakeredis, on a real
redis-server and on a real 3-node Redis Cluster. ``dual`` is covered by every class: pinned in
each phase, following the stored phase, and migrated back and forth while operations run. Every
machine runs on the synchronous store and on the asyncio one (``[sync]`` and ``[async]`` in the
test ids; the asyncio machines make a tenth of the runs, jobstore.testing.flavours).
"""

from __future__ import annotations

import importlib
import os
import uuid

import pytest
from hypothesis import settings

from jobstore.testing import SchemaConformance
from jobstore.testing.profiles import kit_settings
from jobstore.testing.pytest_plugin import prepared_url


class OnEveryBackend:
    """Runs a SchemaConformance subclass on fakeredis, real Redis and a real cluster."""

    @pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
    def jobstore_url(self, request):
        if request.param == "memory":
            url = f"memory://conformance-{uuid.uuid4().hex}"
        elif request.param == "cluster":
            url = request.getfixturevalue("cluster_url")
            # A cluster operation is several round trips: fewer runs keep CI in minutes (the
            # nightly profile still runs its full count).
            base = kit_settings()
            if base.max_examples < 1000:
                self.machine_settings = settings(base, max_examples=min(base.max_examples, 10))
        else:
            url = request.getfixturevalue("redis_url")
        yield from prepared_url(url)


class TestLegacy(OnEveryBackend, SchemaConformance):
    schema = "legacy"


class TestWorkspace(OnEveryBackend, SchemaConformance):
    schema = "workspace"


class NeedsPlugin:
    """A class of an example plugin's schema: skipped, with a line saying why, when the plugin is
    not installed; under ``CI=true`` it fails instead (CI installs both)."""

    plugin_module = ""

    @pytest.fixture(autouse=True)
    def _plugin_installed(self):
        try:
            importlib.import_module(self.plugin_module)
        except ImportError:
            message = (f"{self.plugin_module} is not installed (pip install -e "
                       f"./plugins/{self.plugin_module.replace('_', '-')})")
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message + "; CI=true: the plugin classes may not skip")
            pytest.skip(message)


class TestHashtag(NeedsPlugin, OnEveryBackend, SchemaConformance):
    plugin_module = "jobstore_hashtag"
    schema = "hashtag"


class TestBucketed(NeedsPlugin, OnEveryBackend, SchemaConformance):
    """A computed schema (no key_format): its keys travel with the queue entries."""

    plugin_module = "jobstore_bucketed"
    schema = "bucketed"
