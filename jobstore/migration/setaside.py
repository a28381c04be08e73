"""Records no workspace can hold: set aside out of the source's namespace, listed, put back."""

from __future__ import annotations

import secrets
from typing import Any

from ..errors import InvalidArgument, MigrationRefused
from ..ops import Op
from ..schema import KeySchema
from ..ops import migration_calls
from ..steps import Batch, Command, Primaries, Scan
from .core import VERIFY_ATTEMPTS, MigrationCore, Progress, Run, _check_batch, _Counter, _short, log
from .reports import MAX_SET_ASIDE_LISTED, SetAsideReport


class SettingAside(MigrationCore):
    """Set-aside and its listing and restore (part of :class:`jobstore.migration.Migration`):
    each its checks and one operation (the public methods are the facades')."""

    def _call_set_aside(self, batch: int, dry_run: bool,
                        progress: Progress | None) -> Run[SetAsideReport]:
        _check_batch(batch)
        report, began = SetAsideReport("set-aside", dry_run=dry_run), list[float]()

        def op() -> Op[SetAsideReport]:
            yield from self._checked()
            stamp = f"{int((yield from self._now()) * 1000)}-{secrets.token_hex(3)}"
            began.append(self.timer())
            yield from self._set_aside(report, batch, dry_run, progress, stamp)
            report.seconds = self.timer() - began[0]
            log.info("%s: set-aside finished%s: %d records scanned in %.1fs; %s", self.label,
                     " (dry run)" if dry_run else "", report.scanned, report.seconds,
                     _short(report.counts))
            return report

        return Run(op(), self._interrupted(report, began))

    def _set_aside(self, report: SetAsideReport, batch: int, dry_run: bool,
                   progress: Progress | None, stamp: str) -> Op[None]:
        nodes: list[str | None] = yield Primaries()
        for node in nodes:
            name, cursor, first = node or "standalone", "0", None
            while True:
                server, cursor, keys = yield Scan(self.source.scan_pattern(), cursor, batch, node)
                if first is not None and server != first:
                    # a cursor means nothing to another server: scan it again (nothing is moved
                    # twice: what was set aside is no longer in the source)
                    self._rescanned(report, name, "the server changed while set-aside scanned it")
                    cursor = "0"
                    if report.rescans >= VERIFY_ATTEMPTS:
                        report.notes.append(f"{name}: gave up after {report.rescans} fresh "
                                            "starts; run set-aside again")
                        return
                first = server
                counted, lost = _Counter(), list[str]()
                placed = yield from self._place(self.source, self.target, keys, counted, lost)
                if counted.counts.get("not_a_record"):
                    report.add("not_a_record", counted.counts["not_a_record"])
                report.scanned += len(placed) + len(lost)
                if lost:
                    replies = yield Batch(tuple(
                        migration_calls.set_aside(
                            record=key, aside=self.keys.aside(key, stamp),
                            by_record=_ids(self.source, key)[0] is None, dry_run=dry_run)
                        for key in lost), tolerate_errors=True)
                    for key, reply in zip(lost, replies):
                        outcome = reply if isinstance(reply, str) else "error"
                        report.add(outcome)
                        if outcome == "set-aside" and len(report.moved) < MAX_SET_ASIDE_LISTED:
                            report.moved.append({"key": key, "to": self.keys.aside(key, stamp)})
                if progress:
                    progress("set-aside", report.scanned, None, dict(report.counts))
                if cursor == "0":
                    break

    def _call_set_aside_records(self) -> Run[list[dict[str, Any]]]:
        return Run(self._aside_records())

    def _aside_records(self) -> Op[list[dict[str, Any]]]:
        yield from self._checked()
        found: list[tuple[str, str, str]] = []
        nodes: list[str | None] = yield Primaries()
        for node in nodes:
            cursor = "0"
            while True:
                _, cursor, keys = yield Scan(f"{self.keys.prefix}:migration:aside:*", cursor,
                                             500, node)
                found += [(key, *parts) for key in keys
                          if (parts := self.keys.aside_parts(key)) is not None]
                if cursor == "0":
                    break
        unique = sorted(set(found), key=lambda item: (item[1], item[0]))
        owners = (yield Batch(tuple(Command(("HGET", key, "workspace_id")) for key, _, _ in unique),
                              tolerate_errors=True)) if unique else []
        out = []
        for (key, stamp, record_key), owner in zip(unique, owners):
            at = stamp.split("-", 1)[0]
            out.append({"key": key, "record_key": record_key,
                        "set_aside_at": int(at) / 1000 if at.isdigit() else None,
                        "workspace_id": owner if isinstance(owner, str) else None})
        return out

    def _call_restore_aside(self, key: str) -> Run[str]:
        parts = self.keys.aside_parts(key) if isinstance(key, str) else None
        if parts is None or not self.source.parse_key(parts[1]):
            raise InvalidArgument("key", f"{key!r} is not a key set aside from the "
                                  f"{self.source.name} records of this migration "
                                  "(jobstore migrate set-aside --list shows them)")

        def op() -> Op[str]:
            yield from self._checked()
            (outcome,) = yield Batch((migration_calls.restore_aside(aside=key, record=parts[1]),))
            if outcome == "occupied":
                raise MigrationRefused(f"{parts[1]} holds a record again; {key} was left as it is")
            if outcome == "absent":
                raise MigrationRefused(f"nothing is set aside at {key}")
            log.info("%s: %s put back at %s (%s)", self.label, key, parts[1], outcome)
            return str(outcome)

        return Run(op())


def _ids(schema: KeySchema, key: str) -> tuple[str | None, str]:
    ids = schema.parse_key(key)
    assert ids is not None, "a key the scan matched and _place placed"
    return ids
