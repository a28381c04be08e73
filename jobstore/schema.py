"""Key schemas: where a job's record hash lives in Redis.

A schema is either one key format (``key_format``, the easy case) or three methods that compute
keys in Python (``job_key``, ``parse_key``, ``scan_pattern``). Every key jobstore touches for a
record is built by :meth:`KeySchema.job_key`, in Python. The dequeue script finds a record from
a queue entry: for a format it receives :attr:`KeySchema.lua_template`, the same format with the
prefix filled in; for a computed schema the queue entry carries the key itself (written by the
enqueue), or the store computes it and asks again. Either way no script invents a key.

Every schema is checked on generated ids when it is registered and when a store opens it
(:func:`check_schema`): a schema that cannot work is refused with a :class:`PluginError` naming
the method and a counter-example.
"""

from __future__ import annotations

import itertools
import re
import string
from typing import TYPE_CHECKING, Any, ClassVar
from collections.abc import Iterable

from .errors import PluginError
from .layout import RESERVED_NAMESPACES
from .validation import ID_CHARS, ID_CLASS, MAX_ID_LENGTH

if TYPE_CHECKING:
    from .codec import Codec

# In lua_template, these bytes stand for the ids. No identifier or prefix can contain them.
WORKSPACE_MARK = "\x01"
JOB_MARK = "\x02"
_ID = rf"([{ID_CLASS}]{{1,{MAX_ID_LENGTH}}})"
_ID_CHARS = set(ID_CHARS)


class KeySchema:
    """Subclass, set the three class attributes, register it from a plugin. That's all.

    ``key_format`` is a :class:`string.Template` using ``${prefix}``, ``${job_id}`` and
    optionally ``${workspace_id}``, e.g. ``"${prefix}:job:${workspace_id}:${job_id}"``. A format
    without ``${workspace_id}`` keys jobs by id alone (one id per store, like ``legacy``).

    A schema whose keys are computed (buckets, hashes, a tenant's region) leaves ``key_format``
    out and overrides :meth:`job_key`, :meth:`parse_key` and :meth:`scan_pattern` instead
    (docs/plugins.md). Overriding any of them makes the schema computed.

    :raises PluginError: from the constructor when the format is unusable (no job id, ids not
        separated, a glob character, or a key inside one of jobstore's own namespaces), or when
        a schema has neither a ``key_format`` nor the three methods.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    key_format: ClassVar[str | None] = None
    # How this schema's records store params and result (jobstore.codec.Codec); None: JSON, or
    # whatever the other schemas of the store declare.
    codec: ClassVar[Codec | None] = None

    def __init__(self, prefix: str = "ai"):
        self.prefix = prefix
        cls = type(self)
        overridden = [m for m in _COMPUTED if getattr(cls, m) is not getattr(KeySchema, m)]
        #: True when the schema computes its keys in Python (no ``lua_template``).
        self.computed = bool(overridden)
        fmt = cls.key_format
        if fmt is None:
            missing = [m for m in _COMPUTED if m not in overridden]
            if missing:
                raise PluginError(
                    f"schema {getattr(cls, 'name', cls.__name__)!r}: set key_format, or compute "
                    f"keys by overriding job_key, parse_key and scan_pattern (missing: "
                    f"{', '.join(missing)})")
            self.lua_template: str | None = None
            self._template: str | None = None
            self._scoped: bool | None = None
            return
        try:
            template = string.Template(fmt).substitute(
                prefix=prefix, workspace_id=WORKSPACE_MARK, job_id=JOB_MARK
            )
        except (KeyError, ValueError) as exc:
            raise PluginError(f"schema {self.name!r}: bad key_format {fmt!r} ({exc})") from None
        self._check(template)
        self._template = template
        # What the dequeue script substitutes the ids into; None for a computed schema.
        self.lua_template = None if self.computed else template
        self._scoped = WORKSPACE_MARK in template
        pattern = "".join(
            _ID if c in (WORKSPACE_MARK, JOB_MARK) else re.escape(c) for c in template
        )
        self._key_re = re.compile(pattern)
        self._groups = [c for c in template if c in (WORKSPACE_MARK, JOB_MARK)]

    def _check(self, template: str) -> None:
        problem = None
        if template.count(JOB_MARK) != 1 or template.count(WORKSPACE_MARK) > 1:
            problem = "needs ${job_id} exactly once and ${workspace_id} at most once"
        elif not template.startswith(self.prefix + ":"):
            problem = "must start with '${prefix}:'"
        elif any(c in template for c in "*?[]\\"):
            problem = "must not contain glob characters * ? [ ] \\"
        elif ("{" in template or "}" in template) and not re.fullmatch(r"[^{}]*\{[^{}]+\}[^{}]*", template):
            problem = "may hold one Redis Cluster hash tag '{...}' (not empty), and no other braces"
        else:
            # The first segment after the prefix must never spell one of jobstore's own
            # namespaces, whatever the ids: a literal word, or one with a non-id character.
            segment = template[len(self.prefix) + 1 :].split(":", 1)[0]
            literal = segment.replace(WORKSPACE_MARK, "").replace(JOB_MARK, "")
            if segment in RESERVED_NAMESPACES:
                problem = f"'{self.prefix}:{segment}:' is reserved by jobstore"
            elif literal != segment and set(literal) <= _ID_CHARS:
                problem = (
                    "must begin with a namespace of its own after the prefix "
                    "(e.g. '${prefix}:myjobs:...'), so no id can spell a jobstore key"
                )
            # Two ids side by side, or split only by id characters, could not be parsed back.
            marks = [i for i, c in enumerate(template) if c in (WORKSPACE_MARK, JOB_MARK)]
            if len(marks) == 2 and set(template[marks[0] + 1 : marks[1]]) <= _ID_CHARS:
                problem = "${workspace_id} and ${job_id} must be separated by a character such as ':'"
        if problem:
            raise PluginError(f"schema {self.name!r}: key_format {self.key_format!r} {problem}")

    @property
    def scoped(self) -> bool:
        """Whether a job's key depends on its workspace (else one job per id in the store)."""
        if self._scoped is None:
            parsed = self.parse_key(self.job_key("w", "j"))
            self._scoped = bool(parsed and parsed[0] is not None)
        return self._scoped

    @property
    def identity(self) -> str:
        """What makes two schema objects the same layout: the template, or the computing class."""
        if self.lua_template is not None:
            return self.lua_template
        cls = type(self)
        return f"computed:{cls.__module__}.{cls.__qualname__}:{self.prefix}"

    def job_key(self, workspace_id: str, job_id: str) -> str:
        """The key of one job's record hash. Both ids must already be validated."""
        return self._format().replace(WORKSPACE_MARK, workspace_id).replace(JOB_MARK, job_id)

    def scan_pattern(self) -> str:
        """A SCAN ``MATCH`` pattern covering every record key of this schema."""
        return self._format().replace(WORKSPACE_MARK, "*").replace(JOB_MARK, "*")

    def _format(self) -> str:
        # Only a schema with a key_format gets here: a computed one overrides the three methods
        # (the constructor refuses one that does not).
        assert self._template is not None, "a computed schema overrides job_key and scan_pattern"
        return self._template

    def parse_key(self, key: str) -> tuple[str | None, str] | None:
        """``(workspace_id or None, job_id)`` for a key of this schema, None for any other key."""
        match = self._key_re.fullmatch(key)
        if not match:
            return None
        ids = dict(zip(self._groups, match.groups()))
        return ids.get(WORKSPACE_MARK), ids[JOB_MARK]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.scan_pattern()!r}>"


_COMPUTED = ("job_key", "parse_key", "scan_pattern")

# -- the checks every schema passes at registration and at open --------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
# Every character of the id alphabet, both cases of one word, and every length class (1, short,
# a uuid's 32, long, the 128 maximum).
SAMPLE_WORKSPACES = ("w", "W", "Acme", "acme", "ACME", "0", "_", "-.", _ALPHABET,
                     "ws-" + "x" * 61, "Z" * 128)
SAMPLE_JOBS = ("j", "J", "Job1", "job1", "9", "_._", "0f8fad5bd9cb469fa16570867728950e",
               _ALPHABET[::-1], "y" * 127, "Q" * 128)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Redis's SCAN ``MATCH`` glob as a regex: ``*``, ``?``, ``[...]`` (``^`` negates, ranges),
    ``\\`` escapes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)


def _own_keys(prefix: str, workspace_id: str, job_id: str) -> list[str]:
    """Keys of jobstore's own namespaces, in the shapes they take (layout.StoreKeys)."""
    from .layout import StoreKeys

    keys = StoreKeys(prefix)
    return [keys.queue, keys.dead, keys.leases, keys.queue_mode, keys.index(workspace_id),
            keys.op(job_id, near=keys.queue), keys.op(job_id, near=keys.index(workspace_id)),
            keys.claim(job_id), keys.claimed(workspace_id, job_id, "1.5"),
            keys.tomb(f"{prefix}:x:{job_id}"), keys.gone(workspace_id, job_id), keys.migration(workspace_id, job_id),
            keys.migration_part(workspace_id, job_id, "log")]


def check_schema(schema: KeySchema, others: Iterable[KeySchema] = (), plugin: str = "") -> None:
    """Refuse a schema that cannot work, on generated ids: every key is a str that starts with
    the prefix, holds no control character and is the same on every call; ``parse_key`` is its
    inverse; ``scan_pattern`` matches it and no key of jobstore's own or of ``others``, whose
    patterns and ``parse_key`` take none of its keys either; keys of different jobs differ (and
    depend on the workspace exactly when ``parse_key`` gives one back).

    Whether the keys are the same in another process is :mod:`jobstore.determinism`'s check.

    :raises PluginError: naming the schema (and ``plugin``), the method and a counter-example.
    """
    name = getattr(schema, "name", type(schema).__name__)
    who = f"schema {name!r}" + (f" (plugin {plugin!r})" if plugin else "")

    def refuse(method: str, problem: str, workspace_id: str = "", job_id: str = "",
               key: Any = None) -> None:
        example = ""
        if workspace_id or job_id:
            example = f"; counter-example: workspace_id={workspace_id!r}, job_id={job_id!r}"
            if key is not None:
                example += f" -> {key!r}"
        raise PluginError(f"{who}: {method}: {problem}{example}")

    try:
        pattern = schema.scan_pattern()
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported as such
        refuse("scan_pattern", f"raised {exc!r}")
    if not isinstance(pattern, str) or not pattern.startswith(schema.prefix + ":"):
        refuse("scan_pattern", f"must return a glob starting with {schema.prefix + ':'!r}, "
                               f"not {pattern!r}")
    matches = glob_regex(pattern).fullmatch
    scoped = schema.scoped
    seen: dict[str, tuple[str, str]] = {}
    for workspace_id, job_id in itertools.product(SAMPLE_WORKSPACES, SAMPLE_JOBS):
        try:
            key = schema.job_key(workspace_id, job_id)
            again = schema.job_key(workspace_id, job_id)
        except Exception as exc:  # noqa: BLE001
            refuse("job_key", f"raised {exc!r}", workspace_id, job_id)
        if not isinstance(key, str) or not key.startswith(schema.prefix + ":"):
            refuse("job_key", f"must return a str starting with {schema.prefix + ':'!r}",
                   workspace_id, job_id, key)
        if again != key:
            refuse("job_key", f"gives a different key on a second call ({again!r})",
                   workspace_id, job_id, key)
        if any(ord(c) < 32 or ord(c) == 127 for c in key):
            refuse("job_key", "the key holds a control character", workspace_id, job_id, key)
        try:
            parsed = schema.parse_key(key)
        except Exception as exc:  # noqa: BLE001
            refuse("parse_key", f"raised {exc!r}", workspace_id, job_id, key)
        wanted = (workspace_id if scoped else None, job_id)
        if parsed != wanted:
            refuse("parse_key", f"is not job_key's inverse: it gives {parsed!r}, not {wanted!r}",
                   workspace_id, job_id, key)
        if not matches(key):
            refuse("scan_pattern", f"{pattern!r} does not match the key", workspace_id, job_id,
                   key)
        alone = schema.job_key(SAMPLE_WORKSPACES[0], job_id)
        if not scoped and key != alone:
            refuse("job_key", f"depends on the workspace, but parse_key gives none back (a schema "
                              f"keyed by the job id alone): workspace_id={SAMPLE_WORKSPACES[0]!r} "
                              f"gives {alone!r}; leave the workspace out of the key, or return it "
                              "from parse_key", workspace_id, job_id, key)
        job = (workspace_id if scoped else "", job_id)
        if seen.setdefault(key, job) != job:
            first = seen[key]
            refuse("job_key", f"two jobs share the key (the other: workspace_id={first[0]!r}, "
                              f"job_id={first[1]!r})", workspace_id, job_id, key)
        for own in _own_keys(schema.prefix, workspace_id, job_id):
            if matches(own) or schema.parse_key(own) is not None:
                refuse("scan_pattern" if matches(own) else "parse_key",
                       f"takes jobstore's own key {own!r} for a record", workspace_id, job_id)
    for other in others:
        if other.identity == schema.identity or other.prefix != schema.prefix:
            continue
        # Both ways: whichever was registered first, neither may take the other's records.
        theirs = glob_regex(other.scan_pattern()).fullmatch
        for workspace_id, job_id in itertools.product(SAMPLE_WORKSPACES[:5], SAMPLE_JOBS[:5]):
            key = other.job_key(workspace_id, job_id)
            if matches(key) or schema.parse_key(key) is not None:
                refuse("scan_pattern" if matches(key) else "parse_key",
                       f"takes schema {other.name!r}'s key {key!r} for its own",
                       workspace_id, job_id)
            key = schema.job_key(workspace_id, job_id)
            if theirs(key) or other.parse_key(key) is not None:
                refuse("job_key", f"gives a key that schema {other.name!r} takes for its own "
                                  f"(by its {'scan_pattern' if theirs(key) else 'parse_key'})",
                       workspace_id, job_id, key)
