"""The commands the drivers send are built once, by jobstore.drivers.common (each driver only
sends them, awaited or not): a script as EVALSHA with its keys and arguments, a keyless
command to its primary on Redis Cluster, a tidier's deletes as one UNLINK or, on a cluster,
one per key in a pipeline."""

from __future__ import annotations

import asyncio

import fakeredis

from jobstore import scripts
from jobstore.drivers import common
from jobstore.drivers.aio import AsyncDriver
from jobstore.drivers.sync import SyncDriver
from jobstore.steps import Command, Script


def test_a_script_is_sent_as_evalsha_with_its_keys_then_its_arguments():
    call = Script(scripts.BURY, ("m", "d"), (60, "{}", 5))
    assert common.command(call) == ("EVALSHA", scripts.BURY.sha, 2, "m", "d", 60, "{}", 5)
    assert common.command(Command(("HGETALL", "k"))) == ("HGETALL", "k")
    pipe = common.Pipe((call, Command(("TIME",))))
    assert common.commands(pipe) == [common.command(call), ("TIME",)]


def test_only_a_keyless_command_with_a_node_goes_to_a_primary_and_only_on_a_cluster():
    scan = Command(("SCAN", "0"), node="n1")
    assert common.target(scan, cluster=True) == "n1"
    assert common.target(scan, cluster=False) is None
    assert common.target(Command(("TIME",)), cluster=True) is None
    assert common.target(Script(scripts.BURY, ("m", "d"), ()), cluster=True) is None


def test_a_tidier_unlinks_all_at_once_or_one_key_per_command_on_a_cluster():
    assert common.unlink(("a", "b"), cluster=False) == ([("UNLINK", "a", "b")], False)
    assert common.unlink(("a", "b"), cluster=True) == ([("UNLINK", "a"), ("UNLINK", "b")], True)


def test_both_drivers_send_the_same_requests_alike():
    server = fakeredis.FakeServer()
    sync = SyncDriver(fakeredis.FakeRedis(server=server, decode_responses=True), None, "t")
    requests = [common.One(Command(("SET", "k", "v"))),
                common.Pipe((Command(("GET", "k")), Command(("EXISTS", "k")))),
                common.One(Command(("GET", "k")))]
    replies = [sync._io(request) for request in requests]

    async def aio_replies():
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        driver = AsyncDriver(client, None, "t")
        try:
            return [await driver._io(request) for request in requests]
        finally:
            await client.aclose()

    assert replies == asyncio.run(aio_replies()) == [True, ["v", 1], "v"]
