"""What the migrate commands print: the meaning of each outcome a pass counts, ``migrate
status``'s, ``migrate plan``'s and ``migrate verify``'s text reports."""

from __future__ import annotations

import time

from .progress import short_counts


def migration_label(migration) -> str:
    return migration.label


# What each outcome a pass counts means, by pass ('from' is the side scanned); progress lines and
# summaries print these words instead of the bare outcome names.
OUTCOMES = {
    "backfill": {
        "copied": "source records the target lacked, copied to it",
        "refreshed": "target copies that had missed writes, brought up to date",
        "exists": "already in the target (nothing to do)",
    },
    "reverse-sync": {
        "copied": "target records the source lacked, copied to it",
        "copied-back": "source copies missing from the target, copied to it",
        "merged": "both copies differed: merged (newer values win) and written to both",
        "same": "identical on both sides (nothing to do)",
        "foreign": "the source layout holds another workspace's job under that id: could not "
                   "be written back (leaving target-only stays refused while there are any)",
    },
    "cleanup": {
        "deleted": "source records the target holds too, deleted",
        "kept": "source records whose target copy differs or is missing, kept",
        "foreign": "source records of another workspace than their target key's, kept",
    },
    "*": {
        "gone": "deleted by the service while the pass ran (nothing to do)",
        "foreign": "held by another workspace's job on the other side (left alone)",
        "unroutable": "records without a usable workspace_id (cannot be placed; left alone)",
        "not_a_record": "keys that are not hashes (skipped)",
        "error": "records Redis refused to process (see its log; left alone)",
        "rescans": "scans started again after the server changed",
    },
}


def outcome_meaning(step: str, outcome: str) -> str:
    return OUTCOMES.get(step, {}).get(outcome) or OUTCOMES["*"].get(outcome) or outcome


def utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def status_lines(migration, status: dict) -> list[str]:
    """``migrate status``'s text: the phase, who reads what, the verify evidence the gates
    weigh, what each neighbouring switch needs, the checkpoints and the log."""
    phase = status["phase"]
    if status["phase_stored"]:
        lines = [f"{migration_label(migration)}: phase {phase}"]
    else:
        lines = [f"{migration_label(migration)}: no phase stored yet; dual stores behave as "
                 f"{phase} (write both layouts, read the target first, then the source); "
                 "store one with: jobstore migrate phase off (or dual-write)"]
    rollout = status["rollout"]
    stored = (f"{rollout['percent']:g}% of workspaces  allow={rollout['allow']}  "
              f"deny={rollout['deny']}")
    if phase == "read-target":
        lines.append(f"read rollout: {rollout['percent']:g}% of workspaces read the target first  "
                     f"allow={rollout['allow']}  deny={rollout['deny']}")
    elif phase == "target-only":
        lines.append("reads: every workspace reads the target")
    else:
        default = rollout["percent"] >= 100 and not rollout["allow"] and not rollout["deny"]
        lines.append(f"reads: every workspace reads the source (phase {phase})"
                     + ("" if default else f"; read rollout for read-target: {stored}"))
    if status["verified_clean_at"]:
        lines.append(f"last clean verify: started {utc(status['verified_clean_at'])}"
                     + ("" if status["verified"] else " (does not count: "
                        + ("it started before dual writes began)"
                           if status["verified_clean_at"] <= (status["dual_since"] or 0)
                           or not status["dual_since"]
                           else "a verify that was not clean finished after it started)")))
    if status["verify_failed_at"]:
        lines.append(f"last verify that was not clean: finished {utc(status['verify_failed_at'])}"
                     + (f" ({status['verify_failed_note']})" if status["verify_failed_note"] else ""))
    for target_phase, verdict in status["next"].items():
        lines.append(f"switch to {target_phase}: {verdict}")
    for part, checkpoint in status["checkpoints"].items():
        state = "finished" if checkpoint["finished"] else "in progress (resumable)"
        counts = checkpoint["counts"]
        lines.append(f"{part}: {state}; {checkpoint['scanned']} records scanned"
                     + (f"; {short_counts(counts)}" if counts else ""))
    for entry in status["log"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(entry.get("at", 0))))
        if entry.get("event") == "phase":
            what = f"phase {entry.get('from')} -> {entry.get('to')}" + (
                " FORCED" if entry.get("forced") else "")
        else:
            what = f"rollout {entry.get('percent', 0):g}%"
        why = f" ({entry['reason']})" if entry.get("reason") else ""
        lines.append(f"log: {when} UTC  {what}{why}")
    return lines


SET_ASIDE_OUTCOMES = {
    "set-aside": "records without a usable workspace_id, moved aside whole (--list shows them)",
    "routable": "records that named a usable workspace by the time they were moved (left)",
    "busy": "the place to move them to held another record (left; run set-aside again)",
}


# How verify's text report explains each count: (field, label, meaning, expected in target-only).
VERIFY_COUNTS = (
    ("same", "same", "source records whose target copy is identical", None),
    ("missing", "missing", "source records with no target copy (backfill or --repair copies them)",
     False),
    ("differing", "differing", "source records whose target copy differs, in its fields or "
     "its expiry (--repair merges them)", False),
    ("target_newer", "target newer", "target copies that moved on after the source stopped "
     "being written", True),
    ("orphaned", "orphaned", "target records with no source record (left when cleanup deleted "
     "the source copy, or written since target-only)", True),
    ("unroutable", "unroutable", "source records without a usable workspace_id (give them "
     "one, or jobstore migrate set-aside moves them out of the way, kept whole)", False),
)


def verify_lines(migration, report, repair: bool) -> list[str]:
    """verify's text report: every count with what it means, and whether it is a problem."""
    from ..migration import plural
    from ..phases import Phase

    only_target = Phase(report.phase) is Phase.TARGET_ONLY
    lines = [
        f"verify of {migration_label(migration)} in phase {report.phase}"
        + (" (sample)" if report.sampled else "")
        + f": {report.checked_source} {migration.source.name} (source) and "
        f"{report.checked_target} {migration.target.name} (target) records checked "
        f"in {report.seconds:.1f}s"
    ]
    width = max(len(f"{label} {getattr(report, name)}") for name, label, _, _ in VERIFY_COUNTS)
    for name, label, meaning, expected_when_target_only in VERIFY_COUNTS:
        n = getattr(report, name)
        if expected_when_target_only is None:
            verdict = ""
        elif expected_when_target_only and only_target:
            verdict = " - expected in target-only, not a problem"
        else:
            verdict = " - a problem" if n else ""
        lines.append(f"  {f'{label} {n}':<{width}}  {meaning}{verdict}")
    if report.not_records:
        lines.append(f"  not records {report.not_records}  keys of another type in a layout's "
                     "namespace (skipped, not a problem)")
    lines += [f"  {note}" for note in report.notes]
    if repair:
        lines.append(f"  repaired {report.repaired}; run verify again to confirm")
    for kind, items in report.examples.items():
        if only_target and kind in ("orphaned", "target_newer"):
            continue  # expected there: not listed as problems
        for item in items:
            copy = f"; its target copy: {item['other_key']}" if kind == "unroutable" and \
                item.get("other_key") else ""
            lines.append(f"  {kind}: {item['key']} ({', '.join(item['fields'])}{copy})")
    shown = sum(len(items) for kind, items in report.examples.items()
                if not (only_target and kind in ("orphaned", "target_newer")))
    if shown < report.problems:
        lines.append(f"  ({shown} of {plural(report.problems, 'problem')} listed; --examples N "
                     "lists up to N of each kind)")
    found = plural(report.problems, "problem")
    if report.interrupted:
        lines.append(f"not clean: interrupted before it checked every key ({found} found so far)")
    elif report.clean:
        lines.append("clean: no problems" + (
            " (orphaned and target-newer records are expected in target-only)"
            if only_target and (report.orphaned or report.target_newer) else ""))
    elif not report.complete:
        lines.append(f"not clean: the scan could not vouch for every key ({found} found)")
    else:
        lines.append(f"not clean: {found}")
    return lines


def size(n: float | None) -> str:
    """``12.3 MB``: bytes for people (powers of 1024); ``?`` when unknown."""
    from ..migration.reports import human_size

    return "?" if n is None else human_size(n)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "not timed"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def plan_lines(migration, report) -> list[str]:
    """``migrate plan``'s text: what to copy, the memory each server needs, how long."""
    lines = [f"plan of {migration_label(migration)} ({report.seconds:.1f}s, nothing written)",
             f"  records to copy  {report.records} {report.source} records, about "
             f"{size(report.target_bytes)} as {report.target} copies "
             f"({report.bytes_per_record:.0f} B each; memory of {report.sampled} sampled)"]
    if report.unroutable:
        lines.append(f"  unroutable       about {report.unroutable} records without a usable "
                     "workspace_id (no pass copies them; jobstore migrate set-aside)")
    exact = "" if report.workspaces_exact else "about "
    if report.top_workspaces:
        lines.append(f"  workspaces       {exact}{report.workspaces}; the largest: " + ", ".join(
            f"{w['workspace_id']} {exact}{w['records']}" for w in report.top_workspaces))
    lines.append(f"  extra memory     about {size(report.extra_memory)} while both layouts are "
                 f"held (dual-write to cleanup); fits: {'yes' if report.fits else 'NO'} "
                 f"(margin {report.margin:.0%})")
    for node in report.nodes:
        limit = "no maxmemory" if not node.maxmemory else f"maxmemory {size(node.maxmemory)}"
        slots = f", {node.slots} slots" if report.cluster else ""
        lines.append(f"    {node.node}: {node.target_records} target records{slots}, "
                     f"+{size(node.target_bytes)}; uses {size(node.used_memory)}, after "
                     f"{size(node.after)}, {limit}" + ("" if node.fits else "  DOES NOT FIT"))
    rate = f"at --rate {report.rate:g}" if report.rate else "unthrottled"
    lines.append(f"  backfill         {duration(report.backfill_seconds)} ({rate})")
    lines.append(f"  verify           {duration(report.verify_seconds)} (after the backfill)")
    if report.rates:
        lines.append("  measured here    " + ", ".join(
            f"{name} {value:g}/s" for name, value in report.rates.items()
            if name != "timed_records") + f" (over {report.rates['timed_records']:g} records)")
    lines += [f"  {note}" for note in report.notes]
    if not report.fits:
        lines.append(report.refusal())
    return lines
