"""The operations, written once, without I/O.

Each operation is a generator. It yields steps (:data:`jobstore.steps.Step`): mostly a
:class:`Batch` (commands that go to Redis together, in one round trip), whose list of replies it
receives, and a :class:`Refresh` when a script found the routing state stale; it finally returns
its result. A driver (``JobStore._run`` today, an asyncio store tomorrow) does the network part,
so that no logic needs a second copy. Arguments are validated by the caller before an operation
starts. Operations read no clock themselves: the time comes from the context
(``Context.clock``, ``Context.timer``).

The modules:

- :mod:`.context`: :class:`Context`, ``Op``, the call tokens, the time as records store it;
- :mod:`.calls` and :mod:`.migration_calls`: one call builder per script, the only code that
  knows where each argument goes in a script's KEYS and ARGV;
- :mod:`.records`: reading records and the replies the scripts share;
- :mod:`.writes`: standalone enqueue, enqueue_many, update_status, delete;
- :mod:`.queue`: standalone dequeue and extend;
- :mod:`.reads`: get, list_jobs, dead_letters (standalone and Cluster alike);
- :mod:`.admin`: leave_legacy_queue;
- :mod:`.retention`: sweep, and the index prune ``list`` runs (docs/retention.md);
- :mod:`.finish`: finish, a worker's update and next claim (one script on standalone Redis);
- :mod:`.cluster`: the writes on Redis Cluster, one slot per script (its enqueue in
  :mod:`.cluster_enqueue`).

This package holds the standalone write operations under the names the store's ``_Writes``
protocol calls (``jobstore.ops.enqueue``...); ``jobstore.ops.cluster`` holds the same names for
Redis Cluster.
"""

from __future__ import annotations

from .admin import leave_legacy_queue
from .context import SPENT_PER_CALL, Context, Op, T, new_token, now, spent_markers
from .queue import dequeue, extend
from .reads import dead_letters, get, list_jobs
from .records import (addressed, as_record, corrupt, decode, fence, job_keys, owned, stale,
                      update_outcome)
from .writes import ENQUEUE_CHUNK, delete, enqueue, enqueue_many, queue_entry, update_status

__all__ = [
    "ENQUEUE_CHUNK", "SPENT_PER_CALL", "Context", "Op", "T", "addressed", "as_record", "corrupt",
    "dead_letters", "decode", "delete", "dequeue", "enqueue", "enqueue_many", "extend",
    "fence", "get", "job_keys", "leave_legacy_queue", "list_jobs", "new_token", "now",
    "owned", "queue_entry", "spent_markers", "stale", "update_outcome", "update_status",
]
