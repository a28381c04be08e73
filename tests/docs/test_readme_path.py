"""The README's migration path works exactly as written.

The bash block under "## Migrate, with traffic flowing" is read from README.md at test time and
its lines are run verbatim, one by one, through bash, with the venv's ``jobstore`` first on
PATH, against a private redis-server, while a ``dual`` store serves live traffic. Every command
must exit 0; afterwards every job must be readable from the target layout with its latest
status, and no legacy record may be left.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import jobstore
from jobstore.phases import Phase

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Migrate, with traffic flowing"
EXPORT = re.compile(r"^export JOBSTORE_REDIS_URL=\S+(\s+#.*)?$")
WORKSPACES = [f"ws{n}" for n in range(6)]


def readme_block() -> list[str]:
    """The non-blank lines of the first ```bash block after HEADING, as written."""
    text = README.read_text()
    assert HEADING in text, f"README.md has no heading {HEADING!r}"
    after = text.split(HEADING, 1)[1]
    match = re.search(r"^```bash\n(.*?)^```", after, re.S | re.M)
    assert match, f"no ```bash block follows {HEADING!r} in README.md"
    # The block must belong to this section, not to a later one.
    assert "\n## " not in after[: match.start()], f"the bash block after {HEADING!r} is in another section"
    return [line for line in match.group(1).splitlines() if line.strip()]


def bash_env(url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTORE_")}
    environ.pop("BASH_ENV", None)  # nothing but the line itself runs
    environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environ.get("PATH", "")
    environ["JOBSTORE_REDIS_URL"] = url
    return environ


def run_line(line: str, environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=environ,
                          timeout=300)


def run_readme_block(url: str) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Run the README's block line by line; assert each line exits 0.

    The block starts with ``export JOBSTORE_REDIS_URL=redis://localhost:6379/0``: its only effect
    is to point every later line at a Redis. That Redis must be the test's own server, never
    whatever listens on localhost:6379, so that one line is not run: instead every later line
    runs in a bash whose environment already has ``JOBSTORE_REDIS_URL`` set to the test server
    (exactly what the export would have done, with the test's URL). Every other line is run
    verbatim, comments included, in README order.
    """
    lines = readme_block()
    exports = [n for n, line in enumerate(lines) if EXPORT.match(line)]
    assert exports == [0], f"expected the block to open with one 'export JOBSTORE_REDIS_URL=...': {lines}"
    commands = lines[1:]
    assert all("JOBSTORE_REDIS_URL" not in c and "--url" not in c for c in commands), commands
    # The path the checks below rely on; if the README drops a step, the test must say so.
    for needed in ("migrate phase dual-write", "migrate backfill", "migrate verify",
                   "migrate phase read-target", "migrate phase target-only", "migrate cleanup"):
        assert any(needed in c for c in commands), f"README block lacks '{needed}': {commands}"
    environ = bash_env(url)
    ran = []
    for line in commands:
        out = run_line(line, environ)
        assert out.returncode == 0, (
            f"README line exited {out.returncode}: {line}\n"
            f"--- stdout ---\n{out.stdout}\n--- stderr ---\n{out.stderr}"
        )
        ran.append((line, out))
    return ran


class Traffic(threading.Thread):
    """A service on ``dual``: enqueues, status updates (of seeded jobs too) and a few deletes,
    remembering each job's latest status."""

    def __init__(self, url: str, seeded: list[jobstore.Job]):
        super().__init__(daemon=True)
        self.store = jobstore.open(url, "dual")
        self.random = random.Random(10)
        self.truth: dict[str, tuple[str, str]] = {j.job_id: (j.workspace_id, j.status.value) for j in seeded}
        self.deleted: set[str] = set()
        self.enqueued = self.updated = 0
        self.phases: set[Phase] = set()  # the phases the store served traffic in
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.step()
                self.phases.add(self.store.strategy.phase)
                time.sleep(0.003)
        except BaseException as exc:  # re-raised by stop()
            self.error = exc

    def step(self) -> None:
        roll = self.random.random()
        if roll < 0.4:
            job = self.store.enqueue(self.random.choice(WORKSPACES), "live", {"n": self.enqueued})
            self.truth[job.job_id] = (job.workspace_id, job.status.value)
            self.enqueued += 1
            return
        open_jobs = [j for j, (_, s) in self.truth.items() if s in ("pending", "running")]
        if not open_jobs:
            return
        job_id = self.random.choice(open_jobs)
        ws, status = self.truth[job_id]
        if roll < 0.93:
            new = "running" if status == "pending" else self.random.choice(["completed", "failed"])
            job = self.store.update_status(job_id, new, workspace_id=ws,
                                           result={"by": "live"} if new == "completed" else None)
            assert job.status.value == new
            self.truth[job_id] = (ws, new)
            self.updated += 1
        else:
            assert self.store.delete(job_id, workspace_id=ws)
            del self.truth[job_id]
            self.deleted.add(job_id)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)
        self.store.close()
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("start", ["nothing stored", "phase off stored"])
def test_the_readme_migration_path_works_as_written(redis_url, start):
    legacy = jobstore.open(redis_url, "legacy")
    seeded = legacy.enqueue_many(
        [(WORKSPACES[n % len(WORKSPACES)], "seeded", {"n": n}) for n in range(300)])
    migration = jobstore.open_migration(redis_url)
    if start == "phase off stored":
        # As docs/migration.md, step 0, says: through the command line, before anything else.
        out = run_line("jobstore migrate phase off", bash_env(redis_url))
        assert out.returncode == 0, out.stderr
        assert migration.state().stored and migration.state().phase is Phase.OFF
    else:
        assert not migration.state().stored

    traffic = Traffic(redis_url, seeded)
    traffic.start()
    try:
        ran = run_readme_block(redis_url)
    finally:
        traffic.stop()

    assert migration.state().phase is Phase.TARGET_ONLY
    assert traffic.enqueued > 0 and traffic.updated > 0 and traffic.deleted
    # Traffic really flowed throughout: the store served it in every phase the block went through.
    assert {Phase.DUAL_WRITE, Phase.READ_TARGET, Phase.TARGET_ONLY} <= traffic.phases, traffic.phases
    for line, out in ran:
        if "migrate status" in line:  # the README's last word on the migration
            assert "phase target-only" in out.stdout, out.stdout

    target = jobstore.open(redis_url, "workspace")
    wrong = {}
    for job_id, (ws, status) in traffic.truth.items():
        job = target.get(job_id, workspace_id=ws)
        if job is None or job.status.value != status:
            wrong[job_id] = (ws, status, None if job is None else job.status.value)
    assert not wrong, f"{len(wrong)} of {len(traffic.truth)} jobs lost or stale in the target: " \
                      f"{dict(list(wrong.items())[:5])}"
    revived = [j for j in traffic.deleted if any(target.get(j, workspace_id=ws) for ws in WORKSPACES)]
    assert not revived
    left = list(legacy.client.scan_iter(match="ai:jobs:*", count=1000))
    assert left == [], f"{len(left)} legacy records left after cleanup: {left[:5]}"
    for store in (legacy, target):
        store.close()
