"""The Lua scripts behind every write: ``jobstore/lua/<name>.lua``, loaded and rendered here.

The directory is the registry: each ``<name>.lua`` is one script, ``scripts.<NAME>`` (e.g.
``scripts.DEQUEUE`` is ``dequeue.lua``), and :data:`ALL` holds them all. Each file opens with
its header: what its ``KEYS`` and ``ARGV`` are and what it returns, and the flags the driver
needs (``-- flags: read-only``: the script writes nothing). Shared pieces live in
``jobstore/lua/includes/<name>.lua`` and are pulled in by a line ``--- @include "<name>"``
(once per script, includes of includes too, in the order first named). A constant the Lua
shares with Python is written ``{{ NAME }}`` and rendered from the Python that owns it
(:func:`constants`), so that each exists once. The rendered script keeps a map of its lines to
the files they came from: :meth:`Library.explain` turns the ``user_script:<line>`` of a Redis
error into ``<file>.lua:<line>``.

Keys arrive through ``KEYS``, built by the schema or the layout. One exception is the
record key that ``DEQUEUE`` must find from a popped queue entry: for a schema with a key format
it receives the schema's ``lua_template`` (the format, prefix filled in) and only substitutes
the two ids; a computed schema's key is carried by the queue entry (the enqueue wrote it there),
or the script asks the store for it (``need``). The other exception is ``PASS_BATCH``, the
standalone migration passes' script: it reads the ids off the scanned keys and puts them into
the schemas' templates (the other copy's key, the workspace index), as DEQUEUE does; computed
schemas keep the per-record scripts, whose keys are built in Python. No other script computes
a key.

Every write takes an op marker key made from a fresh token per call: redis-py re-sends a
command whose reply was lost, and the marker lets the re-sent script recognise that its own
earlier attempt already applied and answer as that attempt would have.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from . import dead_letters, job, layout, rules, validation

if TYPE_CHECKING:
    from importlib.abc import Traversable

INCLUDE = re.compile(r'--- @include "([a-z0-9_]+)"\s*')
PLACEHOLDER = re.compile(r"\{\{ *([A-Z][A-Z0-9_]*) *\}\}")
FLAGS = re.compile(r"-- flags:(.*)")
KNOWN_FLAGS = frozenset({"read-only"})
# The script's sha in a Redis error: 'script: <sha>' (Redis 7), 'f_<sha>' (fakeredis, Redis 6).
_SHA = re.compile(r"(?:script: |f_)([0-9a-f]{40})")
# The line in a Redis error: '@user_script:12' (Redis), '[string "..."]:12' (fakeredis's lupa).
_LINE = re.compile(r'(?:user_script|\[string "[^"\n]*"\]):(\d+)')


@dataclass(frozen=True)
class Lua:
    """One rendered script. ``lines[i]``: the file (relative to the scripts' directory) and the
    line of that file that line ``i + 1`` of ``source`` came from."""

    name: str
    source: str
    read_only: bool = False
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)
    # What Redis names the script by (EVALSHA, SCRIPT LOAD): the SHA-1 of ``source``, computed
    # once here, not for every call that sends the script (finish.lua's 32 KB took ~25 µs).
    sha: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode("utf-8")).hexdigest())

    def origin(self, line: int) -> tuple[str, int] | None:
        """``(file, line)`` of the source's line ``line`` (counted from 1, as Redis does)."""
        return self.lines[line - 1] if 1 <= line <= len(self.lines) else None


class ScriptSourceError(ValueError):
    """A script file that cannot be rendered: an unknown include, constant or flag."""


# -- constants: the Lua text of each {{ NAME }}, from the Python that owns it ---------------------

def lua_string(value: str) -> str:
    """A Lua string literal of ``value`` (printable ASCII; any other byte as a three-digit decimal
    escape, so that a digit after it is not read as part of it)."""
    out = []
    for char in value:
        if char in "\\'":
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\{byte:03d}" for byte in char.encode("utf-8"))
    return "'" + "".join(out) + "'"


def lua_list(values: Iterable[str]) -> str:
    return "{" + ", ".join(lua_string(v) for v in values) + "}"


def lua_table(pairs: Iterable[tuple[str, object]]) -> str:
    """A table constructor of identifier keys: ``{a = 1, b = true}`` (values as Lua literals)."""
    def literal(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        assert isinstance(value, str), value
        return lua_string(value)

    return "{" + ", ".join(f"{key} = {literal(value)}" for key, value in pairs) + "}"


def lua_class(pattern_class: str) -> str:
    """A Lua pattern set's contents from a Python regular expression's character class: ranges
    and plain characters, ``\\-`` the only escape (Lua's is ``%-``)."""
    plain = pattern_class.replace("\\-", "")
    if "\\" in plain or "%" in plain or "]" in plain or "^" in plain:
        raise ScriptSourceError(f"cannot render the character class {pattern_class!r} in Lua")
    return pattern_class.replace("\\-", "%-")


def lua_pattern_char(char: str) -> str:
    """One character as a Lua pattern matches it, in a set or out of one: escaped with ``%``
    unless it is a letter or digit (``%x`` is ``x`` for any other character)."""
    return char if char.isalnum() else "%" + char


def constants() -> dict[str, str]:
    """What each ``{{ NAME }}`` of the script files becomes: one line of Lua, rendered from the
    Python that owns the value."""
    return {
        # jobstore.job
        "JOB_STATUSES": lua_table((status.value, True) for status in job.JobStatus),
        "TEXT_FIELDS": lua_list(job.TEXT_FIELDS),
        "NOT_UTF8": lua_string(job.NOT_UTF8),
        "NOT_A_TIME": lua_string(job.NOT_A_TIME),
        # jobstore.rules
        "REV": lua_string(rules.REV),
        "MUTABLE": lua_table((name, True) for name in rules.MUTABLE_FIELDS),
        "STATUS_RANK": lua_table(rules.STATUS_RANK.items()),
        "MAX_COUNT_DIGITS": str(rules.MAX_COUNT_DIGITS),
        "LEASE_EXPIRED": lua_string(rules.LEASE_EXPIRED),
        "TTL": lua_string(rules.TTL),
        "EXPIRY_GRACE_MS": str(rules.EXPIRY_GRACE_MS),
        "TERMINAL": lua_table((value, True) for value in sorted(s.value for s in job.TERMINAL)),
        # jobstore.dead_letters
        "NO_SEPARATOR": lua_string(dead_letters.NO_SEPARATOR),
        "BAD_WORKSPACE": lua_string(dead_letters.BAD_WORKSPACE),
        "BAD_JOB": lua_string(dead_letters.BAD_JOB),
        # jobstore.layout: the separator of the keys a queue entry carries; CARRIED_PAIR a
        # pattern of one carried '<separator><name>=<key>' (captures: name, key)
        "CARRIED": lua_string(layout.CARRIED),
        "CARRIED_PAIR": lua_string("{0}([^={0}]+)=([^{0}]*)".format(lua_pattern_char(layout.CARRIED))),
        # jobstore.validation
        "ID_CLASS": lua_class(validation.ID_CLASS),
        "MAX_ID_LENGTH": str(validation.MAX_ID_LENGTH),
    }


# -- the loader -----------------------------------------------------------------------------------

class Library:
    """The scripts of a directory (``<name>.lua``, includes under ``includes/``), rendered.

    ``where``: what the directory is called in an error message (``jobstore/lua/``)."""

    def __init__(self, root: Traversable, values: Mapping[str, str], where: str = "") -> None:
        self.root = root
        self.values = dict(values)
        self.where = where
        for name, value in self.values.items():
            if "\n" in value:  # the line map counts on one line per line
                raise ScriptSourceError(f"constant {name} renders to more than one line")
        self._texts: dict[str, list[str]] = {}
        found = sorted(entry.name for entry in root.iterdir()
                       if entry.is_file() and entry.name.endswith(".lua"))
        self.scripts: dict[str, Lua] = {}
        for filename in found:
            script = self._load(filename[:-len(".lua")])
            self.scripts[script.name] = script
        self._by_sha = {script.sha: script for script in self.scripts.values()}

    def _lines(self, path: str) -> list[str]:
        if path not in self._texts:
            entry = self.root.joinpath(*path.split("/"))
            if not entry.is_file():
                raise FileNotFoundError(f"{self.where}{path}: no such script file")
            self._texts[path] = entry.read_text(encoding="utf-8").splitlines()
        return self._texts[path]

    def _render_line(self, line: str, path: str, number: int) -> str:
        def value(match: re.Match[str]) -> str:
            try:
                return self.values[match.group(1)]
            except KeyError:
                raise ScriptSourceError(
                    f"{self.where}{path}:{number}: no constant {match.group(1)} "
                    f"(known: {', '.join(sorted(self.values))})") from None

        rendered = PLACEHOLDER.sub(value, line)
        if "{{" in rendered:
            raise ScriptSourceError(f"{self.where}{path}:{number}: '{{{{' that is no constant")
        return rendered

    def _render(self, path: str, seen: set[str], out: list[str],
                origins: list[tuple[str, int]]) -> None:
        for number, line in enumerate(self._lines(path), 1):
            include = INCLUDE.fullmatch(line)
            if include:
                name = include.group(1)
                if name not in seen:
                    seen.add(name)
                    try:
                        self._render(f"includes/{name}.lua", seen, out, origins)
                    except FileNotFoundError:
                        raise ScriptSourceError(
                            f"{self.where}{path}:{number}: no include {name!r} "
                            f"(includes/{name}.lua)") from None
                continue
            if line.startswith("--- @include"):
                raise ScriptSourceError(f"{self.where}{path}:{number}: write includes as "
                                        f'--- @include "<name>" (lowercase, no .lua)')
            flags = FLAGS.fullmatch(line)
            if flags and path.startswith("includes/"):
                raise ScriptSourceError(f"{self.where}{path}:{number}: an include has no flags")
            out.append(self._render_line(line, path, number))
            origins.append((path, number))

    def _load(self, name: str) -> Lua:
        path = f"{name}.lua"
        flags: set[str] = set()
        for number, line in enumerate(self._lines(path), 1):
            if not line.startswith("--") or INCLUDE.fullmatch(line):
                break  # the header is the comment lines the file opens with
            found = FLAGS.fullmatch(line)
            if found:
                flags.update(found.group(1).replace(",", " ").split())
                if not flags <= KNOWN_FLAGS:
                    raise ScriptSourceError(
                        f"{self.where}{path}:{number}: unknown flag "
                        f"{', '.join(sorted(flags - KNOWN_FLAGS))} (known: {', '.join(KNOWN_FLAGS)})")
        out: list[str] = []
        origins: list[tuple[str, int]] = []
        self._render(path, set(), out, origins)
        return Lua(name, "\n".join(out) + "\n", "read-only" in flags, tuple(origins))

    def include(self, name: str) -> str:
        """An include rendered with its own includes, as a script would get it (for tests)."""
        out: list[str] = []
        self._render(f"includes/{name}.lua", {name}, out, [])
        return "\n".join(out) + "\n"

    def explain(self, message: str) -> str:
        """``message`` (a Redis error) with the file and line of the script line it names, when
        it names one of these scripts and a line: ``user_script:57`` of ``dequeue`` is
        ``... (jobstore/lua/includes/record_check.lua:12, in dequeue)``."""
        sha, line = _SHA.search(message), _LINE.search(message)
        script = self._by_sha.get(sha.group(1)) if sha else None
        origin = script.origin(int(line.group(1))) if script and line else None
        if script is None or origin is None:
            return message
        return f"{message} ({self.where}{origin[0]}:{origin[1]}, in {script.name})"


LIBRARY = Library(resources.files("jobstore").joinpath("lua"), constants(), "jobstore/lua/")
ALL: tuple[Lua, ...] = tuple(LIBRARY.scripts.values())
explain = LIBRARY.explain
# Includes some tests run on their own (the Lua form of a rule, against the Python form).
RECORD_CHECK = LIBRARY.include("record_check")
TIME = LIBRARY.include("time")


def __getattr__(name: str) -> Lua:
    """``scripts.DEQUEUE`` is ``jobstore/lua/dequeue.lua``, rendered."""
    script = LIBRARY.scripts.get(name.lower()) if name.isupper() else None
    if script is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}"
                             + (f" (no jobstore/lua/{name.lower()}.lua)" if name.isupper() else ""))
    return script


def __dir__() -> list[str]:
    return sorted([*globals(), *(name.upper() for name in LIBRARY.scripts)])
