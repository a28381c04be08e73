"""The ``jobstore`` command line.

Errors reach the user through click's own exception path: every library error becomes a
:class:`click.ClickException` subclass carrying the documented exit code (see ``EXIT_MEANINGS``),
printed as one ``Error: ...`` line on standard error, never as a traceback. Commands that delete
data, or force a switch the rules refuse, ask for confirmation on a terminal and take ``--yes``.
Log records of the ``jobstore.*`` loggers go to standard error at the level ``-v``/``-q`` choose.

The package's modules: ``errors`` (exit codes, the error path), ``common`` (logging, --yes, the
options every command takes, output), ``progress`` (the progress bar or lines), ``store_commands``
and ``migrate_commands`` (the commands), ``migrate_text`` (what the migrate commands print). This
module defines the ``jobstore`` group (``main``, the console script) and names what they define.
"""

from __future__ import annotations

import click

from .. import plugins
from ..errors import ConfigError, JobStoreError, MigrationRefused, PluginError, StoreUnavailable
from .common import (
    COMMON_VARIABLES, StderrHandler, common_options, configure_logging, confirm, emit, eviction_option, own_prefix,
    quiet, resolve_url, stdin_is_terminal, yes_option,
)
from .errors import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MEANINGS, EXIT_NOT_CONFIRMED, EXIT_OK, EXIT_REFUSED,
    EXIT_UNAVAILABLE, EXIT_USAGE, REDIS_DOWN, CommandError, Interrupted, JobStoreGroup,
    NotConfirmed, Refused, Unavailable, UsageProblem, as_click_error, exit_codes, log,
)
from .migrate_commands import (
    PASS_EXIT_CODES, batch_option, interruptible, keys_per_call_option, metrics_option, migrate,
    migrate_backfill, migrate_cleanup, migrate_phase, migrate_reverse_sync, migrate_rollout,
    migrate_set_aside, migrate_status, migrate_verify, open_migration, pass_options, run_pass,
    start_metrics, stop_if_interrupted, terminate_as_interrupt,
)
from .migrate_text import (
    OUTCOMES, SET_ASIDE_OUTCOMES, VERIFY_COUNTS, migration_label, outcome_meaning, status_lines,
    utc, verify_lines,
)
from .progress import ProgressPrinter, short_counts
from .store_commands import (
    dead_letters_command, demo_command, legacy_queue_group, legacy_queue_leave, strategies_command,
    sweep_command,
)

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_MEANINGS", "EXIT_NOT_CONFIRMED", "EXIT_OK",
    "EXIT_REFUSED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "OUTCOMES", "PASS_EXIT_CODES", "REDIS_DOWN",
    "SET_ASIDE_OUTCOMES", "VERIFY_COUNTS", "CommandError", "ConfigError", "Interrupted",
    "JobStoreError", "JobStoreGroup", "MigrationRefused", "NotConfirmed", "PluginError",
    "ProgressPrinter", "Refused", "StderrHandler", "StoreUnavailable", "Unavailable",
    "UsageProblem", "as_click_error", "batch_option", "common_options", "configure_logging",
    "confirm", "dead_letters_command", "demo_command", "emit", "eviction_option", "exit_codes",
    "interruptible", "keys_per_call_option", "legacy_queue_group", "legacy_queue_leave", "log",
    "main", "metrics_option", "migrate", "migrate_backfill", "migrate_cleanup", "migrate_phase",
    "migrate_reverse_sync", "migrate_rollout", "migrate_set_aside", "migrate_status",
    "migrate_verify", "migration_label", "open_migration", "outcome_meaning", "own_prefix",
    "pass_options", "plugins", "quiet", "resolve_url", "run_pass", "short_counts",
    "start_metrics", "status_lines", "stdin_is_terminal", "stop_if_interrupted",
    "strategies_command", "sweep_command", "terminate_as_interrupt", "utc", "verify_lines", "yes_option",
]


@click.group(cls=JobStoreGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=exit_codes(*EXIT_MEANINGS), help=(
                 "Background-job records in Redis, and zero-downtime migrations between key "
                 f"layouts.\n\nEvery command reads the service's environment ({COMMON_VARIABLES}); "
                 "an option given wins. Commands that delete data or force an unsafe switch ask "
                 "first; --yes answers for scripts."))
@click.version_option(package_name="jobstore")
@click.option("-v", "--verbose", count=True,
              help="Log more on stderr: -v INFO (phase switches, passes started, resumed and "
                   "finished, repairs), -vv DEBUG (plugin loading, each repaired record, "
                   "the full error). Default: warnings and errors.")
@click.option("-q", "--quiet", is_flag=True,
              help="Only errors on stderr: no warnings, no progress.")
def main(verbose: int, quiet: bool) -> None:
    """The ``jobstore`` command (its help is the group's ``help=``, which names the variables)."""
    configure_logging(verbose, quiet)


# The commands, in the order the module defined them (click lists them by name).
main.add_command(strategies_command)
main.add_command(demo_command)
main.add_command(legacy_queue_group)
main.add_command(dead_letters_command)
main.add_command(sweep_command)
main.add_command(migrate)
