"""The keys a store keeps beside the job records, shared by every schema.

The queue and the per-workspace index do not depend on where records live, so a migration
between schemas never has to move them: a job queued under one schema is found under the next.
"""

from __future__ import annotations

from collections.abc import Iterable

# Separates a queue entry from the record keys it carries (the unit separator, never in an id).
CARRIED = "\x1f"

# Namespaces under the prefix that belong to jobstore itself; no schema may put records there.
RESERVED_NAMESPACES = frozenset(
    {"queue", "index", "op", "claim", "claimed", "tomb", "migration", "dead", "leases"}
)


def slot_tag(key: str) -> str:
    """What Redis Cluster hashes for ``key``: its ``{...}`` hash tag, else the whole key.

    A key ``<ns>:{<slot_tag(k)>}:...`` always lands in the same slot as ``k``.
    """
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class StoreKeys:
    """Builds every non-record key of one store, under ``prefix``: the store's ``own_prefix``,
    which is its key prefix unless named apart (docs/adopting.md)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.queue = f"{prefix}:queue"
        # Entries dequeue could not hand out (jobstore.dead_letters), in the queue's slot, so
        # that a script popping the queue or a claim list may write it, on a cluster too.
        self.dead = f"{prefix}:dead:{{{slot_tag(self.queue)}}}"
        # Claims held by workers, scored by when their lease runs out (Redis TIME, ms): members
        # are claims, '<token>:<queue entry>', and 'list:<claim list>' for a dequeue between its
        # move and its claim. In the queue's slot, so the scripts that pop the queue see it.
        self.leases = f"{prefix}:leases:{{{slot_tag(self.queue)}}}"
        # The compatible queue's mode (a store option names the queue): 'shared' while the
        # replaced system's producers and workers may use it, 'left' once its ids moved here.
        self.queue_mode = f"{prefix}:queue:mode"
        # Where a bounded sweep stopped, per primary, for the next one to resume (a hash:
        # jobstore/lua/sweep_cursor.lua); in the index namespace, outside the indexes' pattern.
        self.sweep = f"{prefix}:index:sweep"

    def holds(self, key: str) -> bool:
        """``key`` lies in one of jobstore's own namespaces (``<prefix>:queue...``, ...)."""
        head = f"{self.prefix}:"
        return key.startswith(head) and key[len(head):].split(":", 1)[0] in RESERVED_NAMESPACES

    def index(self, workspace_id: str) -> str:
        """Sorted set of a workspace's job ids, scored by ``created_at``.

        The workspace id is a hash tag so that, on Redis Cluster, it shares a slot with records
        of any schema that tags the workspace the same way.
        """
        return f"{self.prefix}:index:{{{workspace_id}}}"

    def op(self, token: str, near: str) -> str:
        """Short-lived marker that one write call (by its token) has been applied; in the slot
        of ``near``, the key the write's script is about."""
        return f"{self.prefix}:op:{{{slot_tag(near)}}}:{token}"

    def claim(self, token: str) -> str:
        """List a dequeue moves its entry into before claiming the job (the queue's slot)."""
        return f"{self.prefix}:claim:{{{slot_tag(self.queue)}}}:{token}"

    def claimed(self, workspace_id: str, job_id: str, stamp: str = "") -> str:
        """Redis Cluster only: who claimed a job, so that a duplicated queue entry cannot hand
        it out twice (the index's slot). ``stamp``: the job's ``created_at``, so that a job
        enqueued again under the id of a deleted one has an arbiter of its own."""
        suffix = f":{stamp}" if stamp else ""
        return f"{self.prefix}:claimed:{{{workspace_id}}}:{job_id}{suffix}"

    def gone(self, workspace_id: str, job_id: str) -> str:
        """Standalone: a deleted job's tombstone, for the op-marker ttl: the tokens of the
        calls that created and deleted its records (the index's slot). Record keys always
        start with the prefix, so this never looks like a :meth:`tomb` of a record."""
        return f"{self.prefix}:tomb:{{{workspace_id}}}:{job_id}"

    def tomb(self, record_key: str) -> str:
        """Redis Cluster only: a deleted record's tombstone, in the record's slot, so that a
        copy running beside the delete cannot bring the record back."""
        return f"{self.prefix}:tomb:{{{slot_tag(record_key)}}}:{record_key}"

    def aside(self, record_key: str, stamp: str) -> str:
        """Where ``jobstore migrate set-aside`` puts a record no workspace can hold: in the
        record's slot (one atomic rename, on a cluster too), outside every schema's namespace.
        ``stamp``: the set-aside run's (no ':'), so a key set aside twice keeps both records."""
        return f"{self.prefix}:migration:aside:{{{slot_tag(record_key)}}}:{stamp}:{record_key}"

    def aside_parts(self, key: str) -> tuple[str, str] | None:
        """``(stamp, record key)`` of a key :meth:`aside` made; None for any other key."""
        head = f"{self.prefix}:migration:aside:{{"
        if not key.startswith(head):
            return None
        tag, sep, rest = key[len(head):].partition("}:")
        stamp, sep2, record_key = rest.partition(":")
        if not sep or not sep2 or not stamp or not record_key or slot_tag(record_key) != tag:
            return None
        return stamp, record_key

    def migration(self, source: str, target: str) -> str:
        """Hash holding the phase of the source -> target migration (its parts share the slot)."""
        return f"{self.prefix}:migration:{{{source}:{target}}}"

    def migration_part(self, source: str, target: str, part: str) -> str:
        """A migration's checkpoints and log: ``backfill``, ``cleanup``, ``log``..."""
        return f"{self.migration(source, target)}:{part}"

    @staticmethod
    def queue_entry(workspace_id: str, job_id: str, stamp: str,
                    carried: Iterable[tuple[str, str]] = ()) -> str:
        """``workspace:job:stamp``; ``stamp`` is the record's ``created_at`` as stored.

        ``carried``: ``(schema name, record key)`` of the computed schemas the job is written
        to, appended as byte 31, ``name=key`` each, so that the dequeue script finds the records
        without computing a key (jobstore.schema).

        Identifiers never contain ':', so the entry splits back unambiguously. The stamp ties the
        entry to one record: when a job is deleted while still queued and a new job is enqueued
        under its id, the old entry no longer matches and is dropped, so the new job is
        dequeued in its own turn. Entries without a stamp (``workspace:job``, as written
        before 0.1) match any record of the id.
        """
        return f"{workspace_id}:{job_id}:{stamp}" + "".join(
            f"{CARRIED}{name}={key}" for name, key in carried)

    @staticmethod
    def entry_head(entry: str) -> str:
        """The entry without the record keys it carries: ``workspace:job:stamp`` (or a bare
        job id, or whatever else was pushed)."""
        return entry.partition(CARRIED)[0]

    @staticmethod
    def parse_queue_entry(entry: str) -> tuple[str, str, str]:
        """``(workspace_id, job_id, stamp)``; the stamp is "" for an entry without one."""
        workspace_id, _, rest = StoreKeys.entry_head(entry).partition(":")
        job_id, _, stamp = rest.partition(":")
        return workspace_id, job_id, stamp
