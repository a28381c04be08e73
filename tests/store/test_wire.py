"""The connections of the clients jobstore makes (jobstore/wire.py): commands packed in one pass,
byte for byte as redis-py packs them, and only on the pools jobstore makes itself."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from hypothesis import given, settings
from hypothesis import strategies as st

import jobstore
import jobstore.aio
from jobstore import wire
from jobstore.connection import DECODING

# Arguments as jobstore and redis-py send them: text (any, non-ASCII too, and the lone surrogates
# surrogateescape turns back into bytes), bytes, numbers, memoryviews, and values past redis-py's
# 6,000-byte cutoff, after which it sends a value as a chunk of its own.
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udc80"]), max_size=40)
ARG = st.one_of(TEXT, st.binary(max_size=40), st.integers(), st.floats(allow_nan=False),
                st.binary(min_size=5990, max_size=6010), st.builds(memoryview, st.binary(max_size=20)))
NAME = st.sampled_from(["EVALSHA", "CONFIG GET", b"SCRIPT LOAD", b"HSET", "client  setname"])


def redis_py_packing(args: tuple, encoder) -> bytes:
    return b"".join(bytes(chunk) for chunk in
                    redis.connection.PythonRespSerializer(6000, encoder.encode).pack(*args))


@settings(max_examples=300, deadline=None)
@given(name=NAME, args=st.lists(ARG, max_size=30))
def test_one_pass_packing_sends_what_redis_py_sends(name, args):
    encoder = redis.connection.Connection(**DECODING).encoder
    command = (name, *args)
    packed = wire.OnePassPacker(6000, encoder).pack(*command)
    assert b"".join(bytes(chunk) for chunk in packed) == redis_py_packing(command, encoder)
    # a long value or a memoryview is passed on as it is, not copied into the command
    for arg in args:
        if isinstance(arg, memoryview) or (isinstance(arg, bytes) and len(arg) > 6000):
            assert any(chunk is arg for chunk in packed)


# What nearly every command jobstore sends holds: ASCII text and numbers (framed as one text and
# encoded once), with values about the cutoff and ASCII bytes among them.
def _ascii(data: bytes) -> bytes:
    return bytes(c & 127 for c in data)


ASCII_ARG = st.one_of(st.text(st.characters(max_codepoint=127), max_size=40), st.integers(),
                      st.floats(allow_nan=False), st.binary(max_size=20).map(_ascii),
                      st.text(st.characters(max_codepoint=127), min_size=5990, max_size=6010),
                      st.binary(min_size=5990, max_size=6010).map(_ascii))


@settings(max_examples=300, deadline=None)
@given(name=NAME, args=st.lists(ASCII_ARG, max_size=60))
def test_a_command_of_ascii_text_and_numbers_is_sent_as_redis_py_sends_it(name, args):
    for encoder in (redis.connection.Connection(**DECODING).encoder,
                    redis.connection.Connection().encoder):
        command = (name, *args)
        packed = wire.OnePassPacker(6000, encoder).pack(*command)
        assert b"".join(bytes(chunk) for chunk in packed) == redis_py_packing(command, encoder)
        for arg in args:  # bytes past the cutoff go as they are, not copied
            if isinstance(arg, bytes) and len(arg) > 6000:
                assert any(chunk is arg for chunk in packed)


def test_a_large_value_is_not_framed_as_text_first():
    """A value past the cutoff leaves the one-text framing before it is copied: a record of
    ~1 MB costs one encode, as in redis-py (its bytes, sent as a chunk of their own), not a
    framing of the whole command as text as well."""
    import tracemalloc

    encoder = redis.connection.Connection(**DECODING).encoder
    big = "x" * 1_000_000
    packer = wire.OnePassPacker(6000, encoder)
    tracemalloc.start()
    try:
        packed = packer.pack("EVALSHA", "sha", 1, "k", big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert b"".join(packed) == redis_py_packing(("EVALSHA", "sha", 1, "k", big), encoder)
    assert len(packed) == 3 and len(packed[1]) == 1_000_000  # big went as a chunk of its own
    assert peak < 1_500_000  # its encoded copy alone (framed as text first: 3 MB and more)


def test_the_first_bad_argument_is_the_one_refused_as_in_redis_py():
    """A number too long for repr after a bool: redis-py refuses the bool (DataError), and so
    does the packer (not ValueError from the number)."""
    encoder = redis.connection.Connection().encoder
    command = ("SET", True, 10 ** 5000)
    with pytest.raises(redis.exceptions.DataError) as theirs:
        redis.connection.PythonRespSerializer(6000, encoder.encode).pack(*command)
    with pytest.raises(redis.exceptions.DataError) as ours:
        wire.OnePassPacker(6000, encoder).pack(*command)
    assert str(ours.value) == str(theirs.value)


def test_an_encoding_python_does_not_know_fails_when_text_is_encoded_as_before():
    encoder = redis.connection.Connection(encoding="no-such-codec").encoder
    packer = wire.OnePassPacker(6000, encoder)  # no LookupError here: none in redis-py either
    assert b"".join(packer.pack("PING")) == b"*1\r\n$4\r\nPING\r\n"
    with pytest.raises(LookupError):
        packer.pack("SET", "k", "v")


@pytest.mark.parametrize("bad", [True, object(), None])
def test_one_pass_packing_refuses_what_redis_py_refuses(bad):
    encoder = redis.connection.Connection().encoder
    with pytest.raises(redis.exceptions.DataError) as theirs:
        redis.connection.PythonRespSerializer(6000, encoder.encode).pack("SET", "k", bad)
    with pytest.raises(redis.exceptions.DataError) as ours:
        wire.OnePassPacker(6000, encoder).pack("SET", "k", bad)
    assert str(ours.value) == str(theirs.value)


def test_a_text_the_encoding_cannot_take_fails_as_in_redis_py():
    encoder = redis.connection.Connection().encoder  # strict errors: no surrogateescape
    with pytest.raises(UnicodeEncodeError):
        redis.connection.PythonRespSerializer(6000, encoder.encode).pack("SET", "k", "\udcff")
    with pytest.raises(UnicodeEncodeError):
        wire.OnePassPacker(6000, encoder).pack("SET", "k", "\udcff")


@pytest.fixture
def no_hiredis(monkeypatch):
    """As where hiredis is not installed (redis-py's own packer is the Python one)."""
    if redis.utils.HIREDIS_AVAILABLE:
        pytest.skip("hiredis is installed: redis-py's connections pack with it")
    monkeypatch.setattr(wire, "_CLASSES", {})


@pytest.mark.parametrize("url", ["redis://localhost:1/0", "rediss://localhost:1/0",
                                 "unix:///tmp/none.sock"])
def test_the_clients_jobstore_makes_pack_in_one_pass(no_hiredis, url):
    store = jobstore.open(url)
    connection = store.client.connection_pool.make_connection()
    assert isinstance(connection._command_packer, wire.OnePassPacker)
    base = type(connection).__mro__[2]  # (the tuned class, _PackOnce, redis-py's)
    assert base.__module__ == "redis.connection" and type(connection).__name__ == base.__name__
    store.close()


def test_the_asyncio_clients_pack_in_one_pass_byte_for_byte(no_hiredis):
    async def main():
        store = jobstore.aio.open("redis://localhost:1/0")
        connection = store.client.connection_pool.make_connection()
        plain = redis.asyncio.connection.Connection(**DECODING)
        command = ("EVALSHA", "f" * 40, 2, "k", "é", b"\xff", 7, 1.5, b"x" * 7000)
        ours = connection.pack_command(*command)
        theirs = (plain._pack_command_python(*command) if hasattr(plain, "_pack_command_python")
                  else plain.pack_command(*command))  # (redis-py 6.0's Python packer)
        assert b"".join(ours) == b"".join(theirs)
        assert isinstance(connection.__dict__["_one_pass"], wire.OnePassPacker)
        await store.close()

    asyncio.run(main())


def test_a_client_or_connection_class_the_user_chose_is_left_as_it_is(no_hiredis):
    class Mine(redis.Connection):
        pass

    store = jobstore.open("redis://localhost:1/0", client_options={"connection_class": Mine})
    assert store.client.connection_pool.connection_class is Mine
    store.close()
    client = redis.Redis()
    jobstore.JobStore(client)
    assert client.connection_pool.connection_class is redis.Connection


def test_a_packer_redis_py_chose_is_kept():
    """Where redis-py packs with hiredis (a packer given, or chosen), the connection keeps it:
    only redis-py's Python packing is replaced."""

    class Given:
        def pack(self, *args):
            return [b"given"]

    sync_class = jobstore.open("redis://localhost:1/0").client.connection_pool.connection_class
    assert sync_class(command_packer=Given()).pack_command("PING") == [b"given"]

    async def main():
        store = jobstore.aio.open("redis://localhost:1/0")
        connection = store.client.connection_pool.make_connection()
        connection._command_packer = Given()  # as redis-py sets hiredis's
        assert connection.pack_command("PING") == [b"given"]
        await store.close()

    if hasattr(redis.asyncio.connection.Connection(), "_command_packer"):  # (redis-py 6: none)
        asyncio.run(main())


class NFC(redis._parsers.encoders.Encoder):
    """An encoder of one's own (``encoder_class``): text NFC-normalised before it is sent."""

    def encode(self, value):
        import unicodedata

        return super().encode(unicodedata.normalize("NFC", value) if isinstance(value, str)
                              else value)


def test_an_encoder_of_ones_own_encodes_every_argument():
    async def main():
        store = jobstore.aio.open("redis://localhost:1/0", client_options={"encoder_class": NFC})
        connection = store.client.connection_pool.make_connection()
        assert b"".join(connection.pack_command("SET", "k", "e\u0301")) == (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n")
        await store.close()

    asyncio.run(main())


def test_commands_round_trip_on_the_connections(redis_url, no_hiredis):
    """Values of every kind through the tuned connections and back, on a real server."""
    store = jobstore.open(redis_url)
    assert isinstance(store.client.connection_pool.make_connection()._command_packer,
                      wire.OnePassPacker)
    values = {"a": "é€😀", "b": "x" * 7000, "c": "", "d": "\r\n$3\r\n"}
    store.client.hset("wire:h", mapping=values)
    assert store.client.hgetall("wire:h") == values
    job = store.enqueue("ws", "a", {"text": "é" * 4000, "n": 1})
    assert store.get(job.job_id, workspace_id="ws") == job
    store.client.delete("wire:h")
    store.close()
