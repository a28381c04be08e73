"""The ``bucketed`` schema: a workspace's jobs in one of 16 buckets, computed from its id:
``<prefix>:tb:<crc32(workspace_id) % 16, 2 hex digits>:<workspace_id>:<job_id>``."""

import re
import zlib

import jobstore

ID = r"[A-Za-z0-9_.\-]{1,128}"


class BucketedSchema(jobstore.KeySchema):
    name = "bucketed"
    description = "workspace-scoped keys in 16 buckets: <prefix>:tb:<bucket>:<workspace_id>:<job_id>"

    def job_key(self, workspace_id, job_id):
        bucket = zlib.crc32(workspace_id.encode()) % 16
        return f"{self.prefix}:tb:{bucket:02x}:{workspace_id}:{job_id}"

    def parse_key(self, key):
        head = f"{self.prefix}:tb:"
        match = re.fullmatch(rf"[0-9a-f]{{2}}:({ID}):({ID})", key[len(head):]) if key.startswith(head) else None
        if match is None or self.job_key(*match.groups()) != key:  # the bucket must be its own
            return None
        return match.groups()

    def scan_pattern(self):
        return f"{self.prefix}:tb:*"


@jobstore.hookimpl
def jobstore_register_schemas(register):
    register(BucketedSchema)
