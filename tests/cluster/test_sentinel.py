"""Redis Sentinel: ``redis+sentinel://`` stores, migrations and the CLI on a primary, its replica
and three sentinels the suite starts (tests/support/servers.py ``RedisSentinel``), and what a
failover under live traffic does to acknowledged writes, with and without ``wait_replicas``.

The failovers kill the primary (SIGKILL): the sentinels promote the replica after
``down-after-milliseconds`` (1 s here), and the old primary comes back, empty, as the new one's
replica, as a managed service brings a failed node back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest

import jobstore
import jobstore.aio
from jobstore import ConfigError, LeaseLost, StoreUnavailable
from jobstore.cli import main as cli_main
from tests.support.cli import cli_runner

pytestmark = pytest.mark.redis

STRATEGIES = ["legacy", "workspace", "dual"]


def test_every_operation_through_a_sentinel_url(sentinel_url, redis_sentinel):
    primary = redis_sentinel.primary().client(decode_responses=True)
    for strategy in STRATEGIES:
        primary.flushall()
        with jobstore.open(sentinel_url, strategy) as store:
            assert store.client.info("server")["tcp_port"] == redis_sentinel.primary().port
            job = store.enqueue("acme", "summarise", {"doc": 1}, job_id=f"{strategy}-1")
            assert store.get(job.job_id, workspace_id="acme") == job
            assert store.get(job.job_id, workspace_id="globex") is None
            more = store.enqueue_many([("acme", "a"), ("acme", "b", {"n": 2})])
            claimed = store.dequeue(timeout=1, lease=60)
            assert claimed is not None and claimed.job_id == job.job_id
            store.extend(claimed)
            done = store.update_status(job.job_id, "completed", workspace_id="acme",
                                       result={"words": 120}, claim=claimed.claim)
            assert done.result == {"words": 120}
            assert [j.job_id for j in store.list("acme", status="completed")] == [job.job_id]
            assert store.delete(more[0].job_id, workspace_id="acme")
            assert store.get(more[0].job_id, workspace_id="acme") is None
            # Written on the primary the sentinels name, nowhere else.
            assert primary.exists(*(f"ai:jobs:{job.job_id}", f"ai:job:acme:{job.job_id}")) >= 1


def test_from_env_the_migration_and_the_cli_take_a_sentinel_url(sentinel_url, redis_sentinel,
                                                                 monkeypatch):
    monkeypatch.setenv("JOBSTORE_REDIS_URL", sentinel_url)
    monkeypatch.setenv("JOBSTORE_STRATEGY", "dual")
    with jobstore.JobStore.from_env() as store:
        job = store.enqueue("acme", "a", job_id="env-1")
        assert store.get("env-1", workspace_id="acme") == job
    migration = jobstore.open_migration(sentinel_url)
    migration.set_phase("dual-write")
    assert migration.backfill().finished
    assert migration.verify().clean
    runner = cli_runner()
    result = runner.invoke(cli_main, ["migrate", "status", "--url", sentinel_url])
    assert result.exit_code == 0, result.output + result.stderr
    assert "dual-write" in result.output
    result = runner.invoke(cli_main, ["migrate", "verify"])  # --url from JOBSTORE_REDIS_URL
    assert result.exit_code == 0, result.output + result.stderr


@pytest.mark.parametrize("url, problem", [
    ("redis+sentinel://127.0.0.1:1", "names no service"),
    ("redis+sentinel://127.0.0.1:1/", "names no service"),
    ("redis+sentinel://127.0.0.1:1,127.0.0.1:2?db=0", "names no service"),
    ("redis+sentinel:///jobstore", "names no sentinel"),
    ("redis+sentinel://,/jobstore", "names no sentinel"),
    ("redis+sentinel://127.0.0.1:notaport/jobstore", "sentinels must be host:port"),
    ("redis+sentinel://127.0.0.1:70000/jobstore", "sentinels must be host:port"),
    ("redis+sentinel://127.0.0.1/jobstore", "sentinels must be host:port"),
    ("redis+sentinel://127.0.0.1:1/jobstore/zero", "only a database number"),
    ("redis+sentinel://127.0.0.1:1/jobstore/0/1", "only a database number"),
    ("redis+sentinel://127.0.0.1:1/jobstore?db=x", "'db'"),
    ("redis+sentinel://a:x@127.0.0.1:1,b:y@127.0.0.1:2/jobstore", "different credentials"),
])
def test_bad_sentinel_urls_are_config_errors_before_anything_connects(url, problem):
    # Port 1: nothing listens there, so a URL let through would fail as StoreUnavailable.
    for opening in (lambda: jobstore.open(url), lambda: jobstore.open_migration(url)):
        with pytest.raises(ConfigError, match=problem):
            opening()


def test_the_url_parts_reach_redis_py():
    ports = [26379, 26380]
    url = (f"redis+sentinel://alice:s%40cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/job%20store/3"
           "?socket_timeout=2.5&sentinel_password=other")
    client = jobstore.open(url).client
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("alice", "s@cret", 3)
    assert kwargs["socket_timeout"] == 2.5 and kwargs["retry"].get_retries() == 3
    assert client.connection_pool.service_name == "job store"
    manager = client.connection_pool.sentinel_manager
    # The sentinels get their own password, never the data nodes'.
    assert [s.connection_pool.connection_kwargs.get("password") for s in manager.sentinels] == [
        "other", "other"]
    assert [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels] == ports[:2]
    client.close()


def test_a_bad_client_option_is_a_config_error_at_open_for_both_stores():
    url = "redis+sentinel://127.0.0.1:1/jobstore"  # nothing listens: nothing may connect
    for opening in (jobstore.open, jobstore.aio.open):
        with pytest.raises(ConfigError, match="no_such_option"):
            opening(url, client_options={"no_such_option": 1})


def test_an_asyncio_store_closes_its_sentinel_connections(sentinel_url):
    async def main():
        store = jobstore.aio.open(sentinel_url)
        await store.get("j", workspace_id="acme")  # asks the sentinels for the primary
        sentinels = store.client.connection_pool.sentinel_manager.sentinels

        def connected():
            return [c for s in sentinels for c in (*s.connection_pool._available_connections,
                                                   *s.connection_pool._in_use_connections)
                    if c.is_connected]

        assert connected()
        await store.close()
        assert connected() == []

    asyncio.run(main())


def test_no_sentinel_reachable_is_store_unavailable(sentinel_url):
    store = jobstore.open("redis+sentinel://127.0.0.1:1,127.0.0.1:2/jobstore",
                          client_options={"retry": None})
    with pytest.raises(StoreUnavailable, match="No master found"):
        store.enqueue("acme", "a")
    store = jobstore.open(sentinel_url.replace("/jobstore", "/nosuchservice"),
                          client_options={"retry": None})
    with pytest.raises(StoreUnavailable, match="nosuchservice"):
        store.get("j", workspace_id="acme")


# -- failover under live traffic ------------------------------------------------------------

BEFORE, DURING, AFTER = 0, 1, 2  # the failover's epochs, as the traffic threads see them


@dataclass
class Traffic:
    """Writer threads enqueueing and a worker claiming and completing, through one store, each
    write recorded with the epochs at which it started and was acknowledged."""

    store: jobstore.JobStore
    writers: int = 2
    epoch: int = BEFORE
    stop: threading.Event = field(default_factory=threading.Event)
    # (writer, n, job id, epoch started, epoch acknowledged) of every enqueue that returned
    enqueued: list[tuple[int, int, str, int, int]] = field(default_factory=list)
    completed: list[tuple[str, int, int]] = field(default_factory=list)
    unavailable: int = 0
    lease_lost: int = 0
    crashed: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for n in range(self.writers):
            self.threads.append(threading.Thread(target=self._guard, args=(self._write, n)))
        self.threads.append(threading.Thread(target=self._guard, args=(self._work,)))
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        assert not self.crashed, self.crashed

    def acked_after(self, count: int) -> None:
        """Wait until ``count`` more enqueues were acknowledged (a readiness wait)."""
        target = len(self.enqueued) + count
        deadline = time.monotonic() + 120  # a bound: a loaded machine fails over slowly
        while len(self.enqueued) < target:
            assert time.monotonic() < deadline, "the traffic stalled"
            assert not self.crashed, self.crashed
            time.sleep(0.02)

    def _guard(self, body, *args) -> None:
        try:
            body(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.crashed.append(exc)

    def _write(self, writer: int) -> None:
        n = 0
        while not self.stop.is_set():
            started, job_id = self.epoch, f"w{writer}-{n}"
            try:
                self.store.enqueue("acme", "a", {"n": n}, job_id=job_id)
            except StoreUnavailable:  # NotReplicated too: not acknowledged
                self.unavailable += 1
                time.sleep(0.01)
            else:
                self.enqueued.append((writer, n, job_id, started, self.epoch))
            n += 1  # a fresh id every time: only what returned counts as acknowledged

    def _work(self) -> None:
        while not self.stop.is_set():
            started = self.epoch
            try:
                job = self.store.dequeue(timeout=0.05, lease=60)
                if job is None:
                    continue
                self.store.update_status(job.job_id, "completed", workspace_id="acme",
                                         result=1, claim=job.claim)
            except LeaseLost:  # the claim was lost with the old primary's last writes
                self.lease_lost += 1
            except StoreUnavailable:
                self.unavailable += 1
                time.sleep(0.01)
            else:
                self.completed.append((job.job_id, started, self.epoch))


def fail_over_under(traffic: Traffic, redis_sentinel) -> None:
    """Kill the primary under the traffic; return once the store has served writes from the
    new primary (no restart, no reopening)."""
    traffic.acked_after(100)

    def killed() -> None:  # a call started from here on cannot reach the old primary
        traffic.epoch = DURING

    _, new = redis_sentinel.kill_primary(killed)
    traffic.epoch = AFTER
    traffic.acked_after(100)
    assert traffic.store.client.info("server")["tcp_port"] == new.port


def present(store, job_ids) -> dict[str, str | None]:
    """Each job's status on the primary now (None: gone)."""
    jobs = {job_id: store.get(job_id, workspace_id="acme") for job_id in job_ids}
    return {job_id: job.status.value if job else None for job_id, job in jobs.items()}


def test_with_wait_replicas_a_failover_loses_no_acknowledged_write(sentinel_url, redis_sentinel):
    store = jobstore.open(sentinel_url, "dual", phase="dual-write", wait_replicas=1,
                          wait_timeout=0.5)
    traffic = Traffic(store).start()
    try:
        fail_over_under(traffic, redis_sentinel)
    finally:
        traffic.finish()
    status = present(store, [e[2] for e in traffic.enqueued] + [c[0] for c in traffic.completed])
    lost = [e[2] for e in traffic.enqueued if status[e[2]] is None]
    undone = [c[0] for c in traffic.completed if status[c[0]] != "completed"]
    assert (lost, undone) == ([], [])
    assert traffic.lease_lost == 0
    assert traffic.unavailable > 0  # the failover did interrupt the traffic
    assert any(e[3] == BEFORE for e in traffic.enqueued) and any(
        e[3] == AFTER for e in traffic.enqueued)
    store.close()


def test_without_wait_replicas_only_the_last_writes_before_the_crash_can_be_lost(
        sentinel_url, redis_sentinel):
    """Asynchronous replication: what the killed primary acknowledged but had not yet sent to
    its replica is gone. Replication is one ordered stream, so the replica holds a prefix of
    the primary's writes: per writer, what is lost is the tail of what the old primary
    acknowledged, and nothing acknowledged after the store followed the new primary is lost.
    The counts are printed (``pytest -s``): docs/guarantees.md and docs/sentinel.md quote them."""
    store = jobstore.open(sentinel_url, "dual", phase="dual-write")
    traffic = Traffic(store).start()
    try:
        fail_over_under(traffic, redis_sentinel)
    finally:
        traffic.finish()
    status = present(store, [e[2] for e in traffic.enqueued] + [c[0] for c in traffic.completed])
    lost = {e[2] for e in traffic.enqueued if status[e[2]] is None}
    for writer in range(traffic.writers):
        mine = [e for e in traffic.enqueued if e[0] == writer]
        on_old = [e for e in mine if e[3] == BEFORE]  # started before the crash
        lost_mine = [e for e in mine if e[2] in lost]
        assert all(e[3] == BEFORE for e in lost_mine), lost_mine
        assert lost_mine == on_old[len(on_old) - len(lost_mine):], "a lost write that is not a tail"
    undone = [c for c in traffic.completed if status[c[0]] != "completed"]
    assert all(started == BEFORE for _, started, _ in undone), undone
    print(f"\nacknowledged enqueues: {len(traffic.enqueued)}, lost: {len(lost)}; "
          f"acknowledged completions: {len(traffic.completed)}, lost or undone: {len(undone)}; "
          f"claims lost: {traffic.lease_lost}; calls that raised StoreUnavailable: "
          f"{traffic.unavailable}")
    store.close()


def test_a_backfill_across_a_failover_resumes_and_verifies_clean(sentinel_url, redis_sentinel):
    seeding = jobstore.open(sentinel_url, "legacy", wait_replicas=1)
    jobs = seeding.enqueue_many([(f"ws{n % 5}", "seed", {"n": n}) for n in range(2000)])
    migration = jobstore.open_migration(sentinel_url)
    migration.set_phase("dual-write")
    killed = threading.Event()
    killer = threading.Thread(target=redis_sentinel.kill_primary, args=(killed.set,))
    batches = [0]

    def progress(step, done, total, counts) -> None:
        batches[0] += 1
        if batches[0] == 3:  # the pass goes on while the primary is dead and then replaced
            killer.start()
            killed.wait(30)

    interrupted, report = 0, None
    deadline = time.monotonic() + 180  # a bound: a loaded machine fails over slowly
    while report is None or not report.finished:
        assert time.monotonic() < deadline, "the backfill never finished"
        try:
            report = migration.backfill(batch=50, rate=1000, progress=progress)
        except StoreUnavailable:
            interrupted += 1  # resumed, as an operator would run it again
            time.sleep(0.2)
    killer.join(180)
    assert interrupted >= 1 and report.finished
    verify = migration.verify()
    assert verify.clean, verify.as_dict()
    workspace = jobstore.open(sentinel_url, "workspace")
    assert all(workspace.get(j.job_id, workspace_id=j.workspace_id) for j in jobs)


def test_passwords_never_show_in_errors_from_the_data_nodes_or_the_sentinels(sentinel_url):
    """A wrong password for the data nodes is AuthenticationFailed; sentinels that cannot be
    reached are StoreUnavailable: neither quotes a secret. (A ``sentinel_password`` given to
    sentinels that have none is accepted: redis-py's handshake lets that pass.)"""
    from tests.store.test_secrets_and_input import ENC, ENC2, ENC_WRONG, exception_text, leaks

    where = sentinel_url.split("://", 1)[1]
    cases = [(f"redis+sentinel://alice:{ENC_WRONG}@{where}?sentinel_password={ENC}",
              jobstore.AuthenticationFailed),
             (f"redis+sentinel://alice:{ENC}@127.0.0.1:1/jobstore?sentinel_password={ENC2}",
              StoreUnavailable)]
    for url, error in cases:
        store = jobstore.open(url, client_options={"retry": None})
        assert not leaks(repr(store)), repr(store)
        with pytest.raises(error) as info:
            store.enqueue("acme", "a")
        assert not leaks(exception_text(info.value)), exception_text(info.value)
        store.close()
    with jobstore.open(f"redis+sentinel://{where}?sentinel_password={ENC}") as store:
        assert store.enqueue("acme", "a", job_id="through-any-sentinel-password")
