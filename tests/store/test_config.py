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


def test_every_variable_from_env_reads_has_its_row_in_the_configuration_reference():
    """The hand-kept table in docs/api.md once lacked five of the variables from_env reads; the
    reference page is generated from the option table from_env reads by."""
    import pathlib
    import re

    from jobstore import config

    read = {option.env for option in config.OPTIONS.values() if option.env} | {config.LEGACY_FLAG}
    page = (pathlib.Path(__file__).parents[2] / "docs" / "reference" / "configuration.md")
    rows = set(re.findall(r"^\| `[a-z_]+` \| `([A-Z_]+)` \|", page.read_text(), re.M))
    assert len(read) >= 13 and read - {config.LEGACY_FLAG} <= rows, sorted(read - rows)
    assert config.LEGACY_FLAG in page.read_text()


# One value for each variable of the option table, and what the store then shows of it.
FROM_ENV = {
    "url": ("memory://", lambda s: s.url.startswith("memory://")),
    "strategy": ("workspace", lambda s: s.strategy.name == "workspace"),
    "prefix": ("svc", lambda s: s.prefix == "svc"),
    "own_prefix": ("jobstore", lambda s: s.own_prefix == "jobstore"),
    "source": ("workspace", lambda s: s.strategy.source.name == "workspace"),
    "target": ("legacy", lambda s: s.strategy.target.name == "legacy"),
    "allow_eviction": ("Yes", lambda s: s.allow_eviction is True),
    "lease": (" 2.5 ", lambda s: s.lease == 2.5),
    "max_attempts": ("7", lambda s: s.max_attempts == 7),
    "time_format": ("iso", lambda s: s.time_format == "iso"),
    "legacy_queue": ("simple:queue", lambda s: s.legacy_queue == "simple:queue"),
    "metrics": ("on", lambda s: type(s.events).__name__ == "PrometheusEvents"),
    "finished_ttl": ("90", lambda s: s.context.finished_ttl_ms == 90_000),
    "dead_letter_ttl": ("0.5", lambda s: s.context.dead_letter_ttl_ms == 500),
}


@pytest.mark.parametrize("name", sorted(FROM_ENV))
def test_from_env_reads_every_variable_of_the_option_table(name):
    from jobstore import config

    value, shows = FROM_ENV[name]
    environ = {"JOBSTORE_REDIS_URL": "memory://", config.env(name): value}
    if config.OPTIONS[name].dual:  # both swapped: the two schemas must differ
        environ.update({"JOBSTORE_STRATEGY": "dual", config.env("source"): "workspace",
                        config.env("target"): "legacy"})
    if name == "metrics":
        environ["JOBSTORE_KEY_PREFIX"] = "config_table_test"  # its own metric names
    with jobstore.JobStore.from_env(environ) as store:
        assert shows(store)


def test_the_option_table_names_every_variable_the_test_above_reads():
    from jobstore import config

    assert {o.name for o in config.OPTIONS.values() if o.env} == set(FROM_ENV)


@pytest.mark.parametrize("name", ["lease", "max_attempts", "allow_eviction", "metrics"])
def test_a_variable_an_explicit_option_overrides_is_not_read(name):
    from jobstore import config

    given = "events" if name == "metrics" else name
    explicit = {"lease": 5, "max_attempts": 2, "allow_eviction": False, "events": None}[given]
    environ = {"JOBSTORE_REDIS_URL": "memory://", config.env(name): "not a value"}
    with pytest.raises(ConfigError, match=config.env(name)):
        jobstore.JobStore.from_env(environ)
    jobstore.JobStore.from_env(environ, **{given: explicit}).close()


def test_the_store_defaults_are_the_option_tables():
    import inspect

    from jobstore import config

    for function in (jobstore.JobStore.__init__, jobstore.open):
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name in config.OPTIONS and parameter.default is not parameter.empty:
                default = config.OPTIONS[parameter.name].default
                if default is not config.REQUIRED:  # JobStore's url= only names the client
                    assert parameter.default == default, (function, parameter.name)
    with jobstore.open("memory://") as store:
        assert (store.lease, store.max_attempts, store.prefix) == (3600.0, 3, "ai")


@pytest.mark.parametrize("option, value, message", [
    ("lease", 0, "lease must be a number of seconds > 0 (at most 1e9), not 0"),
    ("lease", 10 ** 10, "lease must be a number of seconds > 0 (at most 1e9), not 10000000000"),
    ("max_attempts", True, "max_attempts must be an int >= 1, not True"),
    ("time_format", "unix", "time_format must be 'epoch' or 'iso', not 'unix'"),
    ("max_record_bytes", 0, "max_record_bytes must be a positive int, not 0"),
    ("wait_replicas", -1, "wait_replicas must be an int >= 0, not -1"),
    ("wait_timeout", float("nan"), "wait_timeout must be a number of seconds > 0, not nan"),
    ("allow_eviction", 1, "allow_eviction must be True or False, not 1"),
    ("legacy_queue", "a queue", "legacy_queue must be a Redis key name, not 'a queue'"),
    ("prefix", "a b", "prefix 'a b' must be segments of A-Z a-z 0-9 _ . - separated by ':'"),
])
def test_a_bad_option_is_refused_with_the_tables_rule(option, value, message):
    with pytest.raises(ConfigError) as info:
        jobstore.open("memory://", **{option: value})
    assert str(info.value) == message


def test_the_command_lines_shared_options_are_the_option_tables():
    from jobstore import config
    from jobstore.cli import main

    command = main.commands["migrate"].commands["status"]
    options = {param.opts[0]: param for param in command.params}
    for option in config.OPTIONS.values():
        if option.cli in options:
            param = options[option.cli]
            assert param.envvar == (option.env if option.cli_env else None), option.name
            assert param.help and param.help.startswith(option.doc.rstrip(".")), option.name
    assert {"--url", "--prefix", "--own-prefix", "--source", "--target",
            "--allow-eviction"} <= set(options)


def test_every_variable_the_library_reads_is_in_the_configuration_table():
    """The store's options and the process's own variables (plugins, schema check, trace) are
    named in jobstore.config, which the configuration reference is generated from; the test
    kit's variables are the kit's (docs/testing.md)."""
    import re
    from pathlib import Path

    from jobstore import config, determinism, plugins

    root = Path(jobstore.__file__).parent
    named = set()
    for path in root.rglob("*.py"):
        if "testing" not in path.relative_to(root).parts:
            named |= set(re.findall(r"JOBSTORE_[A-Z_]+", path.read_text()))
    table = {o.env for o in config.OPTIONS.values() if o.env} | {
        o.env for o in config.PROCESS.values()}
    assert named <= table, named - table
    assert {plugins.LOAD_PLUGINS, plugins.TRACE_PLUGINS, determinism.ENV_CHECK} == {
        o.env for o in config.PROCESS.values()}
