"""The ``hashtag`` schema: ``<prefix>:{<workspace_id>}:job:<job_id>``.

The braces make the workspace id a Redis Cluster hash tag, so every job of a workspace, and
jobstore's index of that workspace (``<prefix>:index:{<workspace_id>}``), share one slot.
"""

import jobstore


class HashTagSchema(jobstore.KeySchema):
    name = "hashtag"
    description = "workspace-scoped keys hash-tagged by workspace: <prefix>:{<workspace_id>}:job:<job_id>"
    key_format = "${prefix}:{${workspace_id}}:job:${job_id}"


@jobstore.hookimpl
def jobstore_register_schemas(register):
    register(HashTagSchema)
