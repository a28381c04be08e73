"""The call builders of the migration's scripts (the job operations' are jobstore.ops.calls):
one function per script, named after its file, taking named arguments and returning the
:class:`Script` step; the only Python that knows where each argument goes in KEYS and ARGV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..scripts import (CLEANUP_RECORD, COPY_IF_ABSENT, PASS_BATCH, READ_RECORDS,
                       RECORD_VERIFY_FAILED, RESTORE_ASIDE, SET_ASIDE, SET_STATE, SYNC_RECORD,
                       VERIFY_TICKET, WRITE_IF_UNCHANGED)
from ..steps import Script
from .calls import _pairs


def _bit(value: bool) -> str:
    return "1" if value else "0"


def set_state(*, state: str, log: str, phase: str, since: str, entry: str, failed_ticket: str,
              fields: Mapping[str, str]) -> Script:
    """jobstore/lua/set_state.lua: compare-and-set of the migration state (each of ``phase``,
    ``since``, ``failed_ticket``: what the decision was based on, '' any / none stored;
    ``entry``: the log entry's JSON, '' none)."""
    return Script(SET_STATE, (state, log), (phase, since, entry, failed_ticket, *_pairs(fields)))


def verify_ticket(*, state: str) -> Script:
    """jobstore/lua/verify_ticket.lua."""
    return Script(VERIFY_TICKET, (state,), ())


def record_verify_failed(*, state: str, finished: float, summary: str) -> Script:
    """jobstore/lua/record_verify_failed.lua."""
    return Script(RECORD_VERIFY_FAILED, (state,), (repr(finished), summary))


def set_aside(*, record: str, aside: str, by_record: bool, dry_run: bool) -> Script:
    """jobstore/lua/set_aside.lua (``by_record``: the record names its workspace, the key
    does not)."""
    return Script(SET_ASIDE, (record, aside), (_bit(by_record), _bit(dry_run)))


def restore_aside(*, aside: str, record: str) -> Script:
    """jobstore/lua/restore_aside.lua."""
    return Script(RESTORE_ASIDE, (aside, record), ())


def cleanup_record(*, source: str, target: str, workspace_id: str, dry_run: bool) -> Script:
    """jobstore/lua/cleanup_record.lua."""
    return Script(CLEANUP_RECORD, (source, target), (workspace_id, _bit(dry_run)))


def sync_record(*, from_key: str, to_key: str, index: str, workspace_id: str, job_id: str,
                mode: str, dry_run: bool, to_wins: bool) -> Script:
    """jobstore/lua/sync_record.lua."""
    return Script(SYNC_RECORD, (from_key, to_key, index),
                  (workspace_id, job_id, mode, _bit(dry_run), _bit(to_wins)))


def read_records(*, records: Sequence[str]) -> Script:
    """jobstore/lua/read_records.lua."""
    return Script(READ_RECORDS, tuple(records), ())


def copy_if_absent(*, record: str, tombstone: str, index: str, job_id: str, ttl_ms: int,
                   add_to_index: bool, created_at: str, workspace_id: str,
                   fields: Mapping[str, str]) -> Script:
    """jobstore/lua/copy_if_absent.lua (``index``: the workspace index, or any key of the
    record's slot when the index lives elsewhere)."""
    return Script(COPY_IF_ABSENT, (record, tombstone, index),
                  (job_id, ttl_ms, _bit(add_to_index), created_at, workspace_id,
                   *_pairs(fields)))


def write_if_unchanged(*, record: str, action: str, ttl_ms: int, was: Mapping[str, str],
                       fields: Mapping[str, str]) -> Script:
    """jobstore/lua/write_if_unchanged.lua (``action``: 'delete' | 'write')."""
    return Script(WRITE_IF_UNCHANGED, (record,),
                  (action, ttl_ms, len(was), *_pairs(was), *_pairs(fields)))


def pass_batch(*, keys: Sequence[str], mode: str, dry_run: bool, authority: str,
               other_template: str, index_template: str, scan_template: str,
               ids: Sequence[str] = ()) -> Script:
    """jobstore/lua/pass_batch.lua. ``scan_template``: '' for a computed schema, whose keys'
    ids follow in ``ids`` (workspace id, job id per key)."""
    return Script(PASS_BATCH, tuple(keys),
                  (mode, _bit(dry_run), authority, other_template, index_template, scan_template,
                   *ids))
