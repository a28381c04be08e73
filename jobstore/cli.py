"""The ``jobstore`` command line.

Errors reach the user through click's own exception path: every library error becomes a
:class:`click.ClickException` subclass carrying the documented exit code (see ``EXIT_MEANINGS``),
printed as one ``Error: ...`` line on standard error, never as a traceback. Commands that delete
data, or force a switch the rules refuse, ask for confirmation on a terminal and take ``--yes``.
Log records of the ``jobstore.*`` loggers go to standard error at the level ``-v``/``-q`` choose.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import click
import redis

from . import plugins
from .errors import ConfigError, JobStoreError, MigrationRefused, PluginError, StoreUnavailable

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_NOT_CONFIRMED = 5
EXIT_INTERRUPTED = 130

# code -> what it means, for every --help that lists exit codes (docs/api.md lists them too).
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_FAILED: "verify found problems (or repaired some: run it again), the demo lost a job, "
                 "or another jobstore error (the message says which)",
    EXIT_USAGE: "usage or configuration error: a bad option, no Redis URL, an unknown schema, "
                "a plugin that fails to load, a Redis that may evict keys (--allow-eviction), "
                "credentials Redis refuses, a server older than jobstore needs",
    EXIT_UNAVAILABLE: "Redis unavailable, or it failed during the command",
    EXIT_REFUSED: "refused: the step could strand or lose data (the message says why)",
    EXIT_NOT_CONFIRMED: "not confirmed: declined at the prompt, or no terminal to ask on and "
                        "no --yes; nothing was changed",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C; SIGTERM during a pass, verify or set-aside, "
                      "which first print their report so far); a backfill, reverse-sync or "
                      "cleanup run again resumes from its checkpoint",
}
# Redis errors that mean "Redis is unavailable", should one escape the library unmapped.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
              redis.exceptions.BusyLoadingError, redis.exceptions.ClusterError)


def exit_codes(*codes: int, **meanings: str) -> str:
    """An ``Exit codes:`` epilog for --help listing ``codes`` (``meanings``: ``c4="..."`` to say
    what a code means for this command)."""
    width = max(len(str(code)) for code in codes)
    lines = []
    for code in codes:
        meaning = textwrap.wrap(meanings.get(f"c{code}", EXIT_MEANINGS[code]), 74 - width)
        lines.append(f"  {code:<{width}}  {meaning[0]}")
        lines += [f"  {'':<{width}}  {more}" for more in meaning[1:]]
    # "\b" keeps click from re-wrapping the table into one paragraph.
    return "\b\nExit codes:\n" + "\n".join(lines)


# -- errors, through click's exception path ------------------------------------------------------


class CommandError(click.ClickException):
    """A failure reported as ``Error: <message>`` on stderr with ``exit_code``."""

    exit_code = EXIT_FAILED


class UsageProblem(CommandError):
    exit_code = EXIT_USAGE


class Unavailable(CommandError):
    exit_code = EXIT_UNAVAILABLE


class Refused(CommandError):
    exit_code = EXIT_REFUSED

    def __init__(self, message: str):
        super().__init__(f"refused: {message}")


class NotConfirmed(CommandError):
    exit_code = EXIT_NOT_CONFIRMED


class Interrupted(CommandError):
    exit_code = EXIT_INTERRUPTED


def as_click_error(exc: BaseException) -> click.ClickException | None:
    """The ClickException (with its exit code) a library error is reported as; None for an
    exception the CLI does not know, which keeps its traceback: it is a bug."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted; a backfill, reverse-sync or cleanup run again resumes "
                           "from its checkpoint")
    if isinstance(exc, StoreUnavailable):
        return Unavailable(str(exc))
    if isinstance(exc, REDIS_DOWN):
        return Unavailable(f"Redis is unavailable: {exc}")
    if isinstance(exc, MigrationRefused):
        return Refused(str(exc))
    if isinstance(exc, (ConfigError, PluginError, ValueError)):
        return UsageProblem(str(exc))
    if isinstance(exc, JobStoreError):
        return CommandError(str(exc))
    return None


class JobStoreGroup(click.Group):
    """The top-level group: turns library errors into ClickExceptions, which click prints as
    ``Error: ...`` and exits with (subcommands run inside this ``invoke``)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            mapped = as_click_error(exc)
            if mapped is None:
                raise
            log.debug("the error in full:", exc_info=True)  # -vv shows where it came from
            raise mapped from exc


# -- logging -------------------------------------------------------------------------------------


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it), and
    above a progress bar without breaking it."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if ProgressPrinter.active is not None:
            try:
                ProgressPrinter.active.write(self.format(record))
                return
            except Exception:  # pragma: no cover - fall back to a plain line
                pass
        super().emit(record)


def configure_logging(verbose: int, quiet: bool) -> None:
    """The CLI's logging: ``jobstore.*`` records on stderr, WARNING by default, -v INFO,
    -vv DEBUG, -q ERROR only. Undone when the command ends (the CLI may run in-process)."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logger = logging.getLogger("jobstore")
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose and not quiet
        else "%(levelname)s: %(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before)

    click.get_current_context().call_on_close(undo)


def quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("quiet"))


# -- confirmation --------------------------------------------------------------------------------


def yes_option(func):
    """``-y/--yes``: for the commands that ask before they delete or force."""
    return click.option(
        "-y", "--yes", is_flag=True,
        help="Do not ask for confirmation (for scripts). Without it the command asks on a "
             "terminal, and refuses (exit 5) when standard input is not one.",
    )(func)


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def confirm(what: str, yes: bool) -> None:
    """Go on only with ``yes``, or when the operator answers yes on a terminal. ``what``: what
    the command is about to do, as a sentence without its final period.

    :raises NotConfirmed: declined, or no terminal to ask on (exit 5; nothing was changed).
    """
    if yes:
        return
    if not stdin_is_terminal():
        raise NotConfirmed(f"{what}: not confirmed. Standard input is not a terminal to ask on; "
                           "pass --yes to confirm. Nothing was changed.")
    try:
        answer = click.confirm(f"{what}. Go on?", default=False, err=True)
    except click.exceptions.Abort:  # Ctrl-C or end of input at the prompt
        answer = False
    if not answer:
        raise NotConfirmed("not confirmed; nothing was changed")


# -- common options ------------------------------------------------------------------------------


def common_options(func):
    """The options every command takes."""
    # The same environment a service's stores are configured by (JobStore.from_env), so that an
    # operator's shell that names a prefix or schemas acts on that migration, not on ai's.
    func = click.option("--target", default=None, envvar="JOBSTORE_DUAL_TARGET", show_envvar=True,
                        help="dual's target schema (default workspace).")(func)
    func = click.option("--source", default=None, envvar="JOBSTORE_DUAL_SOURCE", show_envvar=True,
                        help="dual's source schema (default legacy).")(func)
    # Kept in the context (own_prefix()) rather than passed to every command function.
    func = click.option("--own-prefix", default=None, envvar="JOBSTORE_OWN_PREFIX",
                        show_envvar=True, expose_value=False, callback=_keep_own_prefix,
                        help="Prefix of jobstore's own keys (queue, indexes, migration state) "
                             "when the stores name it apart (default: --prefix).")(func)
    func = click.option("--prefix", default="ai", show_default=True, envvar="JOBSTORE_KEY_PREFIX",
                        show_envvar=True, help="Key prefix.")(func)
    func = click.option(
        "--url",
        default=None, envvar="JOBSTORE_REDIS_URL", show_envvar=True,
        help="Redis URL (memory:// for an embedded store).",
    )(func)
    return func


def _keep_own_prefix(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta["jobstore.own_prefix"] = value or None


def own_prefix() -> str | None:
    """The command's --own-prefix (JOBSTORE_OWN_PREFIX), None when not given."""
    return click.get_current_context().meta.get("jobstore.own_prefix")


def eviction_option(func):
    """``--allow-eviction``: run on a Redis whose maxmemory-policy is not noeviction."""
    return click.option(
        "--allow-eviction", is_flag=True,
        help="Run even though Redis may evict keys (maxmemory-policy other than noeviction); "
             "jobs and migration state may then be lost. Without it such a Redis is refused "
             "(exit 2).",
    )(func)


def resolve_url(url: str | None, default: str | None = None) -> str:
    url = url or os.environ.get("JOBSTORE_REDIS_URL") or default
    if not url:
        raise ConfigError("no Redis URL: pass --url or set JOBSTORE_REDIS_URL")
    return url


@click.group(cls=JobStoreGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=exit_codes(*EXIT_MEANINGS))
@click.version_option(package_name="jobstore")
@click.option("-v", "--verbose", count=True,
              help="Log more on stderr: -v INFO (phase switches, passes started, resumed and "
                   "finished, repairs), -vv DEBUG (plugin loading, each repaired record, "
                   "the full error). Default: warnings and errors.")
@click.option("-q", "--quiet", is_flag=True,
              help="Only errors on stderr: no warnings, no progress.")
def main(verbose: int, quiet: bool) -> None:
    """Background-job records in Redis, and zero-downtime migrations between key layouts.

    Every command reads the service's environment (JOBSTORE_REDIS_URL, JOBSTORE_KEY_PREFIX,
    JOBSTORE_OWN_PREFIX, JOBSTORE_DUAL_SOURCE, JOBSTORE_DUAL_TARGET); an option given wins. Commands that delete
    data or force an unsafe switch ask first; --yes answers for scripts.
    """
    configure_logging(verbose, quiet)


@main.command("strategies")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def strategies_command(url, prefix, source, target, as_json) -> None:
    """List registered schemas and strategies and the plugin that gave each.

    It reads only the local plugin registry; --url, --prefix, --source and --target are taken
    like by every command, and not used.
    """
    rows = plugins.strategies()
    if as_json:
        click.echo(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    width = max(len(r.name) for r in rows)
    plugin_width = max(len(r.plugin) for r in rows)
    for row in rows:
        click.echo(f"{row.name:<{width}}  {row.kind:<8}  {row.plugin:<{plugin_width}}  {row.description}")


@main.command("demo", epilog=exit_codes(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE,
                                        c1="a job was lost or a deleted one revived",
                                        c2="bad option, or --prefix in use on --url"))
@click.option("--url", default=None, help="Redis URL (default: an embedded store).")
@click.option("--prefix", default="demo", show_default=True, help="Key prefix; must be empty on --url.")
@click.option("--source", default="legacy", show_default=True, help="Schema migrated from.")
@click.option("--target", default="workspace", show_default=True, help="Schema migrated to.")
@click.option("--jobs", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Jobs that exist before the migration.")
@eviction_option
def demo_command(url, prefix, source, target, jobs, allow_eviction) -> None:
    """Run a whole migration with live traffic, on an embedded store (or on --url).

    On --url it writes only under --prefix, which must hold no keys yet.
    """
    from .demo import run_demo

    numbers = run_demo(url or "memory://jobstore-demo", prefix=prefix, jobs=jobs, echo=click.echo,
                       source=source, target=target, allow_eviction=allow_eviction)
    if numbers["lost"] or numbers["revived"]:
        raise click.exceptions.Exit(EXIT_FAILED)


@main.group("legacy-queue")
def legacy_queue_group() -> None:
    """The replaced system's queue (a list of bare job ids) shared during a rolling deploy."""


@legacy_queue_group.command("leave", epilog=exit_codes(
    EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE,
    c1="ids remain in the compatible queue: an old producer still pushes (run it again)"))
@common_options
@click.option("--legacy-queue", "legacy_queue", required=True, envvar="JOBSTORE_LEGACY_QUEUE",
              show_envvar=True, help="The compatible queue's key, e.g. simple:queue.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Ids moved per atomic step.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def legacy_queue_leave(url, prefix, source, target, legacy_queue, batch, as_json,
                       allow_eviction) -> None:
    """Move the compatible queue's pending ids into jobstore's queue and switch every store to
    it. Run once no old producer or worker remains; safe under live traffic, resumable."""
    from .store import open as open_store

    store = open_store(resolve_url(url), source or "legacy", prefix=prefix, legacy_queue=legacy_queue,
                       allow_eviction=allow_eviction, own_prefix=own_prefix())
    with store:
        totals = store.leave_legacy_queue(batch)
    emit({"legacy_queue": legacy_queue, **totals}, as_json,
         [f"legacy queue {legacy_queue} (prefix {prefix}): moved {totals['moved']} pending ids "
          f"into jobstore's queue, dropped {totals['dropped']} whose job no longer exists; "
          f"{totals['remaining']} remain; every store now enqueues to jobstore's queue"])
    if totals["remaining"]:
        raise click.exceptions.Exit(EXIT_FAILED)


@main.command("dead-letters", epilog=exit_codes(EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE))
@common_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Show at most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def dead_letters_command(url, prefix, source, target, limit, as_json, allow_eviction) -> None:
    """List the queue entries dequeue could not hand out (dead letters), newest first."""
    import datetime

    from .store import open as open_store

    store = open_store(resolve_url(url), "legacy", prefix=prefix, allow_eviction=allow_eviction,
                       own_prefix=own_prefix())
    with store:
        letters = store.dead_letters(limit)
    if as_json:
        click.echo(json.dumps([letter.as_dict() for letter in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
        return
    for letter in letters:
        try:
            when = datetime.datetime.fromtimestamp(letter.at, datetime.timezone.utc)
            shown = when.isoformat(timespec="seconds")
        except (OverflowError, OSError, ValueError):  # a letter not written by jobstore
            shown = repr(letter.at)
        where = f"{letter.key} {letter.field}: " if letter.key is not None else ""
        click.echo(f"{shown}  {letter.entry}  {where}{letter.reason}")


# -- migrate -------------------------------------------------------------------------------------


def open_migration(url, prefix, source, target, events=None, allow_eviction=False):
    from .migration import open_migration as _open

    source, target = source or "legacy", target or "workspace"
    known = plugins.get_registry().schemas
    for option, name in (("--source", source), ("--target", target)):
        if name not in known:
            raise click.BadParameter(
                f"unknown schema {name!r}; registered schemas: {', '.join(sorted(known))} "
                "(jobstore strategies lists them)", param_hint=f"'{option}'")
    return _open(resolve_url(url), prefix=prefix, source=source, target=target, events=events,
                 allow_eviction=allow_eviction, own_prefix=own_prefix())


def migration_label(migration) -> str:
    return migration.label


def metrics_option(func):
    """``--metrics-port`` for the long-running migrate commands."""
    return click.option(
        "--metrics-port", default=None, metavar="[ADDR:]PORT",
        help="Serve Prometheus metrics at http://ADDR:PORT/metrics while this runs "
             "(ADDR default 127.0.0.1; see docs/metrics.md).",
    )(func)


def start_metrics(metrics_port, prefix):
    """PrometheusEvents for the migration, served on ``--metrics-port``; None without it."""
    if metrics_port is None:
        return None
    from . import metrics

    addr, port = metrics.listen_address(metrics_port)
    events = metrics.PrometheusEvents(prefix)
    metrics.serve(port, addr)
    return events


def emit(data: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)


# What each outcome a pass counts means, by pass ('from' is the side scanned); progress lines and
# summaries print these words instead of the bare outcome names.
OUTCOMES = {
    "backfill": {
        "copied": "source records the target lacked, copied to it",
        "refreshed": "target copies that had missed writes, brought up to date",
        "exists": "already in the target (nothing to do)",
    },
    "reverse-sync": {
        "copied": "target records the source lacked, copied to it",
        "copied-back": "source copies missing from the target, copied to it",
        "merged": "both copies differed: merged (newer values win) and written to both",
        "same": "identical on both sides (nothing to do)",
        "foreign": "the source layout holds another workspace's job under that id: could not "
                   "be written back (leaving target-only stays refused while there are any)",
    },
    "cleanup": {
        "deleted": "source records the target holds too, deleted",
        "kept": "source records whose target copy differs or is missing, kept",
        "foreign": "source records of another workspace than their target key's, kept",
    },
    "*": {
        "gone": "deleted by the service while the pass ran (nothing to do)",
        "foreign": "held by another workspace's job on the other side (left alone)",
        "unroutable": "records without a usable workspace_id (cannot be placed; left alone)",
        "not_a_record": "keys that are not hashes (skipped)",
        "error": "records Redis refused to process (see its log; left alone)",
        "rescans": "scans started again after the server changed",
    },
}


def outcome_meaning(step: str, outcome: str) -> str:
    return OUTCOMES.get(step, {}).get(outcome) or OUTCOMES["*"].get(outcome) or outcome


def short_counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


class ProgressPrinter:
    """Progress of a pass or a verify on stderr: a bar with rate and ETA on a terminal, a plain
    line every few seconds otherwise.

    ``total`` is what the pass counted when it started; records the service adds meanwhile can
    make ``done`` larger, so the total shown is never below ``done`` (never past 100%). A verify
    has no total: it shows how many records it has checked.
    """

    active: ProgressPrinter | None = None  # the one drawing a bar, for log lines to go above

    def __init__(self, enabled: bool = True, every: float = 2.0, terminal: bool | None = None):
        self.enabled = enabled
        self.every = every
        self.terminal = terminal
        self.bar: Any = None  # a tqdm bar (tqdm has no type information)
        self.step: str | None = None
        self.last = 0.0
        self.shown = ""
        self.reached: str | None = None  # the step whose line at its total was shown

    def __call__(self, step: str, done: int, total, counts: dict) -> None:
        if not self.enabled:
            return
        if total is not None:
            total = max(total, done)
        if step == "verify restarted":
            self.close()
            self.line(f"verify: a server changed under the scan (restart, failover or slots "
                      f"moved); starting again from the beginning (fresh start "
                      f"{counts.get('rescans', '?')})")
            return
        terminal = self.terminal if self.terminal is not None else sys.stderr.isatty()
        if terminal and self._bar(step, total) is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(short_counts(counts), refresh=False)
            return
        now = time.monotonic()
        # The pass reaching its total is shown at once, once: a total that keeps growing with
        # the records scanned (the service adds records, SCAN returns a key twice) must not
        # print a "100%" line per batch.
        at_total = bool(total and done >= total)
        text = self.describe(step, done, total, counts, again=at_total and self.reached == step)
        if text != self.shown and (step != self.step or now - self.last >= self.every
                                   or (at_total and self.reached != step)):
            self.step, self.last, self.shown = step, now, text
            if at_total:
                self.reached = step
            self.line(text)

    @staticmethod
    def describe(step: str, done: int, total, counts: dict, again: bool = False) -> str:
        """``again``: the total was reached before and keeps growing with ``done``."""
        if step.startswith("verify "):
            side = step.split(" ", 1)[1]
            return f"verify: {done} {side} records checked so far"
        if again:
            scanned = f"{done} records scanned (more than counted when it started)"
        elif total:
            scanned = f"{done} of {total} records scanned ({done * 100 // total}%)"
        else:
            scanned = f"{done} records scanned"
        return f"{step}: {scanned}" + (f"; {short_counts(counts)}" if counts else "")

    def _bar(self, step: str, total):
        """The tqdm bar of this step (a new one per step); None without tqdm."""
        if self.bar is not None and self.step == step:
            return self.bar
        self.close()
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        desc = f"verify {step.split(' ', 1)[1]} records checked" if step.startswith("verify ") \
            else f"{step} records scanned"
        self.step = step
        self.bar = tqdm(total=total, desc=desc, unit="rec", file=sys.stderr)
        ProgressPrinter.active = self
        return self.bar

    def line(self, text: str) -> None:
        self.write(text)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if ProgressPrinter.active is self:
            ProgressPrinter.active = None


@main.group("migrate")
def migrate() -> None:
    """Drive a migration between two schemas: phases, backfill, verify, cleanup.

    Every command names the migration it acts on: its source and target schemas (--source,
    --target) and key prefix (--prefix).
    """


@migrate.command("status", epilog=exit_codes(EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE))
@common_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def migrate_status(url, prefix, source, target, as_json, allow_eviction) -> None:
    """Show the phase, the rollout, what the next switch needs, and the checkpoints."""
    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    status = migration.status()
    lines = status_lines(migration, status)
    emit(status, as_json, lines)


def utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def status_lines(migration, status: dict) -> list[str]:
    """``migrate status``'s text: the phase, who reads what, the verify evidence the gates
    weigh, what each neighbouring switch needs, the checkpoints and the log."""
    phase = status["phase"]
    if status["phase_stored"]:
        lines = [f"{migration_label(migration)}: phase {phase}"]
    else:
        lines = [f"{migration_label(migration)}: no phase stored yet; dual stores behave as "
                 f"{phase} (write both layouts, read the target first, then the source); "
                 "store one with: jobstore migrate phase off (or dual-write)"]
    rollout = status["rollout"]
    stored = (f"{rollout['percent']:g}% of workspaces  allow={rollout['allow']}  "
              f"deny={rollout['deny']}")
    if phase == "read-target":
        lines.append(f"read rollout: {rollout['percent']:g}% of workspaces read the target first  "
                     f"allow={rollout['allow']}  deny={rollout['deny']}")
    elif phase == "target-only":
        lines.append("reads: every workspace reads the target")
    else:
        default = rollout["percent"] >= 100 and not rollout["allow"] and not rollout["deny"]
        lines.append(f"reads: every workspace reads the source (phase {phase})"
                     + ("" if default else f"; read rollout for read-target: {stored}"))
    if status["verified_clean_at"]:
        lines.append(f"last clean verify: started {utc(status['verified_clean_at'])}"
                     + ("" if status["verified"] else " (does not count: "
                        + ("it started before dual writes began)"
                           if status["verified_clean_at"] <= (status["dual_since"] or 0)
                           or not status["dual_since"]
                           else "a verify that was not clean finished after it started)")))
    if status["verify_failed_at"]:
        lines.append(f"last verify that was not clean: finished {utc(status['verify_failed_at'])}"
                     + (f" ({status['verify_failed_note']})" if status["verify_failed_note"] else ""))
    for target_phase, verdict in status["next"].items():
        lines.append(f"switch to {target_phase}: {verdict}")
    for part, checkpoint in status["checkpoints"].items():
        state = "finished" if checkpoint["finished"] else "in progress (resumable)"
        counts = checkpoint["counts"]
        lines.append(f"{part}: {state}; {checkpoint['scanned']} records scanned"
                     + (f"; {short_counts(counts)}" if counts else ""))
    for entry in status["log"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(entry.get("at", 0))))
        if entry.get("event") == "phase":
            what = f"phase {entry.get('from')} -> {entry.get('to')}" + (
                " FORCED" if entry.get("forced") else "")
        else:
            what = f"rollout {entry.get('percent', 0):g}%"
        why = f" ({entry['reason']})" if entry.get("reason") else ""
        lines.append(f"log: {when} UTC  {what}{why}")
    return lines


@migrate.command("phase", epilog=exit_codes(
    EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_NOT_CONFIRMED,
    c4="refused: the switch could strand or lose data (the message says why; --force)",
    c5="--force not confirmed (no --yes and no terminal, or declined); nothing changed"))
@common_options
@click.argument("phase", type=click.Choice(["off", "dual-write", "read-target", "target-only"]))
@click.option("--force", is_flag=True,
              help="Switch even where it could strand or lose data (logged). Asks first, "
                   "showing why the switch is refused; --yes for scripts.")
@yes_option
@click.option("--reason", default="", help="Why; recorded in the migration log.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def migrate_phase(url, prefix, source, target, phase, force, yes, reason, as_json,
                  allow_eviction) -> None:
    """Switch the phase for every process (they follow within a second)."""
    from .phases import Phase, refusal

    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    before = migration.state()
    why = refusal(before, Phase(phase))
    if why and force:
        confirm(f"{migration_label(migration)}: {before.phase} -> {phase} is refused because "
                f"{why}; --force switches anyway, and what is at risk may be lost", yes)
    # Forced only when the operator confirmed a refusal: a switch that became unsafe since it
    # was read is refused, not forced unseen.
    after = migration.set_phase(phase, force=force and bool(why), reason=reason)
    emit({"migration": f"{migration.keys.prefix}:{migration.name}", "from": before.phase.value,
          "to": after.phase.value, "forced": bool(why)}, as_json,
         [f"{migration_label(migration)}: phase {before.phase} -> {after.phase}"
          + (" (forced)" if why else "") + "; every store follows within a second"])


@migrate.command("rollout", epilog=exit_codes(
    EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED,
    c4="refused: no phase stored yet, or the rollout may not shrink now (the message says why)"))
@common_options
@click.option("--percent", type=click.FloatRange(0, 100), default=None,
              help="Share of workspaces reading the target first (0-100).")
@click.option("--allow", default=None, help="Comma-separated workspaces always included.")
@click.option("--deny", default=None, help="Comma-separated workspaces always excluded.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def migrate_rollout(url, prefix, source, target, percent, allow, deny, as_json, allow_eviction) -> None:
    """Roll the read switch out per workspace (sticky: raising the percentage only adds)."""
    split = lambda v: None if v is None else [w.strip() for w in v.split(",") if w.strip()]  # noqa: E731
    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    state = migration.set_rollout(percent=percent, allow=split(allow), deny=split(deny))
    r = state.rollout
    emit({"percent": r.percent, "allow": sorted(r.allow), "deny": sorted(r.deny)}, as_json,
         [f"{migration_label(migration)}: read rollout {r.percent:g}% of workspaces read the "
          f"target first  allow={sorted(r.allow)}  deny={sorted(r.deny)}"])


def pass_options(func):
    func = eviction_option(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")(func)
    func = click.option("--restart", is_flag=True, help="Ignore the checkpoint; start over.")(func)
    func = click.option("--dry-run", is_flag=True, help="Count what would change; change nothing.")(func)
    func = batch_option(func)
    func = click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
                        help="At most this many records per second.")(func)
    func = keys_per_call_option(func)
    return func


def batch_option(func):
    return click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
                        help="Keys per SCAN step.")(func)


def keys_per_call_option(func):
    from .migration import MAX_KEYS_PER_CALL

    return click.option(
        "--keys-per-call", type=click.IntRange(1, MAX_KEYS_PER_CALL), default=None,
        help="Records one script call settles (standalone Redis; default 50, about a "
             "millisecond of Redis time; at most what one SCAN step returns, --batch): more "
             "is faster, and live requests wait longer behind each call.")(func)


PASS_EXIT_CODES = exit_codes(EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_INTERRUPTED,
                             c4="refused: the phase does not allow this pass (the message says why)")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While a pass or a verify runs, SIGTERM stops it as Ctrl-C does (a KeyboardInterrupt in
    the main thread), so that it reports what it did, ``"interrupted": true``, and exits 130.
    Off the main thread (no handler can be installed there) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruptible(call: Callable[[], Any], printer: ProgressPrinter) -> tuple[Any, bool]:
    """``(report, interrupted)``: what ``call`` (a pass or a verify) returned, or the report
    its MigrationInterrupted carried (Ctrl-C, SIGTERM)."""
    from .migration import MigrationInterrupted

    try:
        with terminate_as_interrupt():
            try:
                return call(), False
            except MigrationInterrupted as exc:
                return exc.report, True
    finally:
        printer.close()


def stop_if_interrupted(interrupted: bool, what: str) -> None:
    """After the report of an interrupted run is printed: exit 130, saying what to do."""
    if interrupted:
        raise Interrupted(f"interrupted; {what}")


def run_pass(method: str, migration, rate, batch, dry_run, restart, as_json,
             keys_per_call=None) -> None:
    printer = ProgressPrinter(enabled=not as_json and not quiet())
    report, interrupted = interruptible(
        lambda: getattr(migration, method)(batch=batch, rate=rate, dry_run=dry_run,
                                           restart=restart, progress=printer,
                                           keys_per_call=keys_per_call), printer)
    scanned = {"backfill": "source", "reverse-sync": "target", "cleanup": "source"}[report.step]
    head = (f"{report.step} of {migration_label(migration)}"
            + (" (dry run: nothing was changed)" if dry_run else "")
            + (" INTERRUPTED" if interrupted else "")
            + f": {report.scanned} {scanned} records scanned in {report.seconds:.1f}s"
            + (" (resumed from the checkpoint)" if report.resumed else ""))
    lines = [head]
    if not report.counts:
        lines.append("  nothing to do")
    width = max((len(f"{k} {v}") for k, v in report.counts.items()), default=0)
    for outcome, n in sorted(report.counts.items()):
        would = "would be: " if dry_run else ""
        lines.append(f"  {f'{outcome} {n}':<{width}}  {would}{outcome_meaning(report.step, outcome)}")
    lines += [f"  scanned again: {note}" for note in report.notes]
    emit(report.as_dict(), as_json, lines)
    stop_if_interrupted(interrupted, "run the same command again: it resumes from its "
                        "checkpoint (--restart starts over)")


@migrate.command("backfill", epilog=PASS_EXIT_CODES)
@common_options
@pass_options
@metrics_option
def migrate_backfill(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                     allow_eviction, metrics_port, keys_per_call) -> None:
    """Copy every source record missing in the target (resumable, safe under live traffic).

    It writes but never deletes, and never replaces a newer copy, so it does not ask first.
    """
    events = start_metrics(metrics_port, prefix)
    migration = open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)
    run_pass("backfill", migration, rate, batch, dry_run, restart, as_json, keys_per_call)


@migrate.command("reverse-sync", epilog=PASS_EXIT_CODES)
@common_options
@pass_options
@metrics_option
def migrate_reverse_sync(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                         allow_eviction, metrics_port, keys_per_call) -> None:
    """Bring the source up to date from the target, before rolling back.

    It writes but never deletes, and never replaces a newer copy, so it does not ask first.
    """
    events = start_metrics(metrics_port, prefix)
    migration = open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)
    run_pass("reverse_sync", migration, rate, batch, dry_run, restart, as_json, keys_per_call)


@migrate.command("cleanup", epilog=exit_codes(
    EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_NOT_CONFIRMED, EXIT_INTERRUPTED,
    c4="refused: the phase is not target-only"))
@common_options
@pass_options
@yes_option
@metrics_option
def migrate_cleanup(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                    allow_eviction, yes, metrics_port, keys_per_call) -> None:
    """Delete source records the target holds too (only in target-only).

    It deletes, so it asks first on a terminal; --yes confirms for scripts (without a terminal
    and without --yes it changes nothing and exits 5). --dry-run counts without asking.
    """
    from .phases import Phase

    events = start_metrics(metrics_port, prefix)
    migration = open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)
    if not dry_run:
        phase = migration.state().phase
        if phase is not Phase.TARGET_ONLY:  # refused before asking, as the pass would refuse
            raise MigrationRefused(f"cleanup runs only in target-only; phase is {phase}")
        confirm(f"cleanup of {migration_label(migration)} deletes every "
                f"{migration.source.name} record that the {migration.target.name} layout holds "
                "too (--dry-run counts them)", yes)
    run_pass("cleanup", migration, rate, batch, dry_run, restart, as_json, keys_per_call)


@migrate.command("set-aside", epilog=exit_codes(
    EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_INTERRUPTED,
    c4="--restore: the old key holds a record again, or nothing is set aside at KEY",
    c130="interrupted (Ctrl-C, SIGTERM); what was moved stays moved: run it again"))
@common_options
@click.option("--list", "listing", is_flag=True, help="List the records set aside; change nothing.")
@click.option("--restore", default=None, metavar="KEY",
              help="Put the record set aside at KEY back where it was (give it a usable "
                   "workspace_id first: HSET KEY workspace_id <id>).")
@click.option("--dry-run", is_flag=True, help="Count what would be set aside; change nothing.")
@batch_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def migrate_set_aside(url, prefix, source, target, listing, restore, dry_run, batch, as_json,
                      allow_eviction) -> None:
    """Move source records without a usable workspace_id (verify's 'unroutable') aside.

    No workspace can read such a record and no pass can place it, so verify cannot be clean
    while it stays in the source. Each one is renamed, whole (every field and its TTL), to
    <prefix>:migration:aside:{...}:<stamp>:<its key>, where verify no longer sees it; a record
    given a workspace_id meanwhile is left in place. It moves, never deletes, so it does not
    ask first; --list shows what was set aside, --restore KEY puts one back.
    """
    if listing and restore:
        raise click.UsageError("--list and --restore exclude each other")
    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    if listing:
        records = migration.set_aside_records()
        emit({"migration": f"{migration.keys.prefix}:{migration.name}", "records": records},
             as_json,
             [f"{r['key']}  from {r['record_key']}"
              + (f"  set aside {utc(r['set_aside_at'])}" if r["set_aside_at"] else "")
              + f"  workspace_id={r['workspace_id']!r}" for r in records]
             or ["nothing is set aside"])
        return
    if restore is not None:
        outcome = migration.restore_aside(restore)
        record_key = migration.keys.aside_parts(restore)[1]
        emit({"key": restore, "record_key": record_key, "outcome": outcome}, as_json,
             [f"{restore} put back at {record_key}" if outcome == "restored" else
              f"nothing is set aside at {restore}; {record_key} holds a record (restored already)"])
        return
    printer = ProgressPrinter(enabled=not as_json and not quiet())
    report, interrupted = interruptible(
        lambda: migration.set_aside(batch=batch, dry_run=dry_run, progress=printer), printer)
    lines = [f"set-aside of {migration_label(migration)}"
             + (" (dry run: nothing was changed)" if dry_run else "")
             + (" INTERRUPTED" if interrupted else "")
             + f": {report.scanned} {migration.source.name} records scanned in {report.seconds:.1f}s"]
    lines += [f"  {f'{outcome} {n}'}  {SET_ASIDE_OUTCOMES.get(outcome, outcome_meaning('', outcome))}"
              for outcome, n in sorted(report.counts.items())] or ["  nothing to set aside"]
    lines += [f"  {moved['key']} -> {moved['to']}" for moved in report.moved]
    lines += [f"  {note}" for note in report.notes]
    emit(report.as_dict(), as_json, lines)
    stop_if_interrupted(interrupted, "what was moved stays moved; run set-aside again")


SET_ASIDE_OUTCOMES = {
    "set-aside": "records without a usable workspace_id, moved aside whole (--list shows them)",
    "routable": "records that named a usable workspace by the time they were moved (left)",
    "busy": "the place to move them to held another record (left; run set-aside again)",
}


# How verify's text report explains each count: (field, label, meaning, expected in target-only).
VERIFY_COUNTS = (
    ("same", "same", "source records whose target copy is identical", None),
    ("missing", "missing", "source records with no target copy (backfill or --repair copies them)",
     False),
    ("differing", "differing", "source records whose target copy differs (--repair merges them)",
     False),
    ("target_newer", "target newer", "target copies that moved on after the source stopped "
     "being written", True),
    ("orphaned", "orphaned", "target records with no source record (left when cleanup deleted "
     "the source copy, or written since target-only)", True),
    ("unroutable", "unroutable", "source records without a usable workspace_id (give them "
     "one, or jobstore migrate set-aside moves them out of the way, kept whole)", False),
)


def verify_lines(migration, report, repair: bool) -> list[str]:
    """verify's text report: every count with what it means, and whether it is a problem."""
    from .migration import plural
    from .phases import Phase

    only_target = Phase(report.phase) is Phase.TARGET_ONLY
    lines = [
        f"verify of {migration_label(migration)} in phase {report.phase}"
        + (" (sample)" if report.sampled else "")
        + f": {report.checked_source} {migration.source.name} (source) and "
        f"{report.checked_target} {migration.target.name} (target) records checked "
        f"in {report.seconds:.1f}s"
    ]
    width = max(len(f"{label} {getattr(report, name)}") for name, label, _, _ in VERIFY_COUNTS)
    for name, label, meaning, expected_when_target_only in VERIFY_COUNTS:
        n = getattr(report, name)
        if expected_when_target_only is None:
            verdict = ""
        elif expected_when_target_only and only_target:
            verdict = " - expected in target-only, not a problem"
        else:
            verdict = " - a problem" if n else ""
        lines.append(f"  {f'{label} {n}':<{width}}  {meaning}{verdict}")
    if report.not_records:
        lines.append(f"  not records {report.not_records}  keys of another type in a layout's "
                     "namespace (skipped, not a problem)")
    lines += [f"  {note}" for note in report.notes]
    if repair:
        lines.append(f"  repaired {report.repaired}; run verify again to confirm")
    for kind, items in report.examples.items():
        if only_target and kind in ("orphaned", "target_newer"):
            continue  # expected there: not listed as problems
        for item in items:
            copy = f"; its target copy: {item['other_key']}" if kind == "unroutable" and \
                item.get("other_key") else ""
            lines.append(f"  {kind}: {item['key']} ({', '.join(item['fields'])}{copy})")
    shown = sum(len(items) for kind, items in report.examples.items()
                if not (only_target and kind in ("orphaned", "target_newer")))
    if shown < report.problems:
        lines.append(f"  ({shown} of {plural(report.problems, 'problem')} listed; --examples N "
                     "lists up to N of each kind)")
    found = plural(report.problems, "problem")
    if report.interrupted:
        lines.append(f"not clean: interrupted before it checked every key ({found} found so far)")
    elif report.clean:
        lines.append("clean: no problems" + (
            " (orphaned and target-newer records are expected in target-only)"
            if only_target and (report.orphaned or report.target_newer) else ""))
    elif not report.complete:
        lines.append(f"not clean: the scan could not vouch for every key ({found} found)")
    else:
        lines.append(f"not clean: {found}")
    return lines


@migrate.command("verify", epilog=exit_codes(
    EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED,
    c0="clean (a full verify is recorded: it allows target-only)",
    c130="interrupted (Ctrl-C); nothing is recorded: run verify again",
    c1="problems found, or --repair repaired some (run verify again to confirm)"))
@common_options
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Check only this many records per side.")
@click.option("--repair", is_flag=True, help="Fix what is found (copy, merge; nothing is deleted).")
@click.option("--examples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Examples kept per kind of problem.")
@batch_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@keys_per_call_option
@metrics_option
@eviction_option
def migrate_verify(url, prefix, source, target, sample, repair, examples, batch, as_json,
                   keys_per_call, metrics_port, allow_eviction) -> None:
    """Compare source and target record by record; exit 0 only when clean."""
    events = start_metrics(metrics_port, prefix)
    migration = open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)
    printer = ProgressPrinter(enabled=not as_json and not quiet())
    report, interrupted = interruptible(
        lambda: migration.verify(sample=sample, repair=repair, examples=examples,
                                 progress=printer, batch=batch, keys_per_call=keys_per_call),
        printer)
    emit(report.as_dict(), as_json, verify_lines(migration, report, repair))
    stop_if_interrupted(interrupted, "a verify resumes nothing: run it again")
    if not report.clean or (repair and report.repaired):
        raise click.exceptions.Exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
