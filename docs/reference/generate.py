"""What the pages of docs/reference/ are generated from: the option table (jobstore.config), the
``jobstore`` command tree (click) and the CLI's exit codes (jobstore.cli.errors).

Each page holds cog blocks that call these functions. Regenerate the pages after changing any of
them (tests/docs/test_reference_docs.py fails until then)::

    .venv/bin/cog -r -I docs/reference docs/reference/*.md
"""

from __future__ import annotations

import inspect

import click

from jobstore import config, errors
from jobstore.cli import errors as cli_errors
from jobstore.cli import main


def _text(text: str) -> str:
    """Help text as Markdown: ``<prefix>`` is not an HTML tag."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    """``text`` fit for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: object) -> str:
    return f"`{value}`"


def _default(option: config.Option) -> str:
    if option.default is config.REQUIRED:
        return "(required)"
    if option.default is None:
        return option.default_doc or "`None`"
    return _code(repr(option.default))


def configuration() -> str:
    """The table of every store option, and the variables' spellings."""
    rows = ["| option | variable | default | allowed | command line | what it is |",
            "|---|---|---|---|---|---|"]
    for option in config.OPTIONS.values():
        allowed = option.rule.must + (" or `None`" if option.none and option.rule.must else "")
        cli = ""
        if option.cli:
            cli = _code(option.cli) + ("" if option.cli_env or not option.env
                                       else " (does not read the variable)")
        what = option.doc + (f" {option.notes}" if option.notes else "")
        rows.append("| " + " | ".join(_cell(cell) for cell in (
            _code(option.name), _code(option.env) if option.env else "", _default(option),
            allowed, cli, what)) + " |")
    on = ", ".join(_code(word) for word, value in config.BOOL_VALUES.items() if value)
    off = ", ".join(_code(word) for word, value in config.BOOL_VALUES.items() if not value)
    legacy = ", ".join(f"`{value}` selects `{strategy}`"
                       for value, strategy in config.LEGACY_FLAG_VALUES.items())
    return "\n".join(rows) + f"""

A variable that says yes or no takes {on} for yes and {off} for no, in any case; any other value
is a `ConfigError` naming the variable. A number that cannot be read is one too.

`{config.LEGACY_FLAG}`, the migrated system's switch, is read only while
`{config.env("strategy")}` is unset: {legacy}; any other value (`ON` included: case matters) is
a `ConfigError` naming the variable and the values allowed.

{process_options()}"""


def process_options() -> str:
    """The table of the process's own variables (jobstore.config.PROCESS)."""
    rows = ["### The process's variables", "",
            "Settings of the whole process, not of a store: no option or flag sets them, and "
            "each is read where it is used, when it is needed.", "",
            "| variable | unset | values | read by |", "|---|---|---|---|"]
    for option in config.PROCESS.values():
        rows.append("| " + " | ".join(_cell(cell) for cell in (
            _code(option.env), option.unset, option.values, option.reader)) + " |")
    return "\n".join(rows) + "\n"


def _commands(command: click.Command, path: list[str],
              parent: click.Context | None = None) -> list[tuple[list[str], click.Context]]:
    """Every command under ``command`` (itself first), each with its context as running it
    makes one (the group's settings, such as -h, reach its subcommands)."""
    ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
    found = [(path, ctx)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found += _commands(command.commands[name], [*path, name], ctx)
    return found


def _anchor(path: list[str]) -> str:
    return "-".join(path)


def cli() -> str:
    """Every command of ``jobstore``: its usage, help, options (as --help shows them) and exit
    codes."""
    commands = _commands(main, ["jobstore"])
    out = ["Commands:", ""]
    out += [f"- [`{' '.join(path)}`](#{_anchor(path)})" for path, _ in commands]
    for path, ctx in commands:
        command = ctx.command
        out += ["", f"## {' '.join(path)}", "", "```text", f"Usage: {' '.join(path)} "
                + " ".join(command.collect_usage_pieces(ctx)), "```", ""]
        out.append(_text(inspect.cleandoc(command.help or "")).replace("\b\n", ""))
        records = [param.get_help_record(ctx) for param in command.get_params(ctx)]
        if any(records):
            out += ["", "| option | what it is |", "|---|---|"]
            out += [f"| `{_cell(flags)}` | {_text(_cell(text))} |"
                    for flags, text in filter(None, records)]
        if command.epilog:
            out += ["", "```text", command.epilog.replace("\b\n", "").strip("\n"), "```"]
    return "\n".join(out) + "\n"


def _error_classes() -> list[type[Exception]]:
    return sorted((value for value in vars(errors).values() if isinstance(value, type)
                   and issubclass(value, errors.JobStoreError)), key=lambda cls: cls.__name__)


def exit_codes() -> str:
    """The exit codes, what each means and the library errors that end a command with it."""
    by_code: dict[int, list[str]] = {}
    for cls in _error_classes():
        for caught, reported_as in cli_errors.ERROR_EXITS:
            if issubclass(cls, caught):
                by_code.setdefault(reported_as.exit_code, []).append(_code(cls.__name__))
                break
    by_code.setdefault(cli_errors.EXIT_USAGE, []).append("any other `ValueError`")
    by_code.setdefault(cli_errors.EXIT_UNAVAILABLE, []).append(
        "redis-py's " + ", ".join(_code(f"{cls.__module__}.{cls.__name__}")
                                  for cls in cli_errors.REDIS_DOWN))
    by_code.setdefault(cli_errors.EXIT_INTERRUPTED, []).append("`KeyboardInterrupt` (SIGTERM too)")
    rows = ["| code | meaning | raised as |", "|---|---|---|"]
    for code, meaning in cli_errors.EXIT_MEANINGS.items():
        rows.append(f"| {code} | {_cell(meaning)} | {', '.join(by_code.get(code, []))} |")
    return "\n".join(rows) + "\n"

