"""Codecs: a service keeps the encoding the readers of its records expect.

The replaced service wrote params and result with ``json.dumps(value)`` (spaces after ':' and
',', keys in insertion order) and times as ISO 8601; its readers ``json.loads`` them. A store
given that codec reads those records, and what it writes (a new job, a result) is what those
readers expect, byte for byte. A schema may declare its codec; a plugin supplies its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import jobstore
from jobstore import Codec, ConfigError, CorruptRecord, InvalidArgument, JobStatus, KeySchema


class OldServiceCodec(Codec):
    name = "old-service"
    time_format = "iso"

    def encode(self, field: str, value: Any) -> str:
        return json.dumps(value)

    def decode(self, field: str, text: str) -> Any:
        return json.loads(text)


class TaggedCodec(Codec):
    """Not JSON at all: proves the store never parses what the codec writes itself."""

    name = "tagged"

    def encode(self, field: str, value: Any) -> str:
        return "v1|" + json.dumps(value, sort_keys=True)

    def decode(self, field: str, text: str) -> Any:
        if not text.startswith("v1|"):
            raise ValueError("no v1| tag")
        return json.loads(text[3:])


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def url(request):
    if request.param == "memory":
        return "memory://codec"
    return request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")


def fresh(url, *args, **options):
    store = jobstore.open(url, *args, **options)
    if store.driver.cluster:
        store.client.flushall(target_nodes=store.client.PRIMARIES)
    else:
        store.client.flushall()
    return store


def test_records_of_the_old_code_read_and_update_in_their_own_encoding(url):
    store = fresh(url, "legacy", codec=OldServiceCodec())
    store.client.hset("ai:jobs:old1", mapping={  # as the old producer wrote it
        "job_id": "old1", "workspace_id": "acme", "action": "summarise", "status": "pending",
        "params": json.dumps({"doc": 42, "lang": "en"}), "created_at": "2025-10-17T12:34:56.123456"})
    job = store.get("old1", workspace_id="acme")
    assert job.params == {"doc": 42, "lang": "en"} and job.result is None
    store.update_status("old1", "running", workspace_id="acme")
    done = store.update_status("old1", "completed", workspace_id="acme", result={"words": 7, "a": [1, 2]})
    assert done.result == {"words": 7, "a": [1, 2]}
    stored = store.client.hgetall("ai:jobs:old1")
    assert stored["result"] == json.dumps({"words": 7, "a": [1, 2]})  # what the old readers expect
    assert stored["params"] == json.dumps({"doc": 42, "lang": "en"})  # untouched
    assert "T" in stored["updated_at"]  # an ISO record stays ISO


def test_what_the_store_writes_is_the_codecs_encoding(url):
    store = fresh(url, "legacy", codec=OldServiceCodec())
    job = store.enqueue("acme", "summarise", {"lang": "en", "doc": 42}, job_id="new1")
    stored = store.client.hgetall("ai:jobs:new1")
    assert stored["params"] == '{"lang": "en", "doc": 42}'  # json.dumps, insertion order
    assert json.loads(stored["params"]) == job.params == {"lang": "en", "doc": 42}
    assert "T" in stored["created_at"]  # the codec's time_format (the store was given none)
    assert store.get("new1", workspace_id="acme") == job
    assert store.dequeue(timeout=0) == store.get("new1", workspace_id="acme")


def test_a_value_the_codec_cannot_decode_is_a_corrupt_record_naming_the_field(url):
    store = fresh(url, "legacy", codec=TaggedCodec())
    job = store.enqueue("acme", "a", {"x": 1})
    assert store.client.hget(f"ai:jobs:{job.job_id}", "params") == 'v1|{"x": 1}'
    assert store.get(job.job_id, workspace_id="acme") == job
    store.client.hset(f"ai:jobs:{job.job_id}", "params", '{"x": 1}')  # written without the codec
    with pytest.raises(CorruptRecord) as caught:
        store.get(job.job_id, workspace_id="acme")
    assert caught.value.field == "params" and "tagged" in caught.value.reason
    assert store.list("acme") == []  # skipped (and reported), as any record that cannot be read


def test_a_value_the_codec_cannot_encode_is_refused_before_redis(url):
    class Picky(TaggedCodec):
        def encode(self, field: str, value: Any) -> str:
            if "secret" in value:
                raise ValueError("no secrets")
            return super().encode(field, value)

    store = fresh(url, "legacy", codec=Picky())
    with pytest.raises(InvalidArgument) as caught:
        store.enqueue("acme", "a", {"secret": 1})
    assert caught.value.argument == "params" and "no secrets" in str(caught.value)
    assert not store.client.keys("*")


class CodedSchema(KeySchema):
    name = "coded"
    description = "a plugin's layout whose records use the old service's encoding"
    key_format = "${prefix}:coded:${job_id}"
    codec = OldServiceCodec()


class OtherCodedSchema(KeySchema):
    name = "coded2"
    description = "another layout with another codec"
    key_format = "${prefix}:coded2:${workspace_id}:${job_id}"
    codec = TaggedCodec()


class SameCodecOtherSchema(KeySchema):
    name = "coded3"
    description = "another layout with the old service's codec (another instance of it)"
    key_format = "${prefix}:coded3:${workspace_id}:${job_id}"
    codec = OldServiceCodec()


@pytest.fixture
def coded_schemas():
    from jobstore import hookimpl, plugins

    class Plugin:
        @hookimpl
        def jobstore_register_schemas(self, register):
            register(CodedSchema)
            register(OtherCodedSchema)
            register(SameCodecOtherSchema)

    plugins.reset()
    plugins.get_plugin_manager().register(Plugin(), name="coded-plugin")
    yield
    plugins.reset()


def test_a_plugin_schema_declares_its_codec_and_a_migration_keeps_it(coded_schemas, url):
    store = fresh(url, "dual", source="coded", target="workspace", phase="dual-write")
    assert isinstance(store.codec, OldServiceCodec)
    job = store.enqueue("acme", "a", {"b": 1, "a": 2}, job_id="j1")
    # Both copies hold the same bytes: a migration copies records as they are.
    assert store.client.hget("ai:coded:j1", "params") == '{"b": 1, "a": 2}'
    assert store.client.hget("ai:job:acme:j1", "params") == '{"b": 1, "a": 2}'
    assert store.get("j1", workspace_id="acme") == job
    with pytest.raises(ConfigError, match="different codecs"):
        jobstore.open(url, "dual", source="coded", target="coded2")
    # The store's own option wins over what the schemas declare.
    assert isinstance(jobstore.open(url, "dual", source="coded", target="coded2",
                                    codec=TaggedCodec()).codec, TaggedCodec)


@pytest.mark.parametrize("codec, message", [
    (json, "must be a jobstore.Codec"),
    (type("Half", (Codec,), {"encode": lambda self, f, v: ""})(), "override both"),
    (type("Odd", (TaggedCodec,), {"time_format": "unix"})(), "time_format"),
])
def test_a_codec_that_cannot_work_is_refused_at_open(codec, message):
    with pytest.raises(ConfigError, match=message):
        jobstore.open("memory://codec-bad", "legacy", codec=codec)


def test_the_default_codec_is_jobstores_json():
    store = jobstore.open("memory://codec-default", "legacy")
    assert isinstance(store.codec, jobstore.JSONCodec) and store.time_format == "epoch"
    job = store.enqueue("acme", "a", {"b": 1, "a": [1]})
    assert store.client.hget(f"ai:jobs:{job.job_id}", "params") == '{"a":[1],"b":1}'
    assert store.update_status(job.job_id, JobStatus.CANCELLED, workspace_id="acme").status is JobStatus.CANCELLED


from hypothesis import settings  # noqa: E402

from jobstore.testing import SchemaConformance  # noqa: E402
from jobstore.testing.profiles import kit_settings  # noqa: E402


class TestConformanceWithACodec(SchemaConformance):
    """The kit a plugin author runs, on a schema that declares its codec (embedded store: the
    codec is Python-side only, the same on every backend)."""

    schema = "coded"
    # The codec is the Python side only, the same on every backend: a short run suffices here.
    machine_settings = settings(kit_settings(), max_examples=10)

    @pytest.fixture(autouse=True)
    def _registered(self, coded_schemas):
        yield

    @pytest.fixture
    def jobstore_url(self):
        from jobstore.testing.pytest_plugin import prepared_url

        yield from prepared_url("memory://conformance-codec")


def test_two_schemas_with_the_same_codec_class_agree(coded_schemas):
    store = jobstore.open("memory://codec-same", "dual", source="coded", target="coded3")
    assert isinstance(store.codec, OldServiceCodec)


def test_a_codec_that_cannot_read_what_it_wrote_is_a_plugin_error():
    class OneWay(TaggedCodec):
        def decode(self, field: str, text: str) -> Any:
            raise ValueError("cannot read")

    store = jobstore.open("memory://codec-oneway", "legacy", codec=OneWay())
    with pytest.raises(jobstore.PluginError, match="cannot decode the params it just encoded"):
        store.enqueue("acme", "a", {"x": 1})
