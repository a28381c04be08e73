"""The kit under pytest-xdist: ``--jobstore-url`` is flushed before every test, so workers
sharing one database would flush each other's data; ``{worker}`` gives each its own."""

from __future__ import annotations

import pytest

from jobstore.testing.pytest_plugin import for_this_worker

pytest_plugins = ["pytester"]


def test_worker_field_is_the_worker_number():
    url = "redis://127.0.0.1:6390/{worker}"
    assert for_this_worker(url, "gw3", 4) == "redis://127.0.0.1:6390/3"
    assert for_this_worker(url) == "redis://127.0.0.1:6390/0"  # no xdist: worker 0
    plain = "redis://127.0.0.1:6390/5"
    assert for_this_worker(plain) == plain
    assert for_this_worker(plain, "gw0", 1) == plain


def test_a_shared_database_is_refused_when_several_workers_run():
    with pytest.raises(pytest.UsageError) as caught:
        for_this_worker("redis://user:secret@127.0.0.1:6390/5", "gw1", 2)
    message = str(caught.value)
    assert "{worker}" in message and "-n 0" in message and "2 pytest-xdist workers" in message
    assert "secret" not in message
    # memory:// is the process's own: nothing is shared between workers.
    assert for_this_worker("memory://shared", "gw1", 2) == "memory://shared"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6390/5?password=s3cr3t",
                                 "redis+sentinel://h1:26379/mymaster?sentinel_password=s3cr3t",
                                 "unix:///tmp/redis.sock?db=0&password=s3cr3t"])
def test_the_shared_database_refusal_never_shows_a_password(url):
    with pytest.raises(pytest.UsageError) as caught:
        for_this_worker(url, "gw1", 2)
    assert "s3cr3t" not in str(caught.value)


PROJECT = """
def test_one(jobstore_store):
    jobstore_store.enqueue("ws", "a", {}, job_id="a")

def test_two(jobstore_store):
    jobstore_store.enqueue("ws", "b", {}, job_id="b")
"""


@pytest.mark.redis
def test_each_worker_flushes_a_database_of_its_own(pytester, redis_server):
    pytester.makepyfile(test_project=PROJECT)
    base = f"redis://{redis_server.host}:{redis_server.port}"
    redis_server.client().flushall()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "each",
                                           "--jobstore-url", base + "/{worker}")
    result.assert_outcomes(passed=4)  # --dist each: both tests on both workers
    # Each worker's last test left its job in the worker's own database, and only there.
    held = {db: sorted(redis_server.client(db=db).keys("*")) for db in range(3)}
    assert held[0] and held[0] == held[1] and held[2] == []

    refused = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                            "--jobstore-url", base + "/0")
    assert refused.ret != 0
    refused.stdout.fnmatch_lines(["*flushed before every test*{worker}*"])


@pytest.mark.redis
def test_a_run_started_inside_a_worker_is_not_one_of_its_workers(pytester, redis_server,
                                                                  monkeypatch):
    """A pytest run a test starts (pytester, as the kit's own tests do) inherits the worker's
    PYTEST_XDIST_* variables; it is a run of one process all the same, and its shared URL is
    fine."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    pytester.makepyfile(test_project=PROJECT)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--jobstore-url",
        f"redis://{redis_server.host}:{redis_server.port}/0")
    result.assert_outcomes(passed=2)
