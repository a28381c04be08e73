"""The CLI's exit codes and its error path: every library error becomes a
:class:`click.ClickException` subclass carrying the documented exit code (``EXIT_MEANINGS``),
which click prints as one ``Error: ...`` line on standard error. No other module of
``jobstore.cli`` is imported here (a contract in pyproject.toml keeps it so)."""

from __future__ import annotations

import logging
import textwrap

import click

from ..connection import DOWN
from ..errors import ConfigError, JobStoreError, MigrationRefused, PluginError, StoreUnavailable

# The CLI's logger (one name for the whole package: -vv shows "jobstore.cli: ...").
log = logging.getLogger("jobstore.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_NOT_CONFIRMED = 5
EXIT_INTERRUPTED = 130

# code -> what it means, for every --help that lists exit codes (docs/reference/exit-codes.md is
# generated from it and from ERROR_EXITS).
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
REDIS_DOWN = DOWN


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


# The library's errors -> what they are reported as (and so their exit code), the first that
# matches (docs/reference/exit-codes.md lists jobstore.errors' classes by it).
ERROR_EXITS: tuple[tuple[tuple[type[Exception], ...], type[CommandError]], ...] = (
    ((StoreUnavailable,), Unavailable),
    ((MigrationRefused,), Refused),
    ((ConfigError, PluginError, ValueError), UsageProblem),
    ((JobStoreError,), CommandError),
)


def as_click_error(exc: BaseException) -> click.ClickException | None:
    """The ClickException (with its exit code) a library error is reported as; None for an
    exception the CLI does not know, which keeps its traceback: it is a bug."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted; a backfill, reverse-sync or cleanup run again resumes "
                           "from its checkpoint")
    if isinstance(exc, REDIS_DOWN) and not isinstance(exc, JobStoreError):
        return Unavailable(f"Redis is unavailable: {exc}")
    for errors, reported_as in ERROR_EXITS:
        if isinstance(exc, errors):
            return reported_as(str(exc))
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
