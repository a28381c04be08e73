"""What every command shares: logging on stderr (-v/-q), confirmation (--yes), the options every
command takes (--url, --prefix, --own-prefix, --source, --target, --allow-eviction) and printing
a result as text or JSON."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TextIO

import click

from ..errors import ConfigError
from .errors import NotConfirmed
from .progress import ProgressPrinter

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


# -- output --------------------------------------------------------------------------------------


def emit(data: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)
