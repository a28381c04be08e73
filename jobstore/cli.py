"""The ``jobstore`` command line.

Exit codes: 0 success; 1 verify found problems; 2 usage or configuration error (a Redis that may
evict keys included: EvictionPolicyError, see --allow-eviction); 3 Redis unavailable; 4 refused
because it could strand or lose data; 130 interrupted (a pass resumes from its checkpoint when run
again).
"""

from __future__ import annotations

import json
import os
import sys

import click

from . import plugins
from .errors import ConfigError, JobStoreError, MigrationRefused, PluginError, StoreUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


def common_options(func):
    """The options every command takes."""
    # The same environment a service's stores are configured by (JobStore.from_env), so that an
    # operator's shell that names a prefix or schemas acts on that migration, not on ai's.
    func = click.option("--target", default=None, envvar="JOBSTORE_DUAL_TARGET", show_envvar=True,
                        help="dual's target schema (default workspace).")(func)
    func = click.option("--source", default=None, envvar="JOBSTORE_DUAL_SOURCE", show_envvar=True,
                        help="dual's source schema (default legacy).")(func)
    func = click.option("--prefix", default="ai", show_default=True, envvar="JOBSTORE_KEY_PREFIX",
                        show_envvar=True, help="Key prefix.")(func)
    func = click.option(
        "--url",
        default=None, envvar="JOBSTORE_REDIS_URL", show_envvar=True,
        help="Redis URL (memory:// for an embedded store).",
    )(func)
    return func


def eviction_option(func):
    """``--allow-eviction``: run on a Redis whose maxmemory-policy is not noeviction."""
    return click.option(
        "--allow-eviction", is_flag=True,
        help="Run even though Redis may evict keys (maxmemory-policy other than noeviction); "
             "jobs and migration state may then be lost. Without it such a Redis is refused "
             "(exit 2).",
    )(func)


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def guarded(func):
    """Turn library errors into a message and a documented exit code (never a traceback)."""

    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StoreUnavailable as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        except MigrationRefused as exc:
            fail(f"refused: {exc}", EXIT_REFUSED)
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume from the checkpoint",
                 EXIT_INTERRUPTED)
        except (ConfigError, PluginError, ValueError) as exc:
            fail(str(exc), EXIT_USAGE)
        except JobStoreError as exc:
            fail(str(exc), EXIT_FAILED)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def resolve_url(url: str | None, default: str | None = None) -> str:
    url = url or os.environ.get("JOBSTORE_REDIS_URL") or default
    if not url:
        raise ConfigError("no Redis URL: pass --url or set JOBSTORE_REDIS_URL")
    return url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jobstore")
def main() -> None:
    """Background-job records in Redis, and zero-downtime migrations between key layouts."""


@main.command("strategies")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@guarded
def strategies_command(url, prefix, source, target, as_json) -> None:
    """List registered schemas and strategies and the plugin that gave each."""
    rows = plugins.strategies()
    if as_json:
        click.echo(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    width = max(len(r.name) for r in rows)
    plugin_width = max(len(r.plugin) for r in rows)
    for row in rows:
        click.echo(f"{row.name:<{width}}  {row.kind:<8}  {row.plugin:<{plugin_width}}  {row.description}")


@main.command("demo")
@click.option("--url", default=None, help="Redis URL (default: an embedded store).")
@click.option("--prefix", default="demo", show_default=True, help="Key prefix; must be empty on --url.")
@click.option("--source", default="legacy", show_default=True, help="Schema migrated from.")
@click.option("--target", default="workspace", show_default=True, help="Schema migrated to.")
@click.option("--jobs", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Jobs that exist before the migration.")
@eviction_option
@guarded
def demo_command(url, prefix, source, target, jobs, allow_eviction) -> None:
    """Run a whole migration with live traffic, on an embedded store (or on --url)."""
    from .demo import run_demo

    numbers = run_demo(url or "memory://jobstore-demo", prefix=prefix, jobs=jobs, echo=click.echo,
                       source=source, target=target, allow_eviction=allow_eviction)
    if numbers["lost"] or numbers["revived"]:
        sys.exit(EXIT_FAILED)


@main.command("dead-letters")
@common_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Show at most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
@guarded
def dead_letters_command(url, prefix, source, target, limit, as_json, allow_eviction) -> None:
    """List the queue entries dequeue could not hand out (dead letters), newest first."""
    import datetime

    from .store import open as open_store

    store = open_store(resolve_url(url), "legacy", prefix=prefix, allow_eviction=allow_eviction)
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

    return _open(resolve_url(url), prefix=prefix, source=source or "legacy",
                 target=target or "workspace", events=events, allow_eviction=allow_eviction)


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


class ProgressPrinter:
    """A progress bar with rate and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, enabled: bool = True, every: float = 2.0):
        self.enabled = enabled
        self.every = every
        self.bar = None
        self.last = 0.0

    def __call__(self, step: str, done: int, total, counts: dict) -> None:
        if not self.enabled:
            return
        import time

        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=step, unit="rec", file=sys.stderr)
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(counts, refresh=False)
        elif time.monotonic() - self.last >= self.every or (total and done >= total):
            self.last = time.monotonic()
            shown = f"{done}/{total}" if total else str(done)
            click.echo(f"{step}: {shown} records {json.dumps(counts, sort_keys=True)}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.group("migrate")
def migrate() -> None:
    """Drive a migration between two schemas: phases, backfill, verify, cleanup."""


@migrate.command("status")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
@guarded
def migrate_status(url, prefix, source, target, as_json, allow_eviction) -> None:
    """Show the phase, the rollout, what the next switch needs, and the checkpoints."""
    status = open_migration(url, prefix, source, target, allow_eviction=allow_eviction).status()
    lines = [f"migration {status['migration']}: phase {status['phase']}"
             + ("" if status["phase_stored"] else " (default; nothing stored yet)")]
    rollout = status["rollout"]
    lines.append(f"read rollout: {rollout['percent']:g}%  allow={rollout['allow']}  deny={rollout['deny']}")
    for phase, verdict in status["next"].items():
        lines.append(f"switch to {phase}: {verdict}")
    for part, checkpoint in status["checkpoints"].items():
        state = "finished" if checkpoint.get("finished") == "1" else "in progress (resumable)"
        lines.append(f"{part}: {state}, {checkpoint.get('scanned', 0)} records, {checkpoint.get('counts', '{}')}")
    emit(status, as_json, lines)


@migrate.command("phase")
@common_options
@click.argument("phase", type=click.Choice(["off", "dual-write", "read-target", "target-only"]))
@click.option("--force", is_flag=True, help="Switch even where it could strand or lose data (logged).")
@click.option("--reason", default="", help="Why; recorded in the migration log.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
@guarded
def migrate_phase(url, prefix, source, target, phase, force, reason, as_json, allow_eviction) -> None:
    """Switch the phase for every process (they follow within a second)."""
    from .phases import Phase, refusal

    migration = open_migration(url, prefix, source, target, allow_eviction=allow_eviction)
    before = migration.state()
    why = refusal(before, Phase(phase))
    if why and force:
        click.echo(f"WARNING: forcing a switch that is unsafe: {why}", err=True)
    after = migration.set_phase(phase, force=force, reason=reason)
    emit({"migration": f"{migration.keys.prefix}:{migration.name}", "from": before.phase.value,
          "to": after.phase.value, "forced": bool(why)}, as_json,
         [f"migration {migration.name} (prefix {migration.keys.prefix}): phase {before.phase} -> "
          f"{after.phase}; every store follows within a second"])


@migrate.command("rollout")
@common_options
@click.option("--percent", type=click.FloatRange(0, 100), default=None,
              help="Share of workspaces reading the target first (0-100).")
@click.option("--allow", default=None, help="Comma-separated workspaces always included.")
@click.option("--deny", default=None, help="Comma-separated workspaces always excluded.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@eviction_option
@guarded
def migrate_rollout(url, prefix, source, target, percent, allow, deny, as_json, allow_eviction) -> None:
    """Roll the read switch out per workspace (sticky: raising the percentage only adds)."""
    split = lambda v: None if v is None else [w.strip() for w in v.split(",") if w.strip()]  # noqa: E731
    state = open_migration(url, prefix, source, target, allow_eviction=allow_eviction).set_rollout(
        percent=percent, allow=split(allow), deny=split(deny))
    r = state.rollout
    emit({"percent": r.percent, "allow": sorted(r.allow), "deny": sorted(r.deny)}, as_json,
         [f"read rollout: {r.percent:g}%  allow={sorted(r.allow)}  deny={sorted(r.deny)}"])


def pass_options(func):
    func = eviction_option(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")(func)
    func = click.option("--restart", is_flag=True, help="Ignore the checkpoint; start over.")(func)
    func = click.option("--dry-run", is_flag=True, help="Count what would change; change nothing.")(func)
    func = click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
                        help="Keys per SCAN step.")(func)
    func = click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
                        help="At most this many records per second.")(func)
    return func


def run_pass(method: str, url, prefix, source, target, rate, batch, dry_run, restart, as_json,
             metrics_port=None, allow_eviction=False) -> None:
    events = start_metrics(metrics_port, prefix)
    migration = open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)
    printer = ProgressPrinter(enabled=not as_json)
    try:
        report = getattr(migration, method)(batch=batch, rate=rate, dry_run=dry_run,
                                            restart=restart, progress=printer)
    finally:
        printer.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing to do"
    prefix_word = "would be: " if dry_run else ""
    emit(report.as_dict(), as_json, [
        f"{report.step}: {report.scanned} records in {report.seconds:.1f}s"
        + (" (resumed)" if report.resumed else "") + f"; {prefix_word}{counts}"
    ] + [f"  scanned again: {note}" for note in report.notes])


@migrate.command("backfill")
@common_options
@pass_options
@metrics_option
@guarded
def migrate_backfill(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                     allow_eviction, metrics_port) -> None:
    """Copy every source record missing in the target (resumable, safe under live traffic)."""
    run_pass("backfill", url, prefix, source, target, rate, batch, dry_run, restart, as_json,
             metrics_port, allow_eviction)


@migrate.command("reverse-sync")
@common_options
@pass_options
@metrics_option
@guarded
def migrate_reverse_sync(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                         allow_eviction, metrics_port) -> None:
    """Bring the source up to date from the target, before rolling back."""
    run_pass("reverse_sync", url, prefix, source, target, rate, batch, dry_run, restart, as_json,
             metrics_port, allow_eviction)


@migrate.command("cleanup")
@common_options
@pass_options
@metrics_option
@guarded
def migrate_cleanup(url, prefix, source, target, rate, batch, dry_run, restart, as_json,
                    allow_eviction, metrics_port) -> None:
    """Delete source records the target holds too (only in target-only)."""
    run_pass("cleanup", url, prefix, source, target, rate, batch, dry_run, restart, as_json,
             metrics_port, allow_eviction)


@migrate.command("verify")
@common_options
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Check only this many records per side.")
@click.option("--repair", is_flag=True, help="Fix what is found (copy, merge; nothing is deleted).")
@click.option("--examples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Examples kept per kind of problem.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@metrics_option
@eviction_option
@guarded
def migrate_verify(url, prefix, source, target, sample, repair, examples, as_json,
                   metrics_port, allow_eviction) -> None:
    """Compare source and target record by record; exit 0 only when clean."""
    events = start_metrics(metrics_port, prefix)
    migration = open_migration(url, prefix, source, target, events, allow_eviction=allow_eviction)
    printer = ProgressPrinter(enabled=not as_json)
    try:
        report = migration.verify(sample=sample, repair=repair, examples=examples, progress=printer)
    finally:
        printer.close()
    lines = [
        f"verify ({report.phase}{', sample' if report.sampled else ''}): "
        f"{report.checked_source} source and {report.checked_target} target records checked",
        f"  same {report.same}, missing {report.missing}, differing {report.differing}, "
        f"orphaned {report.orphaned}, target newer {report.target_newer}, unroutable {report.unroutable}",
    ]
    if report.not_records:
        lines.append(f"  not records (keys of another type, skipped) {report.not_records}")
    lines += [f"  {note}" for note in report.notes]
    if repair:
        lines.append(f"  repaired {report.repaired}; run verify again to confirm")
    for kind, items in report.examples.items():
        for item in items:
            lines.append(f"  {kind}: {item['key']} ({', '.join(item['fields'])})")
    lines.append("clean" if report.clean else f"{report.problems} problems")
    emit(report.as_dict(), as_json, lines)
    if not report.clean or (repair and report.repaired):
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
