"""``SchemaConformance``: the whole kit for one key schema, as a pytest base class.

A plugin author writes::

    from jobstore.testing import SchemaConformance

    class TestMySchema(SchemaConformance):
        schema = "mine"                 # the registered name
        # redis_url = "redis://localhost:6390/15"   # optional: a THROWAWAY database

and gets, on ``--jobstore-url`` (default: an embedded fakeredis) or ``redis_url``:

- plain tests of the schema object: keys round-trip through ``parse_key``, agree with the
  ``lua_template`` the dequeue script uses, ``scan_pattern`` finds every record key and no key of
  jobstore's own or of the built-in layouts parses as the schema's; the stored record layout;
  isolation between workspaces; one network round trip per operation (real Redis only);
- the state machines of :mod:`jobstore.testing.stateful`: the schema alone, as the ``dual``
  target from ``legacy`` (pinned in each phase, and following the stored phase), as the ``dual``
  source to ``workspace``, and :class:`~jobstore.testing.migrating.MultiStrategyMachine` with the
  schema among every other strategy, including migrations to and from it run while the
  operations go on. Each machine runs on the synchronous store and on the asyncio one
  (:class:`jobstore.aio.AsyncJobStore`, ``async_share`` of the runs): test ids end in
  ``[sync]`` and ``[async]``.

Modelled on ``fsspec.tests.abstract`` and ``zarr.testing``: the same class runs jobstore's own
built-ins (tests/kit/test_conformance.py).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import given, settings as Settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine

import jobstore
from ..determinism import check_across_processes
from ..job import format_time
from ..layout import RESERVED_NAMESPACES
from ..plugins import get_registry
from ..schema import JOB_MARK, WORKSPACE_MARK, KeySchema, glob_regex
from .profiles import kit_settings
from .pytest_plugin import configured_url, for_this_worker, prepared_url, xdist_worker
from .draws import ID_CHARS
from .flavours import flavour_settings, flavours
from .harness import StoreMachine
from .migrating import PHASES, MultiStrategyMachine
from .running import run_machine

__all__ = ["SchemaConformance"]

T = TypeVar("T")

identifiers = st.text(ID_CHARS, min_size=1, max_size=12) | st.text(ID_CHARS, min_size=128, max_size=128)
prefixes = st.lists(st.text(ID_CHARS, min_size=1, max_size=6), min_size=1, max_size=3).map(":".join)


class _Counted(threading.local):
    count = 0
    reading = True


_SENT = _Counted()


class CountingConnection(redis.Connection):
    """Counts round trips on the wire: a send that follows a read."""

    def send_packed_command(self, command: str | bytes | Iterable[bytes],
                            check_health: bool = True) -> None:
        if _SENT.reading:
            _SENT.count += 1
            _SENT.reading = False
        # redis-py leaves this method unannotated.
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        _SENT.reading = True
        return super().read_response(*args, **kwargs)


def _round_trips(call: Callable[[], T]) -> tuple[int, T]:
    _SENT.count, _SENT.reading = 0, True
    result = call()
    return _SENT.count, result


class SchemaConformance:
    """Subclass with ``schema = "<registered name>"``; see the module docstring.

    ``redis_url``: a throwaway database to use instead of ``--jobstore-url`` (flushed before
    each test). Override the ``jobstore_url`` fixture instead to take the URL from a fixture.
    ``machine_settings``: Hypothesis settings for the state machines (default: the kit's profile,
    :func:`~jobstore.testing.profiles.kit_settings`; start from it to change one thing,
    ``settings(kit_settings(), max_examples=10)``). The property tests of the schema object
    run under the kit's profile too; neither touches the caller's global settings.
    ``async_share``: the share of the machines' runs the asyncio store
    (:class:`jobstore.aio.AsyncJobStore`) makes, from 0 (not run) to 1 (as many as the
    synchronous store); None: ``JOBSTORE_KIT_ASYNC_SHARE``, else
    :data:`~jobstore.testing.flavours.ASYNC_SHARE` (a tenth).
    """

    schema: str = ""
    redis_url: str | None = None
    machine_settings: Settings | None = None
    async_share: float | None = None

    # -- fixtures -------------------------------------------------------------------------

    @pytest.fixture
    def jobstore_url(self, request: pytest.FixtureRequest) -> Iterator[str]:
        """This class's ``redis_url``, else ``--jobstore-url``; flushed before the test."""
        url = self.redis_url or configured_url(request.config)
        yield from prepared_url(for_this_worker(url, *xdist_worker(request.config)))

    @pytest.fixture
    def jobstore_store(self, jobstore_url: str) -> Iterator[jobstore.JobStore]:
        """A store of this schema alone, prefix ``ai``."""
        store = jobstore.open(jobstore_url, self.schema)
        yield store
        store.close()

    # -- helpers --------------------------------------------------------------------------

    def make_schema(self, prefix: str = "ai") -> KeySchema:
        if not self.schema:
            raise TypeError(f"{type(self).__name__} must set schema = '<registered schema name>'")
        return get_registry().schema(self.schema, prefix)

    def builtin_schemas(self, prefix: str = "ai") -> list[KeySchema]:
        """``legacy`` and ``workspace``, unless one of them is the schema under test."""
        mine = self.make_schema(prefix).identity
        schemas = [get_registry().schema(name, prefix) for name in ("legacy", "workspace")]
        return [s for s in schemas if s.identity != mine]

    def run(self, factory: Callable[[], RuleBasedStateMachine], flavour: str = "sync") -> None:
        """Run a machine under ``machine_settings`` (or the kit's profile), cut to
        ``async_share`` of its runs for the ``"async"`` flavour."""
        base = self.machine_settings if self.machine_settings is not None else kit_settings()
        run_machine(factory, flavour_settings(base, flavour, self.async_share))

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Each machine test runs once per flavour: ``jobstore_flavour`` is ``"sync"``, and
        ``"async"`` unless ``async_share`` (or ``JOBSTORE_KIT_ASYNC_SHARE``) is 0."""
        if "jobstore_flavour" in metafunc.fixturenames:
            metafunc.parametrize("jobstore_flavour", flavours(self.async_share))

    # -- the schema object ----------------------------------------------------------------
    # Each property test builds its @given function per call: one function shared by every
    # subclass would trip Hypothesis' differing-executors health check. Each is decorated with
    # the kit's settings, read when the test runs.

    def test_schema_is_registered_as_a_schema(self) -> None:
        info = {row.name: row for row in jobstore.strategies()}
        assert self.schema in info, f"{self.schema!r} is not registered; is its plugin installed?"
        assert info[self.schema].kind == "schema"

    def test_job_keys_round_trip_through_parse_key(self) -> None:
        @kit_settings()
        @given(prefix=prefixes, workspace_id=identifiers, job_id=identifiers)
        def check(prefix: str, workspace_id: str, job_id: str) -> None:
            schema = self.make_schema(prefix)
            key = schema.job_key(workspace_id, job_id)
            assert key.startswith(prefix + ":"), f"{key!r} does not start with the prefix {prefix!r}:"
            # The dequeue script builds a format schema's keys from its template: both ways must
            # give the same key. (A computed schema has no template: its keys travel.)
            if schema.lua_template is not None:
                from_template = schema.lua_template.replace(WORKSPACE_MARK, workspace_id).replace(JOB_MARK, job_id)
                assert key == from_template, f"job_key gives {key!r}, lua_template gives {from_template!r}"
            expected = (workspace_id if schema.scoped else None, job_id)
            assert schema.parse_key(key) == expected, f"parse_key({key!r}) is not {expected!r}"

        check()

    def test_a_schema_without_workspaces_keys_a_job_by_its_id_alone(self) -> None:
        """``parse_key`` giving no workspace back means one job per id in the store: every
        workspace that asks for the id must be sent to the same key."""
        @kit_settings()
        @given(prefix=prefixes, a=identifiers, b=identifiers, job_id=identifiers)
        def check(prefix: str, a: str, b: str, job_id: str) -> None:
            schema = self.make_schema(prefix)
            if schema.scoped:
                return
            key_a, key_b = schema.job_key(a, job_id), schema.job_key(b, job_id)
            if key_a != key_b:
                raise AssertionError(
                    f"schema {self.schema!r}: parse_key gives no workspace back (a schema keyed "
                    f"by the job id alone), but job_key depends on the workspace: job_id="
                    f"{job_id!r} is {key_a!r} for workspace {a!r} and {key_b!r} for {b!r}; leave "
                    "the workspace out of the key, or return it from parse_key")

        check()

    def test_keys_are_the_same_in_a_second_process(self) -> None:
        """A key from ``hash()`` (salted per process), the environment, the time or chance is
        another key in the next process, and the job is not found there
        (:mod:`jobstore.determinism`; here a schema that cannot be asked fails too)."""
        check_across_processes([(self.make_schema(), self.schema)], strict=True)

    def test_distinct_jobs_have_distinct_keys(self) -> None:
        @kit_settings()
        @given(prefix=prefixes, a=st.tuples(identifiers, identifiers), b=st.tuples(identifiers, identifiers))
        def check(prefix: str, a: tuple[str, str], b: tuple[str, str]) -> None:
            schema = self.make_schema(prefix)
            same_job = a[1] == b[1] and (a[0] == b[0] or not schema.scoped)
            assert (schema.job_key(*a) == schema.job_key(*b)) == same_job, (
                f"keys of {a} and {b}: {schema.job_key(*a)!r}, {schema.job_key(*b)!r}"
            )

        check()

    def test_scan_pattern_covers_job_keys_and_no_jobstore_key(self) -> None:
        @kit_settings()
        @given(prefix=prefixes, workspace_id=identifiers, job_id=identifiers)
        def check(prefix: str, workspace_id: str, job_id: str) -> None:
            schema = self.make_schema(prefix)
            pattern = schema.scan_pattern()
            key = schema.job_key(workspace_id, job_id)
            assert glob_regex(pattern).fullmatch(key), f"scan_pattern {pattern!r} misses {key!r}"
            # Every key of jobstore's own lives in a reserved namespace; whatever shape it takes
            # there, it must never be taken for a record, nor scanned as one.
            for namespace in RESERVED_NAMESPACES:
                for rest in (job_id, f"{workspace_id}:{job_id}", f"{{{workspace_id}}}:{job_id}",
                             f"{{{workspace_id}}}", f"{{{workspace_id}:{job_id}}}:log"):
                    key = f"{prefix}:{namespace}:{rest}"
                    assert schema.parse_key(key) is None, f"jobstore's own key {key!r} parses as a record key"
                    assert not glob_regex(pattern).fullmatch(key), (
                        f"scan_pattern {pattern!r} matches jobstore's own key {key!r}: too wide"
                    )

        check()

    def test_builtin_layouts_never_parse_as_this_schema(self) -> None:
        """Else a migration on the same prefix would take one layout's records for the other's."""
        @kit_settings()
        @given(prefix=prefixes, workspace_id=identifiers, job_id=identifiers)
        def check(prefix: str, workspace_id: str, job_id: str) -> None:
            mine = self.make_schema(prefix)
            for other in self.builtin_schemas(prefix):
                theirs = other.job_key(workspace_id, job_id)
                assert mine.parse_key(theirs) is None, f"{other.name} key {theirs!r} parses as {self.schema}"
                key = mine.job_key(workspace_id, job_id)
                assert other.parse_key(key) is None, f"{self.schema} key {key!r} parses as {other.name}"

        check()

    # -- against a database ---------------------------------------------------------------

    def test_scan_finds_exactly_the_record_keys(self, jobstore_url: str) -> None:
        """Backfill, verify and cleanup find records by SCAN MATCH scan_pattern + parse_key."""
        prefix = f"conf:{uuid.uuid4().hex[:8]}"
        names = list(dict.fromkeys([self.schema, "legacy", "workspace"]))
        stores = [jobstore.open(jobstore_url, name, prefix=prefix) for name in names]
        try:
            for n, store in enumerate(stores):  # records of every layout side by side
                for ws in ("ws-a", "ws-b"):
                    store.enqueue(ws, "a", job_id=f"s{n}-{ws}")
                store.dequeue()
            schema, client = self.make_schema(prefix), stores[0].client
            matched = set(client.scan_iter(match=schema.scan_pattern(), count=1000))
            found = {k for k in matched if schema.parse_key(k)}
            expected = {schema.job_key(ws, f"s0-{ws}") for ws in ("ws-a", "ws-b")}
            assert found == expected, (
                f"SCAN MATCH {schema.scan_pattern()!r} + parse_key found {sorted(found)}, "
                f"not {sorted(expected)}"
            )
            assert matched == found, (
                f"SCAN MATCH {schema.scan_pattern()!r} also finds keys that are not this "
                f"schema's records (too wide): {sorted(matched - found)}"
            )
            for key in found:
                parsed = schema.parse_key(key)
                assert parsed is not None, f"parse_key({key!r}) parsed it a moment ago"
                owner, job_id = parsed
                record = client.hgetall(key)
                held = (record.get("workspace_id"), record.get("job_id"))
                assert held[1] == job_id and owner in (None, held[0]), (
                    f"parse_key({key!r}) gives {parsed!r}, but the record there is "
                    f"workspace_id={held[0]!r}, job_id={held[1]!r}"
                )
        finally:
            for store in stores:
                store.close()

    def test_stored_record_layout(self, jobstore_store: jobstore.JobStore) -> None:
        store = jobstore_store
        job = store.enqueue("ws1", "act", {"k": [1, "é"]}, job_id="j1")
        key = self.make_schema().job_key("ws1", "j1")
        stored = store.client.hgetall(key)
        # The enqueue call's token: how a re-sent enqueue recognises the record it created.
        token = stored.pop("_op", None)
        assert isinstance(token, str) and token, f"no _op token in {stored!r}"
        stamp = format_time(job.created_at, store.time_format)
        assert stored == {
            "job_id": "j1", "workspace_id": "ws1", "action": "act", "status": "pending",
            "params": store.codec.encode("params", {"k": [1, "é"]}), "result": "", "error": "",
            "created_at": stamp, "updated_at": stamp,
            "_rev": "1",  # the record's write count: which copy is newer never needs a clock
        }

    def test_workspaces_are_isolated(self, jobstore_store: jobstore.JobStore) -> None:
        store = jobstore_store

        def expect(operation: str, call: Callable[[], object], wanted: object) -> Any:
            """``call()`` must give ``wanted``: a value, a class its result is an instance of,
            or an error class it must raise."""
            try:
                got = call()
            except jobstore.JobStoreError as exc:
                got = exc
            if isinstance(wanted, type):
                verb = "raises" if issubclass(wanted, BaseException) else "returns a"
                ok, shown = isinstance(got, wanted), f"{verb} {wanted.__name__}"
            else:
                ok, shown = got == wanted, f"returns {wanted!r}"
            assert ok, f"{operation}: the contract {shown}; the store gave {got!r}"
            return got

        owner = expect("enqueue('owner', ..., job_id='shared')",
                       lambda: store.enqueue("owner", "secret", {"n": 1}, job_id="shared"), jobstore.Job)
        expect("get('shared', workspace_id='intruder')",
               lambda: store.get("shared", workspace_id="intruder"), None)
        expect("update_status('shared', 'cancelled', workspace_id='intruder')",
               lambda: store.update_status("shared", "cancelled", workspace_id="intruder"),
               jobstore.JobNotFound)
        expect("delete('shared', workspace_id='intruder')",
               lambda: store.delete("shared", workspace_id="intruder"), False)
        expect("list('intruder')", lambda: store.list("intruder"), [])
        enqueue = "enqueue('intruder', ..., job_id='shared') beside the owner's job"
        if self.make_schema().scoped:
            other = expect(enqueue, lambda: store.enqueue("intruder", "own", job_id="shared"), jobstore.Job)
            expect("get('shared', workspace_id='intruder')",
                   lambda: store.get("shared", workspace_id="intruder"), other)
            expect("delete('shared', workspace_id='intruder')",
                   lambda: store.delete("shared", workspace_id="intruder"), True)
        else:
            expect(enqueue, lambda: store.enqueue("intruder", "own", job_id="shared"), jobstore.JobExists)
        expect("get('shared', workspace_id='owner') after all that",
               lambda: store.get("shared", workspace_id="owner"), owner)
        running = expect("dequeue()", store.dequeue, jobstore.Job)
        assert running.job_id == "shared", f"dequeue(): the contract hands out 'shared'; the store gave {running!r}"
        owned = store.get("shared", workspace_id="owner")
        assert owned is not None and owned.status is jobstore.JobStatus.RUNNING, (
            f"get('shared', workspace_id='owner') after dequeue(): the contract gives the job "
            f"running; the store gave {owned!r}"
        )

    def test_single_job_operations_take_one_round_trip(self, jobstore_url: str) -> None:
        if not jobstore_url.startswith("redis://"):
            pytest.skip("round trips are counted on the wire: needs a redis:// URL")
        store = jobstore.open(jobstore_url, self.schema,
                              client_options={"connection_class": CountingConnection})
        warm = store.enqueue("ws", "warm")  # the first call of each script loads it
        store.update_status(warm.job_id, "cancelled", workspace_id="ws")
        store.dequeue()
        store.delete(warm.job_id, workspace_id="ws")
        n, job = _round_trips(lambda: store.enqueue("ws", "a", {"x": 1}))
        assert n == 1, f"enqueue took {n} round trips"
        calls: list[tuple[str, Callable[[], object]]] = [
            ("get", lambda: store.get(job.job_id, workspace_id="ws")),
            ("dequeue", store.dequeue),
            ("update_status", lambda: store.update_status(job.job_id, "completed", workspace_id="ws")),
            ("delete", lambda: store.delete(job.job_id, workspace_id="ws")),
        ]
        for name, call in calls:
            n, _ = _round_trips(call)
            assert n == 1, f"{name} took {n} round trips"
        store.close()

    # -- the state machines ---------------------------------------------------------------

    # Each runs once per flavour (``jobstore_flavour``, see pytest_generate_tests): on the
    # synchronous store, and on the asyncio one with ``async_share`` of the runs.

    def test_machine_schema_alone(self, jobstore_url: str, jobstore_flavour: str) -> None:
        self.run(lambda: StoreMachine(jobstore_url, self.schema, flavour=jobstore_flavour),
                 jobstore_flavour)

    def test_machine_as_dual_target_from_legacy(self, jobstore_url: str, jobstore_flavour: str) -> None:
        self._dual_machine(jobstore_url, "legacy", self.schema, jobstore_flavour)

    def test_machine_as_dual_source_to_workspace(self, jobstore_url: str, jobstore_flavour: str) -> None:
        self._dual_machine(jobstore_url, self.schema, "workspace", jobstore_flavour)

    def _dual_machine(self, url: str, source: str, target: str, flavour: str) -> None:
        if source == target:
            pytest.skip(f"dual needs two schemas; {source} -> {target} is the same one")
        both = {"source": source, "target": target}
        stores = {f"dual[{phase}]": ("dual", {**both, "phase": phase}) for phase in PHASES}
        stores["dual[stored phase]"] = ("dual", both)
        self.run(lambda: StoreMachine(url, stores=stores, flavour=flavour), flavour)

    def test_machine_every_strategy_reads_alike(self, jobstore_url: str, jobstore_flavour: str) -> None:
        self.run(lambda: MultiStrategyMachine(jobstore_url, (self.schema,), flavour=jobstore_flavour),
                 jobstore_flavour)
