"""``jobstore demo``: a guided tour of jobstore on an embedded (or given) Redis."""

from __future__ import annotations

from typing import Callable

from .store import open as open_store


def run_demo(url: str, *, prefix: str = "ai", echo: Callable[[str], None] = print, **dual) -> dict:
    """Walk through a legacy store, then dual writes and reads over the same data.

    Returns the numbers it printed, for tests.
    """
    legacy = open_store(url, "legacy", prefix=prefix)
    dual_store = open_store(url, "dual", prefix=prefix, **dual)
    ws, other = "acme", "globex"

    echo("1. A service on the legacy layout enqueues three jobs.")
    old = [legacy.enqueue(ws, "summarise", {"doc": n}) for n in range(3)]
    echo(f"   keys: {', '.join(sorted(legacy.strategy.schemas[0].job_key(ws, j.job_id) for j in old))}")

    echo("2. The service switches to 'dual': new jobs are written to both layouts at once.")
    new = dual_store.enqueue(ws, "translate", {"lang": "fr"})
    keys = [s.job_key(ws, new.job_id) for s in dual_store.strategy.schemas]
    echo(f"   one round trip wrote: {', '.join(keys)}")

    echo("3. Reads try the workspace layout first and fall back to the legacy record.")
    found = dual_store.get(old[0].job_id, workspace_id=ws)
    leaked = dual_store.get(old[0].job_id, workspace_id=other)
    echo(f"   {ws} reads its old job: {found is not None}; {other} reads it: {leaked is not None}")

    echo("4. Workers dequeue jobs from either era, oldest first, each exactly once.")
    done = 0
    while (job := dual_store.dequeue()) is not None:
        dual_store.update_status(job.job_id, "completed", workspace_id=ws, result={"ok": True})
        done += 1
    echo(f"   completed {done} jobs")

    listed = dual_store.list(ws, status="completed")
    echo(f"5. {ws} lists {len(listed)} completed jobs, newest first: {listed[0].action} ...")
    legacy.close()
    dual_store.close()
    return {"enqueued": len(old) + 1, "completed": done, "listed": len(listed), "leaked": leaked is not None}
