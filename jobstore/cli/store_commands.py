"""The commands on a store: ``strategies``, ``demo``, ``legacy-queue leave``, ``dead-letters``
and ``sweep`` (the package's ``__init__`` adds them to ``jobstore``)."""

from __future__ import annotations

import json

import click

from .. import plugins
from .common import (
    common_options, emit, eviction_option, own_prefix, resolve_url, store_option,
)
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, exit_codes


@click.command("strategies")
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


# The demo's options are the table's (jobstore.config.OPTIONS: flag, default schemas), but it
# reads none of their variables, and its prefix is its own: it writes keys, and a shell set up
# for a service (JOBSTORE_REDIS_URL, JOBSTORE_KEY_PREFIX) must not point it at that service's.
DEMO = {"envvar": None, "show_envvar": False}


@click.command("demo", epilog=exit_codes(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE,
                                        c1="a job was lost or a deleted one revived",
                                        c2="bad option, or --prefix in use on --url"))
@store_option("url", default=None, help="Redis URL (default: an embedded store).", **DEMO)
@store_option("prefix", default="demo", help="Key prefix; must be empty on --url.", **DEMO)
@store_option("source", help="Schema migrated from.", **DEMO)
@store_option("target", help="Schema migrated to.", **DEMO)
@click.option("--jobs", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Jobs that exist before the migration.")
@eviction_option
def demo_command(url, prefix, source, target, jobs, allow_eviction) -> None:
    """Run a whole migration with live traffic, on an embedded store (or on --url).

    On --url it writes only under --prefix, which must hold no keys yet.
    """
    from ..demo import run_demo

    numbers = run_demo(url or "memory://jobstore-demo", prefix=prefix, jobs=jobs, echo=click.echo,
                       source=source, target=target, allow_eviction=allow_eviction)
    if numbers["lost"] or numbers["revived"]:
        raise click.exceptions.Exit(EXIT_FAILED)


@click.group("legacy-queue")
def legacy_queue_group() -> None:
    """The replaced system's queue (a list of bare job ids) shared during a rolling deploy."""


@legacy_queue_group.command("leave", epilog=exit_codes(
    EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE,
    c1="ids remain in the compatible queue: an old producer still pushes (run it again)"))
@common_options
@store_option("legacy_queue", required=True)
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Ids moved per atomic step.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def legacy_queue_leave(url, prefix, source, target, legacy_queue, batch, as_json,
                       allow_eviction) -> None:
    """Move the compatible queue's pending ids into jobstore's queue and switch every store to
    it. Run once no old producer or worker remains; safe under live traffic, resumable."""
    from ..store import open as open_store

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


@click.command("dead-letters", epilog=exit_codes(EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE))
@common_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Show at most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def dead_letters_command(url, prefix, source, target, limit, as_json, allow_eviction) -> None:
    """List the queue entries dequeue could not hand out (dead letters), newest first."""
    import datetime

    from ..store import open as open_store

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


@click.command("sweep", epilog=exit_codes(EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE))
@common_options
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Index entries examined (and dead letters dropped) per step.")
@click.option("--max-entries", type=click.IntRange(min=1), default=None,
              help="Stop after this many index entries examined and dead letters dropped; "
                   "the next run resumes where this one stopped.  [default: no bound]")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after the step that passes this many seconds; the next run resumes "
                   "where this one stopped.  [default: no bound]")
@store_option("finished_ttl", type=click.FloatRange(min=0, min_open=True))
@store_option("dead_letter_ttl", type=click.FloatRange(min=0, min_open=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
def sweep_command(url, prefix, source, target, batch, max_entries, max_seconds, finished_ttl,
                  dead_letter_ttl, as_json, allow_eviction) -> None:
    """Prune what expired jobs leave behind: index entries of records that are gone, dead
    letters older than --dead-letter-ttl; with --finished-ttl, finished jobs that have no
    expiry get one. Bounded steps, safe under live traffic and beside another sweep.

    With --max-entries or --max-seconds a run stops at its bound and the next run resumes
    where it stopped (kept in Redis, per primary on a cluster): run it on a schedule to cover
    a keyspace of any size. A record counts as there when either schema (--source, --target)
    holds it.
    """
    from ..store import open as open_store

    store = open_store(resolve_url(url), "dual", source=source, target=target,
                       phase="read-target", prefix=prefix, own_prefix=own_prefix(),
                       finished_ttl=finished_ttl, dead_letter_ttl=dead_letter_ttl,
                       allow_eviction=allow_eviction)
    with store:
        totals = store.sweep(batch, max_entries=max_entries, max_seconds=max_seconds)
    where = ("reached the end of every index (the next run starts again from the beginning)"
             if totals["complete"] else "stopped at its bound (the next run resumes here)")
    emit(totals, as_json,
         [f"swept {totals['indexes']} workspace indexes (prefix {prefix}"
          f"{', resumed' if totals['resumed'] else ''}): examined "
          f"{totals['entries']} entries, removed {totals['pruned']} whose records are gone; "
          f"{totals['expiring']} finished jobs given an expiry; {totals['dead_letters']} "
          f"dead letters dropped; {where}"])
