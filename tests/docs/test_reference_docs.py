"""The reference pages (docs/reference/) are what their sources generate, and every link of the
docs and the README leads somewhere.

docs/reference/configuration.md is generated from jobstore.config's option table, cli.md from
the ``jobstore`` command tree, exit-codes.md from the CLI's exit codes, by the cog blocks in each
page (docs/reference/generate.py). Regenerate them with
``.venv/bin/cog -r -I docs/reference docs/reference/*.md``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
PAGES = sorted(REFERENCE.glob("*.md"))
REGENERATE = "regenerate them: .venv/bin/cog -r -I docs/reference docs/reference/*.md"


def cog_check(directory: Path, pages: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "--check-fail-msg", REGENERATE,
         "-I", str(directory), *map(str, pages)],
        capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_reference_pages_are_what_their_sources_generate():
    assert {page.name for page in PAGES} >= {"configuration.md", "cli.md", "exit-codes.md"}
    for page in PAGES:
        assert "[[[cog" in page.read_text(), f"{page.name} has no cog block"
    out = cog_check(REFERENCE, PAGES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_check_fails_on_a_page_its_source_disagrees_with(tmp_path):
    """A page edited by hand (or a source changed without regenerating) fails the check."""
    shutil.copytree(REFERENCE, tmp_path / "reference")
    page = tmp_path / "reference" / "configuration.md"
    text = page.read_text()
    assert "| `JOBSTORE_LEASE` | `3600.0` |" in text
    page.write_text(text.replace("| `JOBSTORE_LEASE` | `3600.0` |", "| `JOBSTORE_LEASE` | `60` |"))
    out = cog_check(tmp_path / "reference", [page])
    assert out.returncode != 0 and "regenerate" in out.stdout + out.stderr


def test_the_generated_pages_hold_every_option_command_and_exit_code():
    from jobstore import config
    from jobstore.cli import EXIT_MEANINGS, main

    configuration = (REFERENCE / "configuration.md").read_text()
    for option in config.OPTIONS.values():
        assert f"| `{option.name}` |" in configuration
        assert option.env is None or f"| `{option.env}` |" in configuration
    assert config.LEGACY_FLAG in configuration
    cli = (REFERENCE / "cli.md").read_text()
    for name, command in main.commands.items():
        assert f"## jobstore {name}\n" in cli
        for param in command.params:
            assert all(f"`{flag}" in cli for flag in getattr(param, "opts", []))
    exits = (REFERENCE / "exit-codes.md").read_text()
    for code in EXIT_MEANINGS:
        assert f"\n| {code} | " in exits


# -- links -----------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (and its explicit ``<a id=...>``)."""
    found: set[str] = set(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))
    seen: dict[str, int] = {}
    for _, title in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


@pytest.mark.parametrize("page", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_link_leads_to_a_file_and_heading_that_exist(page):
    text = page.read_text()
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_the_link_check_sees_a_broken_anchor():
    assert "opening-a-store" in anchors("# Title\n\n## Opening a store\n")
    assert "codecs-how-params-and-result-are-stored" in anchors(
        "## Codecs: how `params` and `result` are stored\n")
    assert "x-1" in anchors("## x\n\n## x\n") and "nope" not in anchors("## x\n")


def test_both_open_functions_name_every_url_scheme():
    import jobstore
    import jobstore.aio
    from jobstore.urls import SCHEMES

    for opener in (jobstore.open, jobstore.aio.open):
        missing = [s for s in SCHEMES if f"``{s}://``" not in (opener.__doc__ or "")]
        assert not missing, f"{opener.__module__}.open's docstring omits {missing}"
