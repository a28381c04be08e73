"""The kit's machines on the asyncio store (jobstore.testing.flavours).

A ``SchemaConformance`` class runs each machine on the synchronous store and on the asyncio one
with no code of its own; the asyncio machines make a share of the runs (a tenth unless
``JOBSTORE_KIT_ASYNC_SHARE`` or the class says otherwise; 0 leaves them out); an asyncio machine
drives :class:`jobstore.aio.AsyncJobStore` stores and :class:`AsyncMigration` migrations, on one
event loop per run that is closed when the run ends.
"""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from jobstore.aio import AsyncJobStore, AsyncMigration
from jobstore.connection import connect
from jobstore.testing import MultiStrategyMachine, SchemaConformance, StoreMachine, run_machine
from jobstore.testing.flavours import ENV_ASYNC_SHARE, EventLoop, flavour_settings, flavours
from jobstore.testing.profiles import profile
from jobstore.testing.stateful import Migrating

pytest_plugins = ["pytester"]

MACHINES = ("test_machine_schema_alone", "test_machine_as_dual_target_from_legacy",
            "test_machine_as_dual_source_to_workspace", "test_machine_every_strategy_reads_alike")


def collected_machines(pytester) -> set[str]:
    pytester.makepyfile(test_schema='''
from jobstore.testing import SchemaConformance


class TestSchema(SchemaConformance):
    schema = "workspace"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    return {m.group(1) for m in re.finditer(r"::TestSchema::(test_machine\S+)", result.stdout.str())}


def test_a_schema_conformance_class_runs_each_machine_in_both_flavours(pytester, monkeypatch):
    monkeypatch.delenv(ENV_ASYNC_SHARE, raising=False)
    assert collected_machines(pytester) == {f"{m}[{f}]" for m in MACHINES for f in ("sync", "async")}
    monkeypatch.setenv(ENV_ASYNC_SHARE, "0")  # the asyncio flavour left out
    assert collected_machines(pytester) == {f"{m}[sync]" for m in MACHINES}


def test_the_asyncio_machines_make_a_share_of_the_runs(monkeypatch):
    monkeypatch.delenv(ENV_ASYNC_SHARE, raising=False)
    base = profile("ci")
    assert flavour_settings(base, "sync") is base
    assert flavour_settings(base, "async").max_examples == 3  # a tenth of 25, rounded up
    assert flavour_settings(base, "async", share=0.5).max_examples == 13
    assert flavour_settings(base, "async", share=1).max_examples == 25
    assert flavours(share=0) == ("sync",) and flavours() == ("sync", "async")
    monkeypatch.setenv(ENV_ASYNC_SHARE, "1")
    assert flavour_settings(base, "async").max_examples == 25
    monkeypatch.setenv(ENV_ASYNC_SHARE, "0.001")
    assert flavour_settings(base, "async").max_examples == 1  # never none at all
    for bad in ("lots", "2", "-0.5"):
        monkeypatch.setenv(ENV_ASYNC_SHARE, bad)
        with pytest.raises(ValueError, match=f"{ENV_ASYNC_SHARE}='{re.escape(bad)}' is not a number from 0 to 1"):
            flavour_settings(base, "async")
    with pytest.raises(ValueError, match="async_share=3 is not a number from 0 to 1"):
        flavours(share=3)
    with pytest.raises(ValueError, match="flavour must be one of 'sync', 'async', not 'trio'"):
        flavour_settings(base, "trio")


class Counting(RuleBasedStateMachine):
    """Counts the runs Hypothesis makes: one instance each."""

    made = 0

    def __init__(self):
        super().__init__()
        type(self).made += 1

    @rule()
    def nothing(self):
        pass


@pytest.mark.parametrize("share, sync_runs, async_runs", [(None, 25, 3), (0.5, 25, 13), (1.0, 25, 25)])
def test_a_class_runs_its_asyncio_machines_its_share_of_the_runs(monkeypatch, share, sync_runs,
                                                                  async_runs):
    monkeypatch.setenv("JOBSTORE_HYPOTHESIS_PROFILE", "ci")  # deterministic: every run counts
    monkeypatch.delenv(ENV_ASYNC_SHARE, raising=False)

    class Kit(SchemaConformance):
        schema = "workspace"
        async_share = share

    for flavour, expected in (("sync", sync_runs), ("async", async_runs)):
        Counting.made = 0
        Kit().run(Counting, flavour)
        assert Counting.made == expected, flavour


def test_an_asyncio_machine_drives_asyncio_stores_on_one_loop_per_run():
    url = f"memory://kit-{uuid.uuid4().hex}"
    machines: list[MultiStrategyMachine] = []

    def factory() -> MultiStrategyMachine:
        machines.append(MultiStrategyMachine(url, flavour="async"))
        return machines[-1]

    run_machine(factory, settings(profile("ci"), max_examples=3))
    assert len(machines) >= 3 and any(m.steps for m in machines)
    loops = {id(m.loop) for m in machines}
    assert len(loops) == 1 and machines[0].loop.closed  # one loop for the run, closed after it
    for machine in machines:
        for subject in machine.subjects.values():
            assert isinstance(subject.store.wrapped, AsyncJobStore), subject.name
            if isinstance(subject, Migrating):
                assert isinstance(subject.migration.wrapped, AsyncMigration), subject.name
    client = connect(url)  # every run deleted its own keys, written through its asyncio client
    assert list(client.scan_iter()) == []
    client.close()


@settings(max_examples=1, database=None, deadline=None)
@given(st.none())  # the machines note their steps, which Hypothesis allows within a test only
def test_an_asyncio_machine_driven_by_hand_closes_its_own_loop(_):
    machine = StoreMachine("memory://", "workspace", flavour="async")
    try:
        machine.draw_ids(("Acme", "aCME", "w"), ("j", "J", "x" * 127 + "a", "x" * 127 + "b"))
        machine.enqueue("Acme", "a", None, "j")
        machine.enqueue("aCME", "a", None, "j")
        machine.dequeue()
        machine.every_workspace_reads_as_modelled()
        assert machine.model.jobs[("Acme", "j")].status.value == "running"
    finally:
        machine.teardown()
    assert machine.loop.closed


def test_a_machine_refuses_an_unknown_flavour():
    with pytest.raises(ValueError, match="flavour must be one of 'sync', 'async', not 'trio'"):
        StoreMachine("memory://", flavour="trio")


def test_the_kit_loop_refuses_to_run_inside_a_running_loop():
    import asyncio

    loop = EventLoop()

    async def inside() -> None:
        async def nothing() -> None:
            return None

        with pytest.raises(RuntimeError, match="already running an event loop"):
            loop.run(nothing())

    try:
        asyncio.run(inside())
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="the kit's event loop is closed"):
        loop.run(asyncio.sleep(0))
