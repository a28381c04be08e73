"""BullMQ's side of benchmarks/peers.py: bullmq installed into a cache directory outside the
repository (``npm install``, once), and ``peers_bullmq.mjs`` run there with node, one process
per phase. The Redis server's numbers are read from Python around the node script's timed part
(it waits on stdin for the go); the node script times that part itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from peers_runners import Ctx, Skip, Window

HERE = Path(__file__).resolve().parent
PACKAGES = ("bullmq@6", "ioredis@5")  # BullMQ 6 leaves the Redis client to its user


_bullmq_ready: dict[Path, str | None] = {}


def bullmq_dir(cache_dir: Path) -> Path:
    """Install bullmq into ``cache_dir`` (once; never into the repository) and copy the phase
    script beside it. :class:`Skip` without node or npm, or when the install fails."""
    if cache_dir in _bullmq_ready:
        reason = _bullmq_ready[cache_dir]
        if reason:
            raise Skip(reason)
        return cache_dir
    reason = None
    if shutil.which("node") is None or shutil.which("npm") is None:
        reason = "node and npm are not on PATH"
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not all((cache_dir / "node_modules" / spec.split("@")[0] / "package.json").exists()
                   for spec in PACKAGES):
            if not (cache_dir / "package.json").exists():
                (cache_dir / "package.json").write_text('{"private": true}\n')
            proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                                   "--prefix", str(cache_dir), *PACKAGES],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                reason = f"npm install {' '.join(PACKAGES)} failed: {proc.stderr.strip()[-300:]}"
        if reason is None:
            shutil.copyfile(HERE / "peers_bullmq.mjs", cache_dir / "peers_bullmq.mjs")
    _bullmq_ready[cache_dir] = reason
    if reason:
        raise Skip(reason)
    return cache_dir


def bullmq_version(cache_dir: Path) -> str | None:
    try:
        return json.loads((cache_dir / "node_modules" / "bullmq" / "package.json").read_text())[
            "version"]
    except (OSError, ValueError, KeyError):
        return None


def bullmq(ctx: Ctx, w: Window, phase: str) -> None:
    """One phase: ``phase`` is peers.py's (the worker phases run the script's "worker")."""
    phase = "worker" if phase.startswith("worker") else phase
    where = bullmq_dir(ctx.cache_dir)
    proc = subprocess.Popen(["node", "peers_bullmq.mjs", ctx.url, phase, str(ctx.n),
                             str(ctx.concurrency)], cwd=where, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError(f"node peers_bullmq.mjs {phase}: not ready ({line!r})")
        w.begin()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if proc.wait(timeout=120) != 0 or not line:
            raise RuntimeError(f"node peers_bullmq.mjs {phase} exited {proc.returncode}")
        outcome = json.loads(line)
        w.end(int(outcome["done"]), seconds=float(outcome["seconds"]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
