"""The call builders (jobstore.ops.calls, jobstore.ops.migration_calls) agree with the scripts.

Each script file's header names its KEYS and ARGV by position (``KEYS[3] op marker``,
``ARGV[12 ..] field, value pairs``): a builder called with none of the repeated parts sends
exactly the header's fixed positions, so a position added, dropped or moved to the repeated
tail on one side only fails here. (Which argument sits at which position is what the operations'
own tests run against Redis.) FINISH, the join of an UPDATE_STATUS and a DEQUEUE call, is
checked against those two."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import jobstore
from jobstore import scripts
from jobstore.ops import calls, migration_calls
from jobstore.steps import Script

LUA_DIR = Path(jobstore.__file__).parent / "lua"
FENCE = ("{s}:state", "dual-write", "off")
POSITION = re.compile(r"\b(KEYS|ARGV)\[(\d+)(\]| *\.\.)")


def header(name: str) -> str:
    lines = []
    for line in (LUA_DIR / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def layout(name: str) -> dict[str, int]:
    """How many fixed positions of KEYS and ARGV the header of ``name`` names (up to the first
    repeated part ``[n ..]``), after the fence's for a fenced script."""
    text = header(name)
    fenced = text.startswith("-- Fenced")
    if fenced:  # the header's own lines name the fence's positions: past them
        text = text.split("the indices below are those left.", 1)[1]
    sizes = {}
    for kind in ("KEYS", "ARGV"):
        found = [(int(n), end != "]") for k, n, end in POSITION.findall(text) if k == kind]
        repeated = [n for n, more in found if more]
        fixed = [n for n, more in found if not more and (not repeated or n < min(repeated))]
        sizes[kind] = (min(repeated) - 1 if repeated else max(fixed, default=0)) + (
            (1 if kind == "KEYS" else 2) if fenced else 0)
    return sizes


UPDATE = dict(marker="m", records=(), leases=None, workspace_id="w", marker_ttl=60,
              allowed=("pending",), max_record_bytes=100, fields={})
DEQUEUE = dict(source="q", queue="q", marker="m", dead="d", leases="l", legacy_queue=None,
               queue_mode="qm", marker_ttl=60, now="1.0", scan=10, max_dead_letters=5,
               lease_ms=1000, max_attempts=3, token="t", iso="", finished_ttl_ms=None,
               schemas=())

# Each builder called with none of the repeated parts (records, pairs, spent markers, jobs).
SAMPLES: dict[str, Callable[[], Script]] = {
    "enqueue": lambda: calls.enqueue(FENCE, queue="q", legacy_queue=None, queue_mode="qm",
                                     jobs=()),
    "update_status": lambda: calls.update_status(FENCE, **UPDATE),  # type: ignore[arg-type]
    "dequeue": lambda: calls.dequeue(FENCE, spent=(), **DEQUEUE),  # type: ignore[arg-type]
    "delete": lambda: calls.delete(FENCE, tombstone="g", index="i", leases="l", records=(),
                                   workspace_id="w", marker_ttl=60, job_id="j", token="t"),
    "extend": lambda: calls.extend(FENCE, leases="l", records=(), claim="c", lease_ms=10,
                                   workspace_id="w"),
    "lease_list": lambda: calls.lease_list(leases="l", claim_list="c", stay_ms=10),
    "read_first": lambda: calls.read_first(records=(), workspace_id="w"),
    "prune_index": lambda: calls.prune_index(index="i", entries=()),
    "trim_dead": lambda: calls.trim_dead(dead="d", older_than_ms=1, most=2),
    "sweep_cursor": lambda: calls.sweep_cursor(cursor="s", start=()),
    "expire_finished": lambda: calls.expire_finished(record="r", workspace_id="w",
                                                     finished_ttl_ms=1),
    "expire_copy": lambda: calls.expire_copy(record="r", workspace_id="w", expiry=1),
    "leave_legacy_queue": lambda: calls.leave_legacy_queue(legacy_queue="lq", queue="q",
                                                           queue_mode="qm", most=1, templates=()),
    "create_record": lambda: calls.create_record(record="r", tombstone="g", token="t",
                                                 incarnation="w:1", fields={}),
    "push_once": lambda: calls.push_once(marker="m", queue="q", marker_ttl=60, entry="e"),
    "mirror": lambda: calls.mirror(marker="m", record="r", workspace_id="w", marker_ttl=60,
                                   expiry=None, fields={}),
    "delete_record": lambda: calls.delete_record(marker="m", record="r", tombstone="g",
                                                 workspace_id="w", marker_ttl=60, tomb_ttl=60,
                                                 stamps=()),
    "bury": lambda: calls.bury(marker="m", dead="d", marker_ttl=60, most=5, entry="e",
                               reason="r"),
    "arbitrate": lambda: calls.arbitrate(arbiter="a", claim="c", ttl=60),
    "lease_claim": lambda: calls.lease_claim(leases="l", claim="c", lease_ms=10),
    "take": lambda: calls.take(queue="q", claim_list="c", leases="l", marker="m", stay_ms=10,
                               most_expired=5),
    "took": lambda: calls.took(marker="m", claim_list="c", leases="l", marker_ttl=60, entry="e"),
    "return_claims": lambda: calls.return_claims(claim_list="c", queue="q", leases="l"),
    "set_state": lambda: migration_calls.set_state(state="s", log="g", phase="", since="",
                                                   entry="", failed_ticket="", fields={}),
    "verify_ticket": lambda: migration_calls.verify_ticket(state="s"),
    "record_verify_failed": lambda: migration_calls.record_verify_failed(state="s", finished=1.0,
                                                                         summary="x"),
    "set_aside": lambda: migration_calls.set_aside(record="r", aside="a", by_record=True,
                                                   dry_run=False),
    "restore_aside": lambda: migration_calls.restore_aside(aside="a", record="r"),
    "cleanup_record": lambda: migration_calls.cleanup_record(source="a", target="b",
                                                             workspace_id="w", dry_run=False),
    "sync_record": lambda: migration_calls.sync_record(from_key="a", to_key="b", index="i",
                                                       workspace_id="w", job_id="j", mode="copy",
                                                       dry_run=False, to_wins=True),
    "read_records": lambda: migration_calls.read_records(records=()),
    "copy_if_absent": lambda: migration_calls.copy_if_absent(
        record="r", tombstone="g", index="i", job_id="j", ttl_ms=0, add_to_index=False,
        created_at="1", workspace_id="w", fields={}),
    "write_if_unchanged": lambda: migration_calls.write_if_unchanged(record="r", action="write",
                                                                     ttl_ms=0, was={}, fields={}),
    "pass_batch": lambda: migration_calls.pass_batch(keys=(), mode="copy", dry_run=False,
                                                     authority="1", other_template="o",
                                                     index_template="i", scan_template="s"),
}


def test_every_script_has_one_builder() -> None:
    assert sorted([*SAMPLES, "finish"]) == sorted(s.name for s in scripts.ALL)
    for name in [*SAMPLES, "finish"]:
        module = calls if hasattr(calls, name) else migration_calls
        assert getattr(module, name).__doc__.startswith(f"jobstore/lua/{name}.lua")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_builder_sends_the_positions_its_script_header_names(name: str) -> None:
    call = SAMPLES[name]()
    assert call.lua is getattr(scripts, name.upper())
    assert {"KEYS": len(call.keys), "ARGV": len(call.args)} == layout(name)


def test_the_header_layout_reader() -> None:
    # A header whose tail repeats: the fixed part counts; a fenced one adds the fence's.
    assert layout("update_status") == {"KEYS": 2, "ARGV": 13}
    assert layout("bury") == {"KEYS": 2, "ARGV": 6}
    assert layout("return_claims") == {"KEYS": 3, "ARGV": 0}


def test_a_fenced_call_carries_its_fence_first() -> None:
    call = calls.delete(FENCE, tombstone="g", index="i", leases="l", records=("r",),
                        workspace_id="w", marker_ttl=60, job_id="j", token="t")
    assert call.keys[:2] == ("{s}:state", "g") and call.args[:3] == ("dual-write", "off", "w")
    assert calls.fence_of(call) == ("dual-write", "off", "{s}:state")
    unfenced = calls.delete(None, tombstone="g", index="i", leases="l", records=("r",),
                            workspace_id="w", marker_ttl=60, job_id="j", token="t")
    assert unfenced.keys[:2] == ("g", "g") and unfenced.args[:2] == ("", "")


def test_finish_joins_update_status_and_dequeue_as_its_header_says() -> None:
    # finish.lua: KEYS[1 .. n] update_status's (n: ARGV[1]), then dequeue's; ARGV[2] m, then
    # ARGV[3 .. m + 2] update_status's, then dequeue's (each after the one fence).
    move = calls.update_status(FENCE, **{**UPDATE, "records": ("r1", "r2"), "leases": "l",  # type: ignore[arg-type]
                                         "spent": ("s",), "fields": {"status": "completed"}})
    take = calls.dequeue(FENCE, spent=("s2",), **DEQUEUE)  # type: ignore[arg-type]
    joined = calls.finish(move, take)
    assert joined.lua is scripts.FINISH
    n, m = joined.args[2], joined.args[3]
    assert joined.keys[0] == FENCE[0] and joined.args[:2] == FENCE[1:]
    assert joined.keys[1:1 + n] == move.keys[1:] and joined.keys[1 + n:] == take.keys[1:]
    assert joined.args[4:4 + m] == move.args[2:] and joined.args[4 + m:] == take.args[2:]


def test_update_status_counts_what_follows_the_records() -> None:
    # ARGV[8]: how many KEYS follow the records (the leases and the spent markers; 0 on Cluster).
    standalone = calls.update_status(None, **{**UPDATE, "records": ("r",), "leases": "l",  # type: ignore[arg-type]
                                              "spent": ("s1", "s2")})
    assert standalone.keys[2:] == ("r", "l", "s1", "s2") and standalone.args[2 + 7] == 3
    cluster = calls.update_status(None, **{**UPDATE, "records": ("r",)})  # type: ignore[arg-type]
    assert cluster.keys[2:] == ("r",) and cluster.args[2 + 7] == 0
