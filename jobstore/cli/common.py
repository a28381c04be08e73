"""What every command shares: logging on stderr (-v/-q), confirmation (--yes), the options every
command takes (--url, --prefix, --own-prefix, --source, --target, --allow-eviction: built from
jobstore.config's option table) and printing a result as text or JSON."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import click

from .. import config
from ..errors import ConfigError
from .errors import NotConfirmed
from .progress import ProgressPrinter

F = TypeVar("F", bound=Callable[..., Any])

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


def store_option(name: str, **overrides: Any) -> Callable[[F], F]:
    """The click option of store option ``name``, as jobstore.config.OPTIONS declares it: its
    flag, help, default and the variable it reads (the one JobStore.from_env reads)."""
    option = config.OPTIONS[name]
    assert option.cli is not None, name
    kwargs: dict[str, Any] = {"help": option.doc}
    if option.default is None and option.default_doc and not overrides.get("required"):
        kwargs["help"] = f"{option.doc.rstrip('.')} (default: {option.default_doc})."
    if isinstance(option.default, bool):
        kwargs["is_flag"] = True
    elif option.default is not config.REQUIRED and option.default is not None:
        kwargs.update(default=option.default, show_default=True)
    if option.env and option.cli_env:
        kwargs.update(envvar=option.env, show_envvar=True)
    return click.option(option.cli, **{**kwargs, **overrides})


# The options every command takes, in the order --help lists them.
COMMON = ("url", "prefix", "own_prefix", "source", "target")
# The variables they read, named in jobstore --help.
COMMON_VARIABLES = ", ".join(config.env(name) for name in COMMON)


def common_options(func: F) -> F:
    """The options every command takes (COMMON)."""
    # The same environment a service's stores are configured by (JobStore.from_env), so that an
    # operator's shell that names a prefix or schemas acts on that migration, not on ai's.
    # --own-prefix is kept in the context (own_prefix()) rather than passed to every command.
    kept = {"own_prefix": {"expose_value": False, "callback": _keep_own_prefix}}
    for name in reversed(COMMON):
        func = store_option(name, **kept.get(name, {}))(func)
    return func


def _keep_own_prefix(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta["jobstore.own_prefix"] = value or None


def own_prefix() -> str | None:
    """The command's --own-prefix (JOBSTORE_OWN_PREFIX), None when not given."""
    return click.get_current_context().meta.get("jobstore.own_prefix")


def eviction_option(func: F) -> F:
    """``--allow-eviction``: run on a Redis whose maxmemory-policy is not noeviction."""
    return store_option("allow_eviction")(func)


def resolve_url(url: str | None, default: str | None = None) -> str:
    url = url or os.environ.get(config.env("url")) or default
    if not url:
        raise ConfigError(f"no Redis URL: pass {config.OPTIONS['url'].cli} or set {config.env('url')}")
    return url


# -- output --------------------------------------------------------------------------------------


def emit(data: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)
