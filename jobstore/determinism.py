"""Are a computed schema's keys the same in every process? Asked of a second interpreter.

Every process of a deployment must compute the same key for a job, or a job written by one is
not found by the next (``get`` finds nothing, ``update_status`` raises ``JobNotFound``). A key
built from Python's ``hash()`` (salted per process, ``PYTHONHASHSEED``), from an environment
variable, the time or a random number passes every check one process can make. So the keys of
the generated ids (:data:`jobstore.schema.SAMPLE_WORKSPACES` x :data:`~jobstore.schema.SAMPLE_JOBS`)
are computed again in a second interpreter, started with another hash seed and with none of this
process's environment but what starting Python needs (:data:`KEPT`), and compared.

Only computed schemas (``job_key`` overridden) are asked: a ``key_format`` is a function of the
prefix and the ids by construction. All of them go to one interpreter, once per process (a
verdict is kept per class and module file); docs/plugins.md#configuration has the cost.
``JOBSTORE_SCHEMA_CHECK=local`` skips the second interpreter (the kit never does).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import weakref
from collections.abc import Sequence
from typing import Any

from .config import process_env
from .errors import PluginError
from .schema import SAMPLE_JOBS, SAMPLE_WORKSPACES, KeySchema

log = logging.getLogger(__name__)

ENV_CHECK = process_env("schema_check")
# What the second interpreter keeps of this process's environment: what starting Python (and
# finding its shared libraries) may need, nothing a schema could take configuration from.
KEPT = ("PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "SYSTEMROOT", "TMPDIR", "TEMP", "TMP")
TIMEOUT = 120.0
_PYTHON = re.compile(r"(python|pypy)[0-9.]*(\.exe)?", re.IGNORECASE)
CONFIGURATION = "docs/plugins.md#configuration"

# Verdicts already reached in this process: class -> (module file stamp, prefix) that passed.
_passed: weakref.WeakKeyDictionary[type, set[tuple[Any, str]]] = weakref.WeakKeyDictionary()

# Runs in the second interpreter: imports each class by name, computes the sample keys. Output
# goes to the real stdout only at the end, so that a plugin printing at import cannot garble it.
_CHILD = r"""
import importlib, json, sys
request = json.loads(sys.stdin.read())
sys.path[:] = request["path"]
out, sys.stdout = sys.stdout, sys.stderr
results = []
for module, qualname, prefix in request["schemas"]:
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        schema = found(prefix)
        keys = [schema.job_key(w, j) for w in request["workspaces"] for j in request["jobs"]]
        results.append({"keys": keys, "pattern": schema.scan_pattern()})
    except BaseException as exc:
        results.append({"error": type(exc).__name__ + ": " + str(exc)})
out.write(json.dumps(results))
"""


def _stamp(cls: type) -> Any:
    """The module file's (path, mtime, size): a reinstalled plugin is asked again."""
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    return (path, stat.st_mtime_ns, stat.st_size) if stat else (path,)


def _importable(cls: type) -> str | None:
    """Why a second interpreter cannot import ``cls`` by name, or None."""
    if "<locals>" in cls.__qualname__:
        return "it is defined inside a function"
    if cls.__module__ == "__main__":
        return "it is defined in __main__"
    return None


def _other_seed() -> str:
    seed = os.environ.get("PYTHONHASHSEED", "")
    return "2" if seed == "1" else "1"


def check_across_processes(schemas: Sequence[tuple[KeySchema, str]], strict: bool = False) -> None:
    """Refuse a computed schema whose keys differ in a second interpreter.

    ``schemas``: ``(schema, plugin)`` pairs. ``strict`` (the conformance kit): a schema that
    cannot be asked (its class is not importable by name, no second interpreter can start) is
    refused too; otherwise it is logged and passed.

    :raises PluginError: naming the schema, its plugin and a counter-example.
    """
    if not strict and os.environ.get(ENV_CHECK, "").strip().lower() == "local":
        return
    asked: list[tuple[KeySchema, str]] = []
    for schema, plugin in schemas:
        cls = type(schema)
        if not schema.computed or (_stamp(cls), schema.prefix) in _passed.get(cls, ()):
            continue
        why = _importable(cls)
        if why is not None:
            _cannot(schema, plugin, f"{why}, so a second interpreter cannot import it", strict)
            continue
        asked.append((schema, plugin))
    if not asked:
        return
    # Computed before the child runs: a schema reading the clock differs from it either way.
    mine = [[schema.job_key(w, j) for w in SAMPLE_WORKSPACES for j in SAMPLE_JOBS]
            for schema, _ in asked]
    results = _ask(asked, strict)
    if results is None:
        return
    for (schema, plugin), keys, theirs in zip(asked, mine, results):
        if _compare(schema, plugin, keys, theirs, strict):  # a verdict: kept for the process
            _passed.setdefault(type(schema), set()).add((_stamp(type(schema)), schema.prefix))


def _ask(asked: list[tuple[KeySchema, str]], strict: bool) -> list[dict[str, Any]] | None:
    seed = _other_seed()
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env["PYTHONHASHSEED"] = seed
    env[ENV_CHECK] = "local"  # a plugin that opens a store at import asks no third interpreter
    request = json.dumps({
        "path": sys.path,
        "schemas": [[type(s).__module__, type(s).__qualname__, s.prefix] for s, _ in asked],
        "workspaces": SAMPLE_WORKSPACES, "jobs": SAMPLE_JOBS,
    })
    problem = None
    if not sys.executable:
        problem = "sys.executable is not known"
    elif not _PYTHON.fullmatch(os.path.basename(sys.executable)):
        # an embedding host (uWSGI, a frozen app): its executable is no Python to run code with
        problem = f"sys.executable is not a Python interpreter: {sys.executable}"
    else:
        try:
            done = subprocess.run([sys.executable, "-c", _CHILD], input=request, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            try:
                results = json.loads(done.stdout) if done.returncode == 0 else None
            except ValueError:
                results = None
            if isinstance(results, list) and len(results) == len(asked):
                return results
            problem = (f"{sys.executable} exited {done.returncode}: "
                       f"{(done.stderr or done.stdout).strip()[-500:]}")
    for schema, plugin in asked:
        _cannot(schema, plugin, f"no second interpreter answered ({problem})", strict)
    return None


def _who(schema: KeySchema, plugin: str) -> str:
    return f"schema {schema.name!r}" + (f" (plugin {plugin!r})" if plugin else "")


def _cannot(schema: KeySchema, plugin: str, why: str, strict: bool) -> None:
    message = (f"{_who(schema, plugin)}: its keys could not be computed in a second process: "
               f"{why}")
    if strict:
        raise PluginError(message)
    log.warning("%s; registered without that check", message)


def _compare(schema: KeySchema, plugin: str, keys: list[str], theirs: dict[str, Any],
             strict: bool) -> bool:
    who = _who(schema, plugin)
    elsewhere = (f"in a second Python process (PYTHONHASHSEED={_other_seed()}, none of this "
                 "process's environment)")
    rule = (f"A key must be a function of the prefix and the two ids alone: not of hash() (salted "
            "per process), the environment, the time or chance; a schema's configuration is "
            f"fixed in its class ({CONFIGURATION})")
    if "error" in theirs:  # not a verdict on its keys: refused by the kit, logged otherwise
        _cannot(schema, plugin, f"it cannot be built {elsewhere}: {theirs['error']}. {rule}", strict)
        return False
    pairs = [(w, j) for w in SAMPLE_WORKSPACES for j in SAMPLE_JOBS]
    for (workspace_id, job_id), key, other in zip(pairs, keys, theirs["keys"]):
        if key != other:
            raise PluginError(
                f"{who}: job_key: gives another key {elsewhere}: {other!r}; counter-example: "
                f"workspace_id={workspace_id!r}, job_id={job_id!r} -> {key!r}. {rule}")
    if theirs["pattern"] != schema.scan_pattern():
        raise PluginError(f"{who}: scan_pattern: gives another pattern {elsewhere}: "
                          f"{theirs['pattern']!r}, not {schema.scan_pattern()!r}. {rule}")
    return True
