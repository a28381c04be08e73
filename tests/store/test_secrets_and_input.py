"""Bad input and secrets.

Bad input: values JSON cannot encode, nesting without end and text that is not valid Unicode
are refused with ``InvalidArgument`` naming the argument, before anything reaches Redis.

Secrets: a password in a URL, in any form redis-py accepts (userinfo, ``?password=``,
percent-encoded, per cluster seed, ...), never appears in ``redact``, ``repr(store)``, an
exception (its chain included) or CLI output; percent-encoded passwords with reserved
characters connect, against a real ACL user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest

import jobstore
from jobstore import ConfigError, InvalidArgument, StoreUnavailable, validation
from jobstore.connection import connect, redact
from tests.conftest import need_redis_server
from tests.support.servers import RedisServer, add_all_slots, free_port, wait_cluster_ok

# The core real-Redis tests: .ci/run runs them on every supported server build too.
pytestmark = pytest.mark.core

# -- helpers ----------------------------------------------------------------------------------

# Generated secrets often hold reserved characters; each token between them is distinctive,
# so that a part of the secret showing up is caught as well as the whole of it.
SECRET = "Alpha7/Bravo8#Charl9@Delta0%Echo1"
SECRET_TOKENS = ("Alpha7", "Bravo8", "Charl9", "Delta0", "Echo1")
ENC = quote(SECRET, safe="")
# A second secret with the other reserved characters ':' and '?'.
SECRET2 = "Golf3:Hotel4?India5&Julie6=Kilo7"
SECRET2_TOKENS = ("Golf3", "Hotel4", "India5", "Julie6", "Kilo7")
ENC2 = quote(SECRET2, safe="")
WRONG = "Lima8/Mike9#Nove0@Osca1%Papa2"
WRONG_TOKENS = ("Lima8", "Mike9", "Nove0", "Osca1", "Papa2")
ENC_WRONG = quote(WRONG, safe="")


def leaks(text: str, secrets=((SECRET, SECRET_TOKENS), (SECRET2, SECRET2_TOKENS),
                              (WRONG, WRONG_TOKENS))) -> list[str]:
    """The forms of any secret (raw, percent-encoded, quote_plus'd, any token of it) in ``text``."""
    found = []
    for secret, tokens in secrets:
        for form in (secret, quote(secret, safe=""), quote_plus(secret), quote(secret), *tokens):
            if form in text:
                found.append(form)
    return found


def exception_text(exc: BaseException) -> str:
    """str and repr of the exception and of everything chained to it."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), repr(exc.args)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def nest_lists(depth: int):
    """A value nested ``depth`` levels deep: depth 1 is ``[]``."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nest_dicts(depth: int):
    value: dict = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.fixture
def dead_store():
    """A store on a port nothing listens on: an input check that let anything through to Redis
    would show up as StoreUnavailable, not as the input error."""
    with jobstore.open("redis://127.0.0.1:1/0", "dual",
                       client_options={"socket_connect_timeout": 0.2, "retry": None}) as store:
        yield store


def refused(call, argument: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        call()
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.argument == argument and str(exc).startswith(argument), str(exc)
    str(exc).encode("utf-8")  # the message itself can be printed and logged
    return exc


# -- bad input ----------------------------------------------------------------------------------


def test_nesting_5000_deep_is_invalid_argument(dead_store):
    for deep in (nest_lists(5000), nest_dicts(5000)):
        exc = refused(lambda deep=deep: dead_store.enqueue("ws", "a", {"d": deep}), "params")
        assert "deep" in str(exc)
        refused(lambda deep=deep: dead_store.update_status("j", "completed", workspace_id="ws",
                                                           result=deep), "result")
        refused(lambda deep=deep: dead_store.enqueue_many([("ws", "a", {"d": deep})]), "params")


def test_valid_values_up_to_the_limits_round_trip():
    limit = validation.MAX_JSON_DEPTH
    assert 32 <= limit <= 200
    store = jobstore.open("memory://", "dual", phase="dual-write")
    job = store.enqueue("ws", "a", {"d": nest_lists(limit - 1)})  # the params dict is level 1
    assert store.get(job.job_id, workspace_id="ws").params == {"d": nest_lists(limit - 1)}
    store.dequeue()
    done = store.update_status(job.job_id, "completed", workspace_id="ws", result=nest_dicts(limit))
    assert done.result == nest_dicts(limit)
    exc = refused(lambda: store.enqueue("ws", "a", {"d": nest_lists(limit)}), "params")
    assert str(limit) in str(exc)
    refused(lambda: store.update_status(job.job_id, "completed", workspace_id="ws",
                                        result=nest_dicts(limit + 1)), "result")
    # A value that refers to itself is endless nesting, not a hang or a RecursionError.
    loop: list = []
    loop.append(loop)
    refused(lambda: store.enqueue("ws", "a", {"loop": loop}), "params")
    # Valid Unicode, astral characters and NUL included, still round-trips.
    text = "é😀\u2028\x00\U0010fffd"
    job = store.enqueue("ws", "a", {text: [text]})
    assert store.get(job.job_id, workspace_id="ws").params == {text: [text]}
    store.dequeue()
    done = store.update_status(job.job_id, "failed", workspace_id="ws", error=text, result=text)
    assert (done.error, done.result) == (text, text)


@pytest.mark.parametrize("text", ["\ud800", "ok\udfffok", "\udc80", "\ud83d\ude00"])
def test_text_that_is_not_unicode_is_invalid_argument(dead_store, text):
    # "\ud83d\ude00" is two lone surrogates in a str (a pair in UTF-16, not in Python): JSON
    # would write them as an escape that reads back as one emoji, a different value.
    refused(lambda: dead_store.update_status("j", "failed", workspace_id="ws", error=text), "error")
    refused(lambda: dead_store.enqueue("ws", text), "action")
    refused(lambda: dead_store.enqueue("ws", "a", {"k": text}), "params")
    refused(lambda: dead_store.enqueue("ws", "a", {text: 1}), "params")
    refused(lambda: dead_store.enqueue("ws", "a", {"a": [1, {"b": ["x", text]}]}), "params")
    refused(lambda: dead_store.enqueue_many([("ws", "a", {"k": text})]), "params")
    refused(lambda: dead_store.update_status("j", "completed", workspace_id="ws", result=text),
            "result")
    refused(lambda: dead_store.update_status("j", "completed", workspace_id="ws",
                                             result={"k": {text: [1]}}), "result")


@pytest.mark.parametrize("value, where", [
    ({"k": float("inf")}, "['k']"),
    ({"k": [1, float("-inf")]}, "['k'][1]"),
    ({"k": {"n": float("nan")}}, "['k']['n']"),
    ({float("nan"): 1}, "key nan"),
    ({"k": {1, 2}}, "['k']"),
    ({"k": [b"bytes"]}, "['k'][0]"),
    ({"k": object()}, "['k']"),
    ({(1, 2): "tuple key"}, "key (1, 2)"),
])
def test_values_json_cannot_encode_are_invalid_argument_saying_where(dead_store, value, where):
    exc = refused(lambda: dead_store.enqueue("ws", "a", value), "params")
    assert where in str(exc), str(exc)
    exc = refused(lambda: dead_store.update_status("j", "completed", workspace_id="ws",
                                                   result=[value]), "result")
    assert "[0]" + where in str(exc) or where in str(exc), str(exc)


# -- redact -----------------------------------------------------------------------------------

CREDENTIAL_URLS = [
    # percent-encoded, as redis-py requires
    f"redis://alice:{ENC}@h:6379/0",
    f"redis://:{ENC}@h:6379/0",
    f"redis://alice:{ENC2}@h:6379/0",
    f"redis://h:6379/0?password={ENC}",
    f"redis://h:6379/0?username=alice&password={ENC}&db=1",
    f"redis://h:6379/0?db=0&pass%77ord={ENC}",
    f"redis://h:6379/0?PASSWORD={ENC}",
    f"redis://h:6379/0?password={quote_plus(SECRET2)}",
    f"rediss://alice:{ENC}@h:6380/0?ssl_cert_reqs=none",
    f"rediss://h:6380/0?ssl_password={ENC}",
    f"unix://:{ENC}@/tmp/redis.sock?db=0",
    f"unix://alice:{ENC}@/tmp/redis.sock",
    f"unix:///tmp/redis.sock?db=0&password={ENC}",
    f"redis+cluster://alice:{ENC}@h1:7000,h2:7001",
    f"redis+cluster://alice:{ENC}@h1:7000,alice:{ENC}@h2:7001",
    f"redis+cluster://h1:7000,h2:7001?password={ENC}",
    f"redis+sentinel://alice:{ENC}@h1:26379,h2:26379/mymaster/0",
    f"redis+sentinel://alice:{ENC}@h1:26379,alice:{ENC}@h2:26379/mymaster",
    f"redis+sentinel://h1:26379/mymaster?password={ENC}",
    f"redis+sentinel://h1:26379/mymaster?sentinel_password={ENC}",
    f"redis+sentinel://alice:{ENC}@h1:26379/mymaster?sentinel_password={ENC2}&db=1",
    f"REDIS://alice:{ENC}@h:6379/0",
    f"http://alice:{ENC}@h/",
    # raw reserved characters (invalid, but must not leak either)
    f"redis://alice:{SECRET}@h:6379/0",
    f"redis://:{SECRET}@h:6379/0",
    f"redis://alice:{SECRET2}@h:6379/0",
    f"redis://{SECRET}@h:6379/0",
    f"redis://h:6379/0?password={SECRET}",
    f"redis://h:6379/0?password={SECRET2}&db=0",
    f"rediss://alice:{SECRET}@h:6380/0?ssl_cert_reqs=none",
    f"unix://:{SECRET}@/tmp/redis.sock",
    f"unix:///tmp/redis.sock?password={SECRET}",
    f"redis+cluster://alice:{SECRET}@h1:7000,h2:7001",
    f"redis+cluster://alice:{SECRET}@h1:7000,alice:{SECRET}@h2:7001",
    f"redis+cluster://alice:{SECRET2}@h1:7000,alice:{SECRET2}@h2:7001",
    f"redis+sentinel://alice:{SECRET}@h1:26379,h2:26379/mymaster",
    f"redis+sentinel://alice:{SECRET2}@h1:26379,alice:{SECRET2}@h2:26379/mymaster",
    f"redis+sentinel://h1:26379/mymaster?sentinel_password={SECRET2}",
    f"alice:{ENC}@h:6379",
    f"alice:{SECRET}@h:6379",
]


def test_redact_hides_every_credential_form():
    problems = []
    for url in CREDENTIAL_URLS:
        shown = redact(url)
        if leaks(shown) or "***" not in shown:
            problems.append(f"{url} -> {shown}")
        if redact(shown) != shown:
            problems.append(f"redact is not idempotent on {url}: {shown} -> {redact(shown)}")
    assert not problems, "\n".join(problems)


REDACTED = [
    (f"redis://alice:{ENC}@h:6379/0", "redis://alice:***@h:6379/0"),
    (f"redis://:{ENC}@h:6379/0", "redis://:***@h:6379/0"),
    (f"redis://h:6379/0?username=alice&password={ENC}&db=1",
     "redis://h:6379/0?username=alice&password=***"),
    ("redis://h:6379/0?username=alice", "redis://h:6379/0?username=alice"),
    (f"rediss://alice:{ENC}@h:6380/0?ssl_cert_reqs=none", "rediss://alice:***@h:6380/0?ssl_cert_reqs=none"),
    (f"unix://:{ENC}@/tmp/redis.sock?db=0", "unix://:***@/tmp/redis.sock?db=0"),
    (f"unix:///tmp/redis.sock?db=0&password={ENC}", "unix:///tmp/redis.sock?db=0&password=***"),
    ("unix:///tmp/redis@6379.sock", "unix:///tmp/redis@6379.sock"),
    (f"redis+cluster://alice:{ENC}@h1:7000,h2:7001", "redis+cluster://alice:***@h1:7000,h2:7001"),
    (f"redis+cluster://alice:{ENC}@h1:7000,alice:{ENC}@h2:7001",
     "redis+cluster://alice:***@h1:7000,alice:***@h2:7001"),
    (f"redis+sentinel://alice:{ENC}@h1:26379,h2:26379/mymaster/1",
     "redis+sentinel://alice:***@h1:26379,h2:26379/mymaster/1"),
    (f"redis+sentinel://h1:26379/mymaster?db=1&sentinel_password={ENC}",
     "redis+sentinel://h1:26379/mymaster?db=1&sentinel_password=***"),
    (f"redis://alice:{SECRET}@h:6379/0", "redis://alice:***@h:6379/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("memory://team", "memory://team"),
]


def test_redact_keeps_what_is_not_secret():
    wrong = [(url, redact(url), shown) for url, shown in REDACTED if redact(url) != shown]
    assert not wrong, "\n".join(f"{url} -> {got}, not {shown}" for url, got, shown in wrong)


# -- connect: malformed URLs -----------------------------------------------------------------

MALFORMED_URLS = [
    f"redis://alice:{SECRET}@127.0.0.1:1/0",
    f"redis://:{SECRET}@127.0.0.1:1/0",
    f"redis://alice:{SECRET2}@127.0.0.1:1/0",
    "redis://alice:Alpha7/1234@127.0.0.1:1/0",            # would parse as port 'Alpha7'
    "redis://alice:1234/Alpha7Bravo8@127.0.0.1:1/0",       # would parse as host alice, port 1234
    f"rediss://alice:{SECRET}@127.0.0.1:1/0",
    f"redis://127.0.0.1:1/0?password={SECRET}",
    f"redis://127.0.0.1:1/0?password={SECRET2}",            # its '&' makes 'Julie6' a parameter
    f"redis://alice:{ENC}@127.0.0.1:notaport/0",
    f"redis://alice:{ENC}@127.0.0.1:1/0?db=notanumber",
    f"redis://127.0.0.1:1/0?socket_timeout=soon&password={ENC}",
    f"redis://alice:{ENC}@127.0.0.1:1/0?no_such_option=1",
    f"redis://alice:50%zz{ENC}@127.0.0.1:1/0",             # a '%' that is not an escape
    f"unix://:{SECRET}@/tmp/nonexistent-jobstore.sock",
    f"http://alice:{SECRET}@127.0.0.1:1/0",
    f"redis://alice:{ENC}@127.0.0.1:1/zero",                # a path that is not a db number
    f"redis://alice:{ENC}@127.0.0.1:1/0/1",
    f"redis+cluster://alice:{SECRET}@127.0.0.1:1,127.0.0.1:2",
    f"redis+cluster://alice:{SECRET2}@127.0.0.1:1,alice:{SECRET2}@127.0.0.1:2",
    f"redis+cluster://alice:{ENC}@127.0.0.1:1,bob:{ENC2}@127.0.0.1:2",
    f"redis+cluster://alice:{ENC}@127.0.0.1",
    f"redis+sentinel://alice:{SECRET}@127.0.0.1:1,127.0.0.1:2/mymaster",
    f"redis+sentinel://alice:{ENC}@127.0.0.1:1,bob:{ENC2}@127.0.0.1:2/mymaster",
    f"redis+sentinel://alice:{ENC}@127.0.0.1:1/",                # no service name
    f"redis+sentinel://alice:{ENC}@127.0.0.1/mymaster",          # no port
    f"redis+sentinel://alice:{ENC}@127.0.0.1:1/mymaster/zero",
    f"redis+sentinel://alice:{ENC}@127.0.0.1:1/mymaster?no_such_option=1",
    f"redis+sentinel://127.0.0.1:1/mymaster?sentinel_password={SECRET2}",
]


def test_malformed_urls_are_config_errors_that_never_echo_the_secret():
    problems = []
    for url in MALFORMED_URLS:
        try:
            connect(url, {"socket_connect_timeout": 0.2})
        except ConfigError as exc:
            text = exception_text(exc)
            if leaks(text) or "1234" in text:
                problems.append(f"{redact(url)}: {text}")
        except Exception as exc:  # noqa: BLE001 - reported below
            problems.append(f"{redact(url)}: {type(exc).__name__} (not ConfigError): {exception_text(exc)}")
        else:
            problems.append(f"{redact(url)}: accepted")
    assert not problems, "\n".join(problems)


def test_urls_are_parsed_by_jobstore_alike_with_every_redis_py():
    """Scheme case, one percent-decoding of userinfo and query values, the path as db: what
    docs/api.md promises, whatever the installed redis-py's from_url would do (8.2 takes
    REDIS://, older ones refuse it; 5.3 to 8.1 decode ?password= twice)."""
    for scheme, connection in (("REDIS", "Connection"), ("Rediss", "SSLConnection"),
                               ("UNIX", "UnixDomainSocketConnection")):
        where = "/tmp/r.sock" if scheme == "UNIX" else "127.0.0.1:1/0"
        client = connect(f"{scheme}://alice:{ENC}@{where}")
        pool = client.connection_pool
        assert pool.connection_class.__name__ == connection
        assert pool.connection_kwargs["password"] == SECRET
        assert pool.connection_kwargs["username"] == "alice"
    # "%2525" is an encoded "%25": decoded once it stays "%25".
    kwargs = connect("redis://h:1/3?password=a%2525b&username=x%2By&socket_timeout=1.5"
                     ).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["username"], kwargs["db"]) == ("a%25b", "x+y", 3)
    assert kwargs["socket_timeout"] == 1.5
    kwargs = connect(f"redis://bob:{ENC2}@h:1/3?password=other&db=5").connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("bob", SECRET2, 5)


def test_raw_reserved_characters_are_refused_with_how_to_fix_it():
    for url in (f"redis://alice:{SECRET}@127.0.0.1:1/0", f"redis://alice:{SECRET2}@127.0.0.1:1/0",
                f"redis+cluster://alice:{SECRET}@127.0.0.1:1",
                f"redis+sentinel://alice:{SECRET}@127.0.0.1:1/mymaster"):
        with pytest.raises(ConfigError) as info:
            connect(url)
        assert "percent-encode" in str(info.value) and "alice:***@" in str(info.value)
        assert not leaks(exception_text(info.value))


# -- real servers: ACL users, percent-encoded passwords --------------------------------------


def add_alice(client) -> None:
    client.execute_command("ACL", "SETUSER", "alice", "on", ">" + SECRET, ">" + SECRET2,
                           "~*", "&*", "+@all")


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory):
    """A server whose default user is off, so every connection authenticates as alice."""
    need_redis_server()
    sock = str(tmp_path_factory.mktemp("sock") / "redis.sock")
    server = RedisServer(args=["--unixsocket", sock, "--unixsocketperm", "700"]).start()
    try:
        client = server.client()
        add_alice(client)
        client.execute_command("ACL", "SETUSER", "default", "off")
        server.socket = sock
        yield server
    finally:  # a setup that fails leaves no server running
        server.stop()


def work(store) -> None:
    job = store.enqueue("acme", "summarise", {"doc": 1})
    assert store.get(job.job_id, workspace_id="acme") == job
    claimed = store.dequeue(timeout=0)
    assert claimed.job_id == job.job_id
    store.update_status(job.job_id, "completed", workspace_id="acme", result={"ok": True})
    assert store.client.acl_whoami() == "alice"


def test_acl_user_with_a_percent_encoded_password_enqueues_and_gets(acl_server):
    port, sock = acl_server.port, acl_server.socket
    urls = [
        f"redis://alice:{ENC}@127.0.0.1:{port}/0",
        f"redis://alice:{ENC2}@127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/0?username=alice&password={ENC}",
        f"redis://alice@127.0.0.1:{port}/0?password={ENC2}",
        f"unix://alice:{ENC}@{sock}?db=0",
        f"unix://{sock}?db=0&username=alice&password={ENC}",
        f"REDIS://alice:{ENC}@127.0.0.1:{port}/0",                  # schemes are case-insensitive
        f"Unix://{sock}?db=0&username=alice&password={ENC2}",
    ]
    for url in urls:
        with jobstore.open(url, "legacy") as store:
            assert not leaks(repr(store)) and not leaks(store.url), repr(store)
            work(store)


def test_wrong_password_is_refused_without_the_secret(acl_server):
    port = acl_server.port
    for url in (f"redis://alice:{ENC_WRONG}@127.0.0.1:{port}/0",
                f"redis://127.0.0.1:{port}/0?username=alice&password={ENC_WRONG}"):
        store = jobstore.open(url, "legacy")
        assert not leaks(repr(store)), repr(store)
        with pytest.raises(jobstore.AuthenticationFailed) as info:
            store.enqueue("acme", "a")
        assert not leaks(exception_text(info.value)), exception_text(info.value)
        store.close()


@pytest.fixture(scope="module")
def acl_cluster():
    """A one-node Redis Cluster (every slot on one node) with the ACL user alice."""
    need_redis_server()
    server = RedisServer(args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
                         need_bus=True).start()
    try:
        client = server.client()
        add_alice(client)
        add_all_slots(client)
        wait_cluster_ok(client)
        client.execute_command("ACL", "SETUSER", "default", "off")
        yield server
    finally:  # a setup that fails leaves no server running
        server.stop()


def test_cluster_seeds_with_credentials_on_each(acl_cluster):
    port, dead = acl_cluster.port, free_port()
    urls = [
        f"redis+cluster://alice:{ENC}@127.0.0.1:{dead},alice:{ENC}@127.0.0.1:{port}",
        f"redis+cluster://alice:{ENC2}@127.0.0.1:{port},127.0.0.1:{dead}",
        f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{port}?username=alice&password={ENC}",
    ]
    for url in urls:
        with jobstore.open(url, "workspace", client_options={"socket_connect_timeout": 0.5}) as store:
            assert not leaks(repr(store)), repr(store)
            work(store)
    with pytest.raises((StoreUnavailable, ConfigError)) as info:
        jobstore.open(f"redis+cluster://alice:{ENC_WRONG}@127.0.0.1:{port},"
                      f"alice:{ENC_WRONG}@127.0.0.1:{dead}", "workspace")
    assert not leaks(exception_text(info.value)), exception_text(info.value)


# -- the command line --------------------------------------------------------------------------


def test_cli_never_prints_the_secret(acl_server):
    port, dead = acl_server.port, free_port()
    cases = [
        # wrong password, on a real server: a configuration error (AuthenticationFailed)
        (f"redis://alice:{ENC_WRONG}@127.0.0.1:{port}/0", (2,)),
        (f"redis://127.0.0.1:{port}/0?username=alice&password={ENC_WRONG}", (2,)),
        # nothing listening
        (f"redis://alice:{ENC}@127.0.0.1:{dead}/0", (3,)),
        (f"redis://127.0.0.1:{dead}/0?password={ENC}", (3,)),
        (f"unix:///tmp/nonexistent-jobstore.sock?password={ENC}", (3,)),
        (f"redis+cluster://alice:{ENC}@127.0.0.1:{dead},alice:{ENC}@127.0.0.1:{dead}", (3,)),
        (f"redis+sentinel://alice:{ENC}@127.0.0.1:{dead}/mymaster?sentinel_password={ENC2}", (3,)),
        # malformed: raw reserved characters
        (f"redis://alice:{SECRET}@127.0.0.1:{dead}/0", (2,)),
        (f"redis+sentinel://alice:{SECRET}@127.0.0.1:{dead}/mymaster", (2,)),
        (f"redis://127.0.0.1:{dead}/0?password={SECRET2}", (2,)),
    ]
    environ = {k: v for k, v in os.environ.items() if k != "JOBSTORE_REDIS_URL"}
    problems = []
    for url, codes in cases:
        out = subprocess.run(
            [sys.executable, "-m", "jobstore.cli", "migrate", "status", "--url", url],
            capture_output=True, text=True, env=environ, timeout=120)
        printed = out.stdout + out.stderr
        if leaks(printed) or out.returncode not in codes or "Traceback" in printed:
            problems.append(f"{redact(url)}: exit {out.returncode}: {printed}")
    assert not problems, "\n".join(problems)
