"""Key schemas: where a job's record hash lives in Redis.

A schema is one key format. Every key jobstore touches for a record is built here, from that
format, and nowhere else: Python calls :meth:`KeySchema.job_key`, and the one Lua script that
must find a record from a queue entry receives :attr:`KeySchema.lua_template`, the same format
with the prefix filled in.
"""

from __future__ import annotations

import re
import string
from typing import ClassVar

from .errors import PluginError
from .layout import RESERVED_NAMESPACES

# In lua_template, these bytes stand for the ids. No identifier or prefix can contain them.
WORKSPACE_MARK = "\x01"
JOB_MARK = "\x02"
_ID = r"([A-Za-z0-9_.\-]{1,128})"
_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class KeySchema:
    """Subclass, set the three class attributes, register it from a plugin. That's all.

    ``key_format`` is a :class:`string.Template` using ``${prefix}``, ``${job_id}`` and
    optionally ``${workspace_id}``, e.g. ``"${prefix}:job:${workspace_id}:${job_id}"``. A format
    without ``${workspace_id}`` keys jobs by id alone (one id per store, like ``legacy``).

    :raises PluginError: from the constructor when the format is unusable (no job id, ids not
        separated, a glob character, or a key inside one of jobstore's own namespaces).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    key_format: ClassVar[str]

    def __init__(self, prefix: str = "ai"):
        self.prefix = prefix
        fmt = type(self).key_format
        try:
            template = string.Template(fmt).substitute(
                prefix=prefix, workspace_id=WORKSPACE_MARK, job_id=JOB_MARK
            )
        except (KeyError, ValueError) as exc:
            raise PluginError(f"schema {self.name!r}: bad key_format {fmt!r} ({exc})") from None
        self._check(template)
        self.lua_template = template
        self.scoped = WORKSPACE_MARK in template
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

    def job_key(self, workspace_id: str, job_id: str) -> str:
        """The key of one job's record hash. Both ids must already be validated."""
        return self.lua_template.replace(WORKSPACE_MARK, workspace_id).replace(JOB_MARK, job_id)

    def scan_pattern(self) -> str:
        """A SCAN ``MATCH`` pattern covering every record key of this schema."""
        return self.lua_template.replace(WORKSPACE_MARK, "*").replace(JOB_MARK, "*")

    def parse_key(self, key: str) -> tuple[str | None, str] | None:
        """``(workspace_id or None, job_id)`` for a key of this schema, None for any other key."""
        match = self._key_re.fullmatch(key)
        if not match:
            return None
        ids = dict(zip(self._groups, match.groups()))
        return ids.get(WORKSPACE_MARK), ids[JOB_MARK]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.scan_pattern()!r}>"
