"""click's CliRunner with the CLI's stderr kept apart from its stdout, on every click the package
metadata allows: click 8.2 always keeps it apart (and took ``mix_stderr`` away), 8.1 only when
told ``mix_stderr=False``."""

from __future__ import annotations

import inspect

from click.testing import CliRunner


def cli_runner(**options) -> CliRunner:
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        options.setdefault("mix_stderr", False)
    return CliRunner(**options)
