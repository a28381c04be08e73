"""``legacy``: the flat layout of the system being migrated, ``<prefix>:jobs:<job_id>``."""

from ..hookspecs import hookimpl
from ..schema import KeySchema


class LegacySchema(KeySchema):
    name = "legacy"
    description = "flat keys <prefix>:jobs:<job_id>; one id per store, workspace kept in the record"
    key_format = "${prefix}:jobs:${job_id}"


@hookimpl
def jobstore_register_schemas(register):
    register(LegacySchema)
