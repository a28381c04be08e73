"""Every store option, declared once: its name, its environment variable, its default, what it
may be, a one-line description and the ``jobstore`` command's flag for it.

``JobStore(...)`` checks its options here (:func:`check`), ``JobStore.from_env`` reads the
variables named here (:func:`from_environ`), the command line builds its shared options from
here (``jobstore.cli.common``), and docs/reference/configuration.md is generated from
:data:`OPTIONS` (a test fails when the page and the table disagree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import validation
from .codec import JSON, TIME_FORMATS, Codec, check_codec
from .errors import ConfigError, InvalidArgument
from .schema import glob_regex

if TYPE_CHECKING:
    from .layout import StoreKeys
    from .strategy import Strategy

# How a variable spells on and off (any case; an empty variable counts as unset).
BOOL_VALUES = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}
# The migrated system's switch, read when JOBSTORE_STRATEGY is unset: its value -> the strategy.
LEGACY_FLAG = "AI_JOBS_NEW_SCHEMA"
LEGACY_FLAG_VALUES = {"on": "dual", "off": "legacy"}
MAX_LEASE = 10 ** 9  # seconds
MAX_TTL = 10 ** 9  # seconds: retention (finished_ttl, dead_letter_ttl, ttl=)


@dataclass(frozen=True)
class Rule:
    """What an option's value may be: ``must`` completes "<name> must be ..." in the error (and
    says it in the reference), ``ok`` tells a good value, ``parse`` reads a variable's text
    (a ValueError: "<VAR>='...' " + ``unparsed``)."""

    must: str
    ok: Callable[[Any], bool]
    parse: Callable[[str], Any] = str
    unparsed: str = ""


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole(minimum: int, must: str = "") -> Rule:
    """An int (not a bool) of at least ``minimum``."""
    return Rule(must or f"an int >= {minimum}", lambda v: _int(v) and v >= minimum, int,
                "is not a number")


def seconds(maximum: float = math.inf, shown: str = "") -> Rule:
    """A number of seconds above 0 (not a bool, not NaN), at most ``maximum`` (``shown``)."""
    at_most = f" (at most {shown})" if shown else ""
    return Rule(f"a number of seconds > 0{at_most}", lambda v: _number(v) and 0 < v <= maximum,
                float, "is not a number")


def _parse_bool(text: str) -> bool:
    if text.lower() not in BOOL_VALUES:
        raise ValueError(text)
    return BOOL_VALUES[text.lower()]


def flag(on: str) -> Rule:
    """True or False; a variable says 1, true, yes or on (``on``: what that does) or 0, false,
    no or off."""
    return Rule("True or False", lambda v: isinstance(v, bool), _parse_bool,
                f"is not allowed; use 1, true, yes or on ({on}), or 0, false, no or off")


def one_of(*values: str) -> Rule:
    return Rule(" or ".join(repr(v) for v in values), lambda v: v in values)


def _key_name(value: Any) -> bool:
    return (isinstance(value, str) and bool(value)
            and not any(c.isspace() or not c.isprintable() for c in value))


ANY = Rule("", lambda v: True)  # checked where it is used (the codec, the events, the client)
TEXT = Rule("a str", lambda v: isinstance(v, str))
# The prefixes' rule, as jobstore.validation checks it (with its own messages).
PREFIX = Rule("segments of A-Z a-z 0-9 _ . - separated by ':'",
              lambda v: isinstance(v, str) and bool(validation.PREFIX.fullmatch(v)))


@dataclass(frozen=True)
class Option:
    """One option of ``jobstore.open`` / ``JobStore`` / ``JobStore.from_env``.

    ``name``: the keyword argument (``url`` and ``strategy`` are ``open``'s positional ones;
    ``metrics`` is ``from_env``'s alone). ``env``: the variable ``from_env`` reads, if any.
    ``default``: what an omitted option is (:data:`REQUIRED` for the URL). ``none``: None is
    allowed too (and means ``default_doc``). ``cli``: the flag of the ``jobstore`` commands that
    take it; ``cli_env``: whether the flag reads ``env`` too. ``dual``: a ``dual`` strategy
    option, read from the environment only for ``dual``. ``notes``: more, for the reference.
    """

    name: str
    env: str | None
    default: Any
    rule: Rule
    doc: str
    cli: str | None = None
    cli_env: bool = True
    none: bool = False
    default_doc: str = ""
    dual: bool = False
    notes: str = ""

    def check(self, value: Any, error: type[Exception] = ConfigError, name: str = "") -> Any:
        """``value`` if the rule allows it, else ``error`` ("<name> must be ..., not ...");
        ``name``: the argument's, when it is not the option's own (``extend(seconds=)``)."""
        if (value is None and self.none) or self.rule.ok(value):
            return value
        name = name or self.name
        message = f"must be {self.rule.must}, not {value!r}"
        if error is InvalidArgument:
            raise InvalidArgument(name, message)
        raise error(f"{name} {message}")

    def read(self, text: str) -> Any:
        """A variable's (stripped, non-empty) text as the option's value."""
        try:
            return self.rule.parse(text)
        except ValueError:
            raise ConfigError(f"{self.env}={text!r} {self.rule.unparsed}") from None


class _Required:
    def __repr__(self) -> str:
        return "(required)"


REQUIRED: Any = _Required()

OPTIONS: dict[str, Option] = {option.name: option for option in (
    Option("url", "JOBSTORE_REDIS_URL", REQUIRED, TEXT,
           "Redis URL: redis://, rediss://, unix://, redis+cluster:// or memory:// (embedded).",
           cli="--url", default_doc="(required)",
           notes="`open`'s first argument. A password in it is shown as `***` in every message."),
    Option("strategy", "JOBSTORE_STRATEGY", "legacy", TEXT,
           "The strategy: a registered name (jobstore strategies lists them).",
           notes="`open`'s second argument. Unset, `from_env` falls back to `AI_JOBS_NEW_SCHEMA` "
                 "(`on`: `dual`, `off`: `legacy`; any other value is a `ConfigError`), then "
                 "to `legacy`."),
    Option("prefix", "JOBSTORE_KEY_PREFIX", "ai", PREFIX,
           "Key prefix: the first part of every record key.", cli="--prefix",
           notes="E.g. `svc:ai`."),
    Option("own_prefix", "JOBSTORE_OWN_PREFIX", None, PREFIX,
           "Prefix of jobstore's own keys (queue, indexes, migration state) when the stores "
           "name it apart.", cli="--own-prefix", none=True, default_doc="the key prefix",
           notes="Another value than `prefix` must sit apart from it (`jobstore` "
                 "beside `ai`, not `ai:own`). Every process and command of a deployment names "
                 "the same one ([adopting.md](../adopting.md#when-the-old-system-uses-jobstores-key-names))."),
    Option("source", "JOBSTORE_DUAL_SOURCE", "legacy", TEXT,
           "dual's source schema, the one migrated from.", cli="--source", dual=True),
    Option("target", "JOBSTORE_DUAL_TARGET", "workspace", TEXT,
           "dual's target schema, the one migrated to.", cli="--target", dual=True,
           notes="Must differ from `source`."),
    Option("max_record_bytes", None, validation.DEFAULT_MAX_RECORD_BYTES,
           whole(1, "a positive int"),
           "Largest encoded record enqueue writes and update_status may leave behind.",
           notes="A bigger one raises `PayloadTooLarge` ([errors](../api.md#errors)), nothing "
                 "sent."),
    Option("allow_eviction", "JOBSTORE_ALLOW_EVICTION", False,
           flag("run on a Redis that may evict keys"),
           "Run on a Redis whose maxmemory-policy is not noeviction (jobs may then be lost); "
           "without it such a Redis is refused.",
           cli="--allow-eviction", cli_env=False,
           notes="`EvictionPolicyError` at the first operation (the command line exits 2)."),
    Option("wait_replicas", None, 0, whole(0),
           "Replicas every write waits for (WAIT, in the same round trip); 0: none.",
           notes="Fewer within `wait_timeout`: `NotReplicated`, the write applied. Not on Redis "
                 "Cluster."),
    Option("wait_timeout", None, 1.0, seconds(), "Seconds a write waits for its replicas."),
    Option("lease", "JOBSTORE_LEASE", 3600.0, seconds(MAX_LEASE, "1e9"),
           "Seconds a dequeued job stays its worker's without an extend.",
           notes="After that the next `dequeue` hands it out again."),
    Option("max_attempts", "JOBSTORE_MAX_ATTEMPTS", 3, whole(1),
           "Hand-outs a job gets; when the lease of the last one runs out, the job fails."),
    Option("finished_ttl", "JOBSTORE_FINISHED_TTL", None, seconds(MAX_TTL, "1e9"),
           "Seconds a finished job (completed, failed, cancelled) is kept; then its records "
           "expire.", cli="--finished-ttl", none=True,
           default_doc="never: kept until deleted",
           notes="Set on every copy with the final move, by Redis's clock; `enqueue(..., ttl=)`, "
                 "`update_status(..., ttl=)` and `finish(..., ttl=)` choose per job. "
                 "`jobstore sweep --finished-ttl` gives it to jobs that finished without one "
                 "([retention.md](../retention.md))."),
    Option("dead_letter_ttl", "JOBSTORE_DEAD_LETTER_TTL", None, seconds(MAX_TTL, "1e9"),
           "Seconds a dead letter is kept: jobstore sweep drops older ones.",
           cli="--dead-letter-ttl", none=True, default_doc="kept (the newest 10,000)",
           notes="Older letters go when `jobstore sweep` (or `store.sweep()`) runs; the list "
                 "keeps its newest 10,000 either way ([retention.md](../retention.md))."),
    Option("time_format", "JOBSTORE_TIME_FORMAT", None, one_of(*TIME_FORMATS),
           "How new records store their times: epoch seconds or ISO 8601 (UTC).", none=True,
           default_doc="the codec's, else `epoch`",
           notes="Either form is read; an update keeps a record's own form."),
    Option("legacy_queue", "JOBSTORE_LEGACY_QUEUE", None, Rule("a Redis key name", _key_name),
           "The replaced system's queue (a list of bare job ids), shared until the fleet leaves it.",
           cli="--legacy-queue", none=True, default_doc="none",
           notes="Standalone Redis only ([adopting.md](../adopting.md))."),
    Option("codec", None, None, ANY,
           "How params and result are stored (a jobstore.Codec).", none=True,
           default_doc="the schemas' codec, else JSON"),
    Option("events", None, None, ANY,
           "What the store reports operations, dual writes and shadow reads to.", none=True,
           default_doc="`jobstore.events.Events()`",
           notes="`jobstore.metrics.PrometheusEvents(prefix)` turns them into Prometheus metrics "
                 "([metrics.md](../metrics.md)); the default records nothing but the last 50 "
                 "shadow mismatches."),
    Option("metrics", "JOBSTORE_METRICS", False, flag("Prometheus metrics"),
           "from_env only: events= a PrometheusEvents for the prefix (Prometheus metrics).",
           notes="In prometheus-client's default registry ([metrics.md](../metrics.md)). An "
                 "explicit `events=` wins."),
    Option("client_options", None, None, ANY,
           "Keyword arguments for the redis-py client (open only).", none=True,
           default_doc="none",
           notes="Merged over jobstore's [client defaults](../api.md#client-defaults); a keyword "
                 "the client does not take raises `ConfigError` from `open`. Not allowed with "
                 "`memory://`."),
)}



@dataclass(frozen=True)
class ProcessOption:
    """A setting of the whole process, not of a store: an environment variable read where it is
    used (``reader``), when it is needed; no store option and no flag sets it. ``unset``: what
    leaving it unset means; ``values``: what it may say and does."""

    name: str
    env: str
    unset: str
    values: str
    reader: str


PROCESS: dict[str, ProcessOption] = {option.name: option for option in (
    ProcessOption("load_plugins", "JOBSTORE_LOAD_PLUGINS", "every `jobstore` entry point loads",
                  "A comma-separated list of **entry-point names** (`hashtag`, not the "
                  "distribution name `jobstore-hashtag`): only those load; a name no installed "
                  "distribution provides raises `PluginError`. Empty: none loads. The built-ins "
                  "always load.", "jobstore.plugins, when the plugins are first loaded"),
    ProcessOption("schema_check", "JOBSTORE_SCHEMA_CHECK", "computed schemas' keys are asked "
                  "of a second interpreter",
                  "`local`: no second interpreter is asked ([the checks](../plugins.md#the-checks-"
                  "every-schema-passes); the conformance kit always asks). Anything else: as "
                  "unset.", "jobstore.determinism, each time the plugins are loaded"),
    ProcessOption("trace_plugins", "JOBSTORE_TRACE_PLUGINS", "nothing is traced",
                  "Any value but empty, `0`, `false` or `no` (any case): each hook "
                  "implementation jobstore calls, and its plugin, is printed to standard error "
                  "(`jobstore: jobstore_register_schemas of jobstore.builtins.legacy`).",
                  "jobstore.plugins, when the plugins are first loaded"),
)}


def process_env(name: str) -> str:
    """The environment variable of process option ``name``."""
    return PROCESS[name].env


# The options JobStore.__init__ checks with their rule (in this order); prefix and own_prefix
# have validation's own checks, the rest are checked where they are used.
CHECKED = ("lease", "max_attempts", "time_format", "max_record_bytes", "wait_replicas", "wait_timeout",
           "allow_eviction", "legacy_queue", "finished_ttl", "dead_letter_ttl")


def default(name: str) -> Any:
    return OPTIONS[name].default


def env(name: str) -> str:
    """The environment variable of option ``name``."""
    variable = OPTIONS[name].env
    assert variable is not None, name
    return variable


def check(**values: Any) -> str:
    """Check JobStore's options (``values``: name -> value), before anything else is done;
    ConfigError naming the first bad one. Returns the own prefix (the key prefix for None).
    The prefixes' checks are jobstore.validation's."""
    validation.prefix(values["prefix"])
    own_prefix = validation.own_prefix(values["own_prefix"], values["prefix"])
    for name in CHECKED:
        OPTIONS[name].check(values[name])
    return own_prefix


def lease_ms(name: str, value: Any, error: type[Exception]) -> int:
    """A lease in whole milliseconds, at least 1; ``error`` (naming ``name``) for a bad value."""
    OPTIONS["lease"].check(value, error, name)
    return max(1, round(float(value) * 1000))


def ttl_ms(name: str, value: Any, error: type[Exception] = InvalidArgument) -> int | None:
    """A retention in whole milliseconds, at least 1 (None stays None: not given); ``error``
    (naming ``name``) for a bad value."""
    if value is None:
        return None
    OPTIONS["finished_ttl"].check(value, error, name)
    return max(1, round(float(value) * 1000))


def from_environ(environ: Mapping[str, str],
                 options: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(url, strategy, options)`` for ``jobstore.open``, from the variables of :data:`OPTIONS`
    in ``environ``; ``options`` (given explicitly) win. An empty variable counts as unset.

    :raises ConfigError: no URL, or a variable whose value is not allowed (naming it).
    """
    def text(name: str) -> str:
        return (environ.get(env(name)) or "").strip()

    url = text("url")
    if not url:
        raise ConfigError(f"{env('url')} is not set; set it to a URL such as "
                          "redis://localhost:6379/0")
    strategy = text("strategy")
    if not strategy:
        legacy = environ.get(LEGACY_FLAG) or ""  # case matters: ON is refused
        if legacy and legacy not in LEGACY_FLAG_VALUES:
            raise ConfigError(f"{LEGACY_FLAG}={legacy!r} is not allowed; use 'on' (dual) or "
                              f"'off' (legacy), or set {env('strategy')}")
        strategy = LEGACY_FLAG_VALUES.get(legacy, "legacy")
    options = dict(options)
    options.setdefault("prefix", text("prefix") or default("prefix"))
    for option in OPTIONS.values():
        if (option.env is None or option.name in ("url", "strategy", "prefix")
                or (option.dual and strategy != "dual")):
            continue
        given = "events" if option.name == "metrics" else option.name
        value = text(option.name)
        if value and given not in options:
            options[option.name] = option.read(value)
    if options.pop("metrics", False):
        from .metrics import PrometheusEvents

        options["events"] = PrometheusEvents(options["prefix"])
    return url, strategy, options


def check_placement(name: str, strategy: Strategy, keys: StoreKeys, prefix: str, *,
                    legacy_queue: str | None, wait_replicas: int, cluster: bool) -> None:
    """The checks that need the store's strategy (``name``), its own keys and whether it runs
    on Redis Cluster: the strategy routes somewhere, ``legacy_queue`` and ``wait_replicas``
    fit; ConfigError naming what does not."""
    routing = strategy.routing(None)
    # routing(None) serves dequeue, which writes nothing new: it must read, and only known schemas.
    if not routing.reads or not set(routing.reads + routing.writes) <= set(routing.known):
        raise ConfigError(f"strategy {name!r} routes nowhere: routing(None) must read "
                          "schemas it knows")
    if legacy_queue is not None:
        known = strategy.routing(None).known
        own_prefix = keys.prefix
        if keys.holds(legacy_queue):
            raise ConfigError(
                f"legacy_queue {legacy_queue!r} lies among jobstore's own keys (queue, "
                f"indexes, leases, ... under {own_prefix + ':'!r}); "
                + ("keep the record prefix and name jobstore's own keys apart: "
                   f"own_prefix='jobstore' ({env('own_prefix')}, jobstore --own-prefix)"
                   if own_prefix == prefix else "choose another own_prefix")
                + ", docs/adopting.md")
        for schema in known:
            if schema.parse_key(legacy_queue) is not None or glob_regex(
                    schema.scan_pattern()).fullmatch(legacy_queue):
                raise ConfigError(
                    f"legacy_queue {legacy_queue!r} is a record key of schema "
                    f"{schema.name!r}: the list would be taken for a job's record")
        if cluster:
            raise ConfigError(
                "legacy_queue is not supported on Redis Cluster: the compatible queue, "
                "jobstore's queue and the job records sit in different slots, and taking a "
                "bare job id and claiming its job must be one step (docs/adopting.md)")
        if not any(not schema.scoped and not schema.computed for schema in known):
            raise ConfigError(
                f"legacy_queue needs a schema keyed by the job id alone (legacy) among the "
                f"strategy's schemas, to find the job of a bare id; {strategy.name!r} has none")
    if wait_replicas and cluster:
        raise ConfigError("wait_replicas is not supported on Redis Cluster yet: an operation "
                          "there writes to several primaries, each with replicas of its own")


def codec_for(given: Any, strategy: Strategy) -> Codec:
    """The store's codec: ``given``, else the one the strategy's schemas declare, else JSON."""
    if given is not None:
        return check_codec(given, "codec")
    declared = {schema.name: schema.codec for schema in strategy.routing(None).known
                if schema.codec is not None}
    # The same codec class and name is the same encoding, whichever schema holds the instance.
    codecs = {(type(codec), getattr(codec, "name", "")): codec for codec in declared.values()}
    if len(codecs) > 1:
        named = ", ".join(f"{name!r}: {codec!r}" for name, codec in sorted(declared.items()))
        raise ConfigError(f"the schemas of strategy {strategy.name!r} declare different codecs "
                          f"({named}); a migration copies records as they are, so they must "
                          "agree: declare one codec, or give the store codec=")
    if codecs:
        name, codec = next(iter(declared.items()))
        return check_codec(codec, f"schema {name!r}'s codec")
    return JSON
