"""Opening stores: URL schemes, from_env, the legacy flag, and secrets kept out of messages."""

from __future__ import annotations

import pytest

import jobstore
from jobstore import ConfigError, StoreUnavailable, UnknownStrategy
from jobstore.connection import redact


def env(**values):
    return {k: v for k, v in values.items() if v is not None}


def test_from_env_defaults_to_legacy_and_prefix_ai():
    store = jobstore.JobStore.from_env(env(JOBSTORE_REDIS_URL="memory://"))
    assert store.strategy.name == "legacy" and store.prefix == "ai"


def test_from_env_reads_strategy_and_prefix():
    store = jobstore.JobStore.from_env(
        env(JOBSTORE_REDIS_URL="memory://", JOBSTORE_STRATEGY="workspace", JOBSTORE_KEY_PREFIX="svc")
    )
    assert store.strategy.name == "workspace" and store.prefix == "svc"
    store.enqueue("ws", "a", job_id="j")
    assert store.client.exists("svc:job:ws:j")


@pytest.mark.parametrize("flag, strategy", [("on", "dual"), ("off", "legacy")])
def test_legacy_flag_selects_strategy_when_strategy_unset(flag, strategy):
    store = jobstore.JobStore.from_env(env(JOBSTORE_REDIS_URL="memory://", AI_JOBS_NEW_SCHEMA=flag))
    assert store.strategy.name == strategy


def test_strategy_variable_wins_over_legacy_flag():
    store = jobstore.JobStore.from_env(
        env(JOBSTORE_REDIS_URL="memory://", JOBSTORE_STRATEGY="workspace", AI_JOBS_NEW_SCHEMA="on")
    )
    assert store.strategy.name == "workspace"


@pytest.mark.parametrize("flag", ["ON", "true", "1", "yes"])
def test_other_legacy_flag_values_are_refused(flag):
    with pytest.raises(ConfigError) as info:
        jobstore.JobStore.from_env(env(JOBSTORE_REDIS_URL="memory://", AI_JOBS_NEW_SCHEMA=flag))
    assert "AI_JOBS_NEW_SCHEMA" in str(info.value) and "'on'" in str(info.value) and "'off'" in str(info.value)


def test_missing_url_names_the_variable(monkeypatch):
    monkeypatch.delenv("JOBSTORE_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="JOBSTORE_REDIS_URL"):
        jobstore.JobStore.from_env()


def test_from_env_reads_os_environ(monkeypatch):
    monkeypatch.setenv("JOBSTORE_REDIS_URL", "memory://")
    monkeypatch.setenv("JOBSTORE_STRATEGY", "dual")
    assert jobstore.JobStore.from_env().strategy.name == "dual"


def test_unknown_strategy_lists_registered_names():
    with pytest.raises(UnknownStrategy) as info:
        jobstore.open("memory://", "flat")
    for name in ("legacy", "workspace", "dual"):
        assert name in str(info.value)


@pytest.mark.parametrize("url", ["http://localhost", "localhost:6379", "", "redis://host:notaport/0"])
def test_bad_urls(url):
    with pytest.raises(ConfigError):
        jobstore.open(url, "legacy").get("j", workspace_id="w")


def test_cluster_urls():
    with pytest.raises(StoreUnavailable) as info:
        jobstore.open("redis+cluster://u:hunter2@127.0.0.1:1,127.0.0.1:2", "workspace",
                      client_options={"socket_connect_timeout": 0.3})
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(ConfigError, match="host:port"):
        jobstore.open("redis+cluster://127.0.0.1", "workspace")


def test_memory_stores_are_private_unless_named():
    a, b = jobstore.open("memory://"), jobstore.open("memory://")
    a.enqueue("ws", "x", job_id="j")
    assert b.get("j", workspace_id="ws") is None
    c, d = jobstore.open("memory://shared-test"), jobstore.open("memory://shared-test")
    c.enqueue("ws", "x", job_id="j")
    assert d.get("j", workspace_id="ws") is not None


def test_unix_and_rediss_urls_are_accepted():
    for url in ("unix:///tmp/nonexistent-jobstore.sock", "rediss://localhost:1/0"):
        store = jobstore.open(url, "legacy", client_options={"socket_connect_timeout": 0.5})
        with pytest.raises(StoreUnavailable):
            store.get("j", workspace_id="w")


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:hunter2@h:1/0", "redis://user:***@h:1/0"),
        ("rediss://user:hunter2@h/0?ssl_cert_reqs=none", "rediss://user:***@h/0?ssl_cert_reqs=none"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown


def test_password_never_appears_in_errors_or_repr():
    store = jobstore.open("redis://admin:hunter2@127.0.0.1:1/0", "dual")
    assert "hunter2" not in repr(store)
    with pytest.raises(StoreUnavailable) as info:
        store.enqueue("ws", "a")
    text = str(info.value) + repr(info.value) + str(info.value.__cause__)
    assert "hunter2" not in text and "***" in str(info.value)
    with pytest.raises(ConfigError) as bad:
        jobstore.open("redis://admin:hunter2@host:notaport/0", "legacy")
    assert "hunter2" not in str(bad.value)


def test_dead_server_is_store_unavailable_and_writes_nothing(redis_server):
    port = redis_server.port
    redis_server.kill()
    try:
        store = jobstore.open(f"redis://127.0.0.1:{port}/0", "dual",
                              client_options={"socket_connect_timeout": 0.5})
        with pytest.raises(StoreUnavailable) as info:
            store.enqueue("ws", "a")
        assert info.value.__cause__ is not None
    finally:
        redis_server.restart()


def test_every_variable_from_env_reads_has_its_row_in_the_api_reference():
    """The table in docs/api.md lacked five of the variables from_env reads."""
    import pathlib
    import re

    from jobstore import store

    read = {value for name, value in vars(store).items() if name.startswith("ENV_")}
    page = (pathlib.Path(__file__).parent.parent / "docs" / "api.md").read_text()
    section = page.split("### `JobStore.from_env(", 1)[1].split("\n### ", 1)[0]
    rows = set(re.findall(r"^\| `([A-Z_]+)`", section, re.M)) | set(
        re.findall(r"^\| `[A-Z_]+`, `([A-Z_]+)`", section, re.M))
    assert len(read) >= 13 and read <= rows, sorted(read - rows)
