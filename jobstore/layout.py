"""The keys a store keeps beside the job records, shared by every schema.

The queue and the per-workspace index do not depend on where records live, so a migration
between schemas never has to move them: a job queued under one schema is found under the next.
"""

from __future__ import annotations

# Namespaces under the prefix that belong to jobstore itself; no schema may put records there.
RESERVED_NAMESPACES = frozenset({"queue", "index", "op", "claim", "migration"})


class StoreKeys:
    """Builds every non-record key of one store (one prefix)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.queue = f"{prefix}:queue"

    def index(self, workspace_id: str) -> str:
        """Sorted set of a workspace's job ids, scored by ``created_at``.

        The workspace id is a hash tag so that, on Redis Cluster, it shares a slot with records
        of any schema that tags the workspace the same way.
        """
        return f"{self.prefix}:index:{{{workspace_id}}}"

    def op(self, token: str) -> str:
        """Short-lived marker that one write call (by its token) has been applied."""
        return f"{self.prefix}:op:{token}"

    def claim(self, token: str) -> str:
        """List a blocking dequeue moves its entry into before claiming the job."""
        return f"{self.prefix}:claim:{token}"

    def migration(self, source: str, target: str) -> str:
        """Hash holding the phase and progress of the source -> target migration."""
        return f"{self.prefix}:migration:{source}:{target}"

    def migration_part(self, source: str, target: str, part: str) -> str:
        """A migration's checkpoints and log: ``backfill``, ``cleanup``, ``log``..."""
        return f"{self.migration(source, target)}:{part}"

    @staticmethod
    def queue_entry(workspace_id: str, job_id: str) -> str:
        # Identifiers never contain ':', so the entry splits back unambiguously.
        return f"{workspace_id}:{job_id}"
