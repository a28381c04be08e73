"""``workspace``: workspace-scoped keys, ``<prefix>:job:<workspace_id>:<job_id>``."""

from ..hookspecs import hookimpl
from ..schema import KeySchema


class WorkspaceSchema(KeySchema):
    name = "workspace"
    description = "workspace-scoped keys <prefix>:job:<workspace_id>:<job_id>"
    key_format = "${prefix}:job:${workspace_id}:${job_id}"


@hookimpl
def jobstore_register_schemas(register):
    register(WorkspaceSchema)
