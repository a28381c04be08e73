"""The Lua scripts as files (jobstore/lua): the loader, the lint, the error lines.

Every rendered script compiles with Lua 5.1 (the Lua of Redis, through lupa) and reads no global
it does not define nor writes any (its bytecode is read: every GETGLOBAL/SETGLOBAL, at its
line); the constants rendered into them are the Python values; the line map leads back to the
file; a Redis error in a script names the ``.lua`` file and line, from the driver too, on the
embedded fakeredis, a real server and a real Cluster.
"""

from __future__ import annotations

import re
import struct
import uuid
from importlib import resources
from pathlib import Path

import pytest
import redis
from lupa import lua51

import jobstore
from jobstore import dead_letters, job, layout, rules, scripts, validation
from jobstore.connection import connect
from jobstore.driver import WRITE_COMMANDS, SyncDriver, _writes
from jobstore.errors import RedisCommandError
from jobstore.scripts import Library, ScriptSourceError
from jobstore.steps import Batch, Script

LUA_DIR = Path(jobstore.__file__).parent / "lua"
# What Redis gives a script (Redis 7's sandbox), of what the scripts may use: everything else
# is an error on a real server at the line that reads it, however rarely that line runs.
REDIS_GLOBALS = frozenset({
    "redis", "KEYS", "ARGV", "cjson", "cmsgpack", "bit", "struct", "string", "table", "math",
    "tonumber", "tostring", "type", "pairs", "ipairs", "next", "unpack", "select", "error",
    "assert", "pcall", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable",
})


# -- a Lua 5.1 bytecode reader: the globals a chunk reads and writes ------------------------------

GETGLOBAL, SETGLOBAL = 5, 7  # Lua 5.1 opcodes (lopcodes.h)


class Chunk:
    """``string.dump`` of a Lua 5.1 function, read as far as the lint needs."""

    def __init__(self, data: bytes):
        assert data[:5] == b"\x1bLua\x51", "not Lua 5.1 bytecode"
        self.little = data[6] == 1
        self.int_size, self.size_t, self.ins_size, self.num_size = data[7], data[8], data[9], data[10]
        self.data, self.at = data, 12
        self.uses: list[tuple[str, str, int]] = []  # (op, name, line)
        self.function()

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def unsigned(self, size: int) -> int:
        return int.from_bytes(self.raw(size), "little" if self.little else "big")

    def integer(self) -> int:
        return self.unsigned(self.int_size)

    def string(self) -> str | None:
        n = self.unsigned(self.size_t)
        return self.raw(n)[:-1].decode("latin-1") if n else None

    def function(self) -> None:
        self.string()  # source
        self.integer(), self.integer()  # first and last line
        self.raw(4)  # upvalues, parameters, vararg, stack size
        code = [self.unsigned(self.ins_size) for _ in range(self.integer())]
        constants: list[object] = []
        for _ in range(self.integer()):
            kind = self.raw(1)[0]
            if kind == 0:
                constants.append(None)
            elif kind == 1:
                constants.append(bool(self.raw(1)[0]))
            elif kind == 3:
                constants.append(struct.unpack("<d" if self.little else ">d", self.raw(self.num_size))[0])
            elif kind == 4:
                constants.append(self.string())
            else:
                raise AssertionError(f"constant of type {kind}")
        for _ in range(self.integer()):
            self.function()
        lines = [self.integer() for _ in range(self.integer())]
        for _ in range(self.integer()):  # locals
            self.string(), self.integer(), self.integer()
        for _ in range(self.integer()):  # upvalue names
            self.string()
        for pc, ins in enumerate(code):
            op = ins & 0x3F
            if op in (GETGLOBAL, SETGLOBAL):
                name = constants[ins >> 14]
                assert isinstance(name, str)
                self.uses.append(("reads" if op == GETGLOBAL else "writes", name, lines[pc]))


_runtime = lua51.LuaRuntime(encoding=None)
_compile = _runtime.eval(
    "function(src, name) local f, err = loadstring(src, name)"
    " if not f then return false, err end return string.dump(f), false end")


def lint(source: str, name: str = "script") -> list[str]:
    """What is wrong with ``source`` as a Redis script: a compile error, or each global it reads
    that Redis does not give it, and each global it writes, as ``'<line>: ...'``."""
    dumped, error = _compile(source.encode("utf-8"), b"=" + name.encode())
    if not dumped:
        return [error.decode("utf-8", "replace")]
    problems = []
    for op, global_name, line in Chunk(dumped).uses:
        if op == "writes" or global_name not in REDIS_GLOBALS:
            problems.append(f"{line}: {op} the global {global_name!r}")
    return problems


def located(script: scripts.Lua, problems: list[str]) -> list[str]:
    out = []
    for problem in problems:
        line = re.match(r"(?:[^:]*:)?(\d+):", problem)
        where = script.origin(int(line.group(1))) if line else None
        out.append(f"{where[0]}:{where[1]}: {problem}" if where else problem)
    return out


# -- every script ---------------------------------------------------------------------------------

def test_the_directory_is_the_registry():
    files = sorted(p.stem for p in LUA_DIR.glob("*.lua"))
    assert files and [s.name for s in scripts.ALL] == files
    for name in files:
        assert getattr(scripts, name.upper()).name == name
    with pytest.raises(AttributeError, match="no jobstore/lua/no_such_script.lua"):
        scripts.NO_SUCH_SCRIPT  # noqa: B018
    with pytest.raises(ImportError):
        from jobstore.scripts import NO_SUCH_SCRIPT  # noqa: F401


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_every_script_compiles_and_uses_no_global_it_lacks(script):
    assert located(script, lint(script.source, script.name)) == []


def test_the_lint_finds_what_it_looks_for():
    """The check above can fail: a global read, a global written, a syntax error."""
    assert lint("local a = 1\nreturn a + undefined_thing") == ["2: reads the global 'undefined_thing'"]
    assert lint("local function f()\n  leaked = 1\nend\nf()") == ["2: writes the global 'leaked'"]
    assert lint("local t = {ARGV[1], KEYS[1]}\nreturn redis.call('GET', t[2])") == []
    (problem,) = lint("return {1,", "broken")
    assert problem.startswith("broken:1:"), problem


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_every_line_maps_back_to_its_file(script):
    lines = script.source.split("\n")[:-1]
    assert len(lines) == len(script.lines)
    for rendered, (path, number) in zip(lines, script.lines):
        original = (LUA_DIR / path).read_text().splitlines()[number - 1]
        assert rendered == scripts.LIBRARY._render_line(original, path, number)
        assert "{{" not in rendered


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_every_script_opens_with_its_header(script):
    text = (LUA_DIR / f"{script.name}.lua").read_text().splitlines()
    header = []
    for line in text:
        if not line.startswith("--") or line.startswith("--- @include"):
            break
        header.append(line)
    assert any("KEYS[" in line for line in header), f"{script.name}.lua: no KEYS in its header"
    assert any("returns" in line for line in header), f"{script.name}.lua: no returns in its header"


@pytest.mark.parametrize("script", [s for s in scripts.ALL if s.read_only], ids=lambda s: s.name)
def test_a_read_only_script_writes_nothing(script):
    """The driver counts on the flag (a read-only batch waits for no replica): a script flagged
    read-only calls no command that writes."""
    called = set(re.findall(r"redis\.p?call\('([A-Za-z]+)'", script.source))
    assert called and not {c.upper() for c in called} & (WRITE_COMMANDS | {"HSETNX", "RENAME",
                                                                           "HINCRBY", "PEXPIRE"})


def test_the_read_only_flag_is_the_header_s():
    assert {s.name for s in scripts.ALL if s.read_only} == {
        p.stem for p in LUA_DIR.glob("*.lua") if "\n-- flags: read-only\n" in "\n" + p.read_text()}
    assert not scripts.DEQUEUE.read_only and scripts.READ_RECORDS.read_only


def test_the_driver_waits_for_replicas_after_what_the_header_says_writes(tmp_path):
    """A batch of read-only scripts is no write (no WAIT after it), whatever the script is called."""
    lib = library(tmp_path, {
        "peek.lua": "-- KEYS[1] a key\n-- returns its value\n-- flags: read-only\n"
                    "return redis.call('GET', KEYS[1])\n",
        "read_first.lua": "-- KEYS[1] a key\n-- returns 1\nredis.call('SET', KEYS[1], 1)\nreturn 1\n",
    })
    assert not _writes([Script(lib.scripts["peek"], ("k",), ())])
    assert _writes([Script(lib.scripts["read_first"], ("k",), ())])
    assert not _writes([Script(scripts.READ_FIRST, ("k",), ()), Script(scripts.READ_RECORDS, ("k",), ())])
    assert _writes([Script(scripts.READ_FIRST, ("k",), ()), Script(scripts.DEQUEUE, ("k",), ())])


def test_every_include_is_used():
    used = set()
    for path in LUA_DIR.rglob("*.lua"):
        used |= set(re.findall(r'^--- @include "([a-z0-9_]+)"$', path.read_text(), re.M))
    assert used == {p.stem for p in (LUA_DIR / "includes").glob("*.lua")}


def test_the_rendered_constants_are_the_python_values():
    """Each {{ NAME }} evaluated in Lua is the value of the Python that owns it."""
    lua = lua51.LuaRuntime()
    values = scripts.constants()

    def table(name):
        return dict(lua.eval(values[name]).items())

    assert table("JOB_STATUSES") == {s.value: True for s in job.JobStatus}
    assert list(lua.eval(values["TEXT_FIELDS"]).values()) == list(job.TEXT_FIELDS)
    assert lua.eval(values["NOT_UTF8"]) == job.NOT_UTF8
    assert lua.eval(values["NOT_A_TIME"]) == job.NOT_A_TIME
    assert lua.eval(values["REV"]) == rules.REV
    assert table("MUTABLE") == dict.fromkeys(rules.MUTABLE, True)
    assert table("STATUS_RANK") == rules.STATUS_RANK
    assert int(values["MAX_COUNT_DIGITS"]) == rules.MAX_COUNT_DIGITS
    assert int(values["MAX_ID_LENGTH"]) == validation.MAX_ID_LENGTH
    for name in ("NO_SEPARATOR", "BAD_WORKSPACE", "BAD_JOB"):
        assert lua.eval(values[name]) == getattr(dead_letters, name)
    fill = lua.eval(f"function(n, m) return string.format({values['LEASE_EXPIRED']}, n, m) end")
    assert fill(2, 3) == rules.LEASE_EXPIRED % (2, 3)
    # the id pattern: Lua and Python take the same characters
    is_id = lua.eval(f"function(s) return string.match(s, '^[{values['ID_CLASS']}]+$') ~= nil end")
    for char in map(chr, range(1, 128)):
        assert is_id(char) == bool(validation.IDENTIFIER.fullmatch(char)), repr(char)


def test_the_queue_entry_separator_is_the_layout_s():
    """The Lua finds the keys a queue entry carries by jobstore.layout's separator, rendered
    from there (no script file writes it itself)."""
    lua = lua51.LuaRuntime(encoding=None)
    values = scripts.constants()
    assert lua.eval(values["CARRIED"]) == layout.CARRIED.encode()
    entry = layout.StoreKeys.queue_entry("ws", "job", "1.5", [("hashtag", "k:{a}=b"), ("x", "")])
    pairs = lua.eval(f"function(e) local t = {{}} for n, k in string.gmatch(e, {values['CARRIED_PAIR']}) "
                     "do t[#t + 1] = n .. ' ' .. k end return table.concat(t, ',') end")
    assert pairs(entry.encode()) == b"hashtag k:{a}=b,x "
    cut = lua.eval(f"function(e) return string.find(e, {values['CARRIED']}, 1, true) end")
    assert cut(entry.encode())[0] == len("ws:job:1.5") + 1
    for path in LUA_DIR.rglob("*.lua"):
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        assert not re.search(r"\\0?31(?!\d)|\x1f", code), path.name


def test_the_op_marker_of_dequeue_and_finish_is_written_in_one_place():
    """dequeue's marker and finish's (one answering both halves) share a layout: one function
    of claim_next.lua writes it, so that the two cannot drift apart (finish.lua reads it)."""
    path = LUA_DIR / "includes" / "claim_next.lua"
    code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
    assert len(re.findall(r"redis\.call\('SET', KEYS\[3\]", code)) == 1


def test_a_lua_string_holds_any_text():
    lua = lua51.LuaRuntime(encoding=None)
    for text in ["", "it's", "back\\slash", "tab\there", "line\nbreak", "é ✓ \x00 \x7f", "\x012", "\t9", "{{ X }}"]:
        assert lua.eval(scripts.lua_string(text)) == text.encode("utf-8")
        assert "\n" not in scripts.lua_string(text)


# -- the loader -----------------------------------------------------------------------------------

def library(tmp_path: Path, files: dict[str, str], values=None) -> Library:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return Library(tmp_path, values if values is not None else {"N": "7"}, "lua/")


def test_includes_are_resolved_once_each_recursively(tmp_path):
    lib = library(tmp_path, {
        "main.lua": '-- KEYS none\n--- @include "a"\n--- @include "b"\n--- @include "a"\nreturn x + y\n',
        "includes/a.lua": "local x = {{ N }}\n",
        "includes/b.lua": '--- @include "a"\n--- @include "b"\nlocal y = x\n',
    })
    main = lib.scripts["main"]
    assert main.source == "-- KEYS none\nlocal x = 7\nlocal y = x\nreturn x + y\n"
    assert main.lines == (("main.lua", 1), ("includes/a.lua", 1), ("includes/b.lua", 3),
                          ("main.lua", 5))
    assert not main.read_only


@pytest.mark.parametrize("files, message", [
    ({"s.lua": '-- x\n--- @include "nope"\n'}, r"lua/s\.lua:2: no include 'nope'"),
    ({"s.lua": "-- x\nlocal a = {{ M }}\n"}, r"lua/s\.lua:2: no constant M"),
    ({"s.lua": "local a = {{ lower }}\n"}, r"lua/s\.lua:1: '\{\{' that is no constant"),
    ({"s.lua": "-- flags: read-only fast\n"}, r"lua/s\.lua:1: unknown flag fast"),
    ({"s.lua": '--- @include "i"\n', "includes/i.lua": "-- flags: read-only\n"},
     r"lua/includes/i\.lua:1: an include has no flags"),
    ({"s.lua": "--- @include 'i'\n"}, r'lua/s\.lua:1: write includes as --- @include "<name>"'),
])
def test_a_bad_script_file_is_named_with_its_line(tmp_path, files, message):
    with pytest.raises(ScriptSourceError, match=message):
        library(tmp_path, files)


def test_a_constant_renders_on_one_line(tmp_path):
    with pytest.raises(ScriptSourceError, match="X renders to more than one line"):
        library(tmp_path, {"s.lua": "return 1\n"}, {"X": "{\n}"})


def test_the_flag_is_read_from_the_header_only(tmp_path):
    lib = library(tmp_path, {
        "r.lua": "-- KEYS[1] a key\n-- flags: read-only\nreturn redis.call('GET', KEYS[1])\n",
        "w.lua": "-- KEYS[1] a key\nlocal a = 1\n-- flags: read-only\nreturn a\n",
    })
    assert lib.scripts["r"].read_only and not lib.scripts["w"].read_only


# -- a Redis error names the file and line ----------------------------------------------------

@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def url(request):
    if request.param == "memory":
        return f"memory://lua-{uuid.uuid4().hex}"
    return request.getfixturevalue(f"{request.param}_url")


def test_an_error_in_an_include_names_the_include_s_line(tmp_path, url):
    lib = library(tmp_path, {
        "fails.lua": '-- KEYS[1] any key\n-- returns never\n--- @include "helper"\nreturn boom()\n',
        "includes/helper.lua": "-- an include\nlocal function boom()\n  error('on purpose')\nend\n",
    })
    script = lib.scripts["fails"]
    assert script.origin(5) == ("includes/helper.lua", 3)  # the line of error(): rendered line 5
    client = connect(url)
    try:
        with pytest.raises(redis.exceptions.ResponseError) as caught:
            client.register_script(script.source)(keys=["{lua}:key"])
    finally:
        client.close()
    explained = lib.explain(str(caught.value))
    assert explained.startswith(str(caught.value))
    assert explained.endswith("(lua/includes/helper.lua:3, in fails)"), explained
    # another library's script, or no line: the message as it was
    assert scripts.explain(str(caught.value)) == str(caught.value)
    assert lib.explain("WRONGTYPE Operation against a key") == "WRONGTYPE Operation against a key"


def test_the_driver_names_the_lua_file_and_line_of_a_script_s_error(url):
    """A script that errors on purpose (a lease that is not a number), through the driver."""
    script = scripts.LEASE_CLAIM
    text = (LUA_DIR / "lease_claim.lua").read_text().splitlines()
    (line,) = [n for n, body in enumerate(text, 1) if "tonumber(ARGV[2])" in body]
    assert script.lines.index(("lease_claim.lua", line)) + 1 != line  # the include shifts it
    client = connect(url)
    driver = SyncDriver(client, None, "test")

    def op():
        yield Batch((Script(script, ("{lua}:leases",), ("claim", "not a number")),))

    try:
        with pytest.raises(RedisCommandError) as caught:
            driver.run(op())
    finally:
        client.close()
    assert str(caught.value).endswith(f"(jobstore/lua/lease_claim.lua:{line}, in lease_claim)"), \
        str(caught.value)


def test_the_package_reads_the_scripts_as_resources():
    root = resources.files("jobstore").joinpath("lua")
    assert sorted(e.name for e in root.iterdir() if e.name.endswith(".lua")) == \
        sorted(f"{s.name}.lua" for s in scripts.ALL)
