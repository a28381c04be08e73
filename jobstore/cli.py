"""The ``jobstore`` command line. Exit codes: 0 success, 1 the check failed (e.g. verify found
differences), 2 usage or configuration error, 3 Redis unavailable."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from . import plugins
from .errors import ConfigError, JobStoreError, StoreUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def common_options(func):
    """The options every command takes."""
    func = click.option("--target", default=None, help="dual's target schema (default workspace).")(func)
    func = click.option("--source", default=None, help="dual's source schema (default legacy).")(func)
    func = click.option("--prefix", default="ai", show_default=True, help="Key prefix.")(func)
    func = click.option(
        "--url",
        default=None,
        help="Redis URL (default $JOBSTORE_REDIS_URL; memory:// for an embedded store).",
    )(func)
    return func


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
        except (ConfigError, ValueError) as exc:
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


def dual_options(source: str | None, target: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("source", source), ("target", target)) if v}


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
@common_options
@guarded
def demo_command(url, prefix, source, target) -> None:
    """Run a guided tour on an embedded store (or on --url)."""
    from .demo import run_demo

    run_demo(url or "memory://jobstore-demo", prefix=prefix, echo=click.echo, **dual_options(source, target))


if __name__ == "__main__":  # pragma: no cover
    main()
