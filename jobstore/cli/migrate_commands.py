"""``jobstore migrate``: the group and its commands (status, plan, phase, rollout, backfill,
reverse-sync, cleanup, set-aside, verify), and how a pass or a verify is run, interrupted and
reported."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import click

from .. import plugins
from ..errors import MigrationRefused
from .common import (
    common_options, confirm, emit, eviction_option, own_prefix, quiet, resolve_url, yes_option,
)
from .errors import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_CONFIRMED, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE,
    EXIT_USAGE, Interrupted, exit_codes,
)
from .migrate_text import (
    SET_ASIDE_OUTCOMES, migration_label, outcome_meaning, plan_lines, status_lines, utc,
    verify_lines,
)
from .progress import ProgressPrinter


def open_migration(url, prefix, source, target, events=None, allow_eviction=False):
    from ..migration import open_migration as _open

    source, target = source or "legacy", target or "workspace"
    known = plugins.get_registry().schemas
    for option, name in (("--source", source), ("--target", target)):
        if name not in known:
            raise click.BadParameter(
                f"unknown schema {name!r}; registered schemas: {', '.join(sorted(known))} "
                "(jobstore strategies lists them)", param_hint=f"'{option}'")
    return _open(resolve_url(url), prefix=prefix, source=source, target=target, events=events,
                 allow_eviction=allow_eviction, own_prefix=own_prefix())


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
    from .. import metrics

    addr, port = metrics.listen_address(metrics_port)
    events = metrics.PrometheusEvents(prefix)
    metrics.serve(port, addr)
    return events


@click.group("migrate")
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
    from ..phases import Phase, refusal

    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    before = migration.state()
    # The rules, then (for the switch that starts the target's copies) whether they fit.
    why = refusal(before, Phase(phase)) or migration.fit_refusal(before, Phase(phase))
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
    from ..migration import MAX_KEYS_PER_CALL

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
    from ..migration import MigrationInterrupted

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


def open_with_metrics(url, prefix, source, target, metrics_port, allow_eviction):
    """The migration a long-running command acts on, its events served on ``--metrics-port``."""
    events = start_metrics(metrics_port, prefix)
    return open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)


# Every pass that writes but never deletes: one shape, the pass and the help apart.
SAFE_PASS_HELP = ("\n\nIt writes but never deletes, and never replaces a newer copy, so it does "
                  "not ask first.")


def safe_pass_command(name: str, method: str, summary: str) -> click.Command:
    """``jobstore migrate <name>``: runs ``Migration.<method>`` with the pass options, its help
    ``summary`` and :data:`SAFE_PASS_HELP`."""
    def command(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                allow_eviction, metrics_port, keys_per_call) -> None:
        migration = open_with_metrics(url, prefix, source, target, metrics_port, allow_eviction)
        run_pass(method, migration, rate, batch, dry_run, restart, as_json, keys_per_call)

    command.__doc__ = summary + SAFE_PASS_HELP
    return migrate.command(name, epilog=PASS_EXIT_CODES)(
        common_options(pass_options(metrics_option(command))))


migrate_backfill = safe_pass_command(
    "backfill", "backfill",
    "Copy every source record missing in the target (resumable, safe under live traffic).")
migrate_reverse_sync = safe_pass_command(
    "reverse-sync", "reverse_sync", "Bring the source up to date from the target, before rolling back.")


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
    from ..phases import Phase

    migration = open_with_metrics(url, prefix, source, target, metrics_port, allow_eviction)
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
    migration = open_with_metrics(url, prefix, source, target, metrics_port, allow_eviction)
    printer = ProgressPrinter(enabled=not as_json and not quiet())
    report, interrupted = interruptible(
        lambda: migration.verify(sample=sample, repair=repair, examples=examples,
                                 progress=printer, batch=batch, keys_per_call=keys_per_call),
        printer)
    emit(report.as_dict(), as_json, verify_lines(migration, report, repair))
    stop_if_interrupted(interrupted, "a verify resumes nothing: run it again")
    if not report.clean or (repair and report.repaired):
        raise click.exceptions.Exit(EXIT_FAILED)


@migrate.command("plan", epilog=exit_codes(
    EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE,
    c1="the target does not fit: a server's maxmemory is below its use plus its share of the "
       "target copies (with the margin); migrate phase dual-write would be refused"))
@common_options
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The backfill's --rate (records per second) to predict its time at "
                   "(default: unthrottled).")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Records whose memory and owner are read (default 2000).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Workspaces listed, the largest first.")
@click.option("--no-timing", is_flag=True, help="Only counts and memory: time nothing.")
@batch_option
@keys_per_call_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@eviction_option
def migrate_plan(url, prefix, source, target, rate, sample, top, no_timing, batch,
                 keys_per_call, as_json, allow_eviction) -> None:
    """Before a migration: what the source holds, the memory the target needs, how long.

    Counts the source's records (a full SCAN), reads the memory of a sample of them, and
    times the backfill's and verify's record work on part of it; it writes nothing. Exits 1
    when the target copies would not fit under a server's maxmemory.
    """
    from ..migration.plan import SAMPLE

    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    sample = sample or SAMPLE
    report = migration.plan(rate=rate, sample=sample, top=top, batch=batch,
                            keys_per_call=keys_per_call, timed=0 if no_timing else sample)
    emit(report.as_dict(), as_json, plan_lines(migration, report))
    if not report.fits:
        raise click.exceptions.Exit(EXIT_FAILED)
