"""A test double of the queue class jobstore replaces (a service's ``SimpleQueue``),
written from its description, and the processes of a rolling deploy.

The replaced class writes each job with one ``HSET ai:jobs:<job_id>`` (and, with
``AI_JOBS_NEW_SCHEMA=on``, a second ``HSET ai:job:<workspace_id>:<job_id>``), times as ISO 8601
text, ``result`` as ``""``, then ``RPUSH``es the bare job id onto its queue list; its workers
``LPOP`` that list and update the record(s) with further ``HSET``s.

Run as ``python -m tests.support.old_queue <role> <url> <name> [options]``: each role loops until
the key ``rolling:stop:<name>`` exists, and logs what it did to Redis lists (``rolling:enqueued``,
``rolling:ran``), so that the test can check every job ran exactly once.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
import uuid

import redis

QUEUE = "simple:queue"


def iso_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()


class SimpleQueue:
    """The replaced queue class: flat keys, a list of bare ids, a module-level flag."""

    def __init__(self, client, new_schema: bool = False, queue: str = QUEUE):
        self.client = client
        self.new_schema = new_schema
        self.queue = queue

    def enqueue(self, workspace_id: str, action: str, params: dict) -> str:
        job_id = uuid.uuid4().hex
        record = {"job_id": job_id, "workspace_id": workspace_id, "action": action,
                  "status": "pending", "params": json.dumps(params), "result": "",
                  "created_at": iso_now()}
        self.client.hset(f"ai:jobs:{job_id}", mapping=record)
        if self.new_schema:
            self.client.hset(f"ai:job:{workspace_id}:{job_id}", mapping=record)
        self.client.rpush(self.queue, job_id)
        return job_id

    def dequeue(self) -> str | None:
        return self.client.lpop(self.queue)

    def update_status(self, job_id: str, status: str, workspace_id: str | None = None,
                      result: dict | None = None) -> None:
        fields = {"status": status, "updated_at": iso_now()}
        if result is not None:
            fields["result"] = json.dumps(result)
        self.client.hset(f"ai:jobs:{job_id}", mapping=fields)
        new_key = f"ai:job:{workspace_id}:{job_id}"
        if self.new_schema and workspace_id and self.client.exists(new_key):
            self.client.hset(new_key, mapping=fields)


def stopped(client, name: str) -> bool:
    return bool(client.exists(f"rolling:stop:{name}"))


def old_producer(url: str, name: str, new_schema: bool) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    queue = SimpleQueue(client, new_schema)
    n = 0
    while not stopped(client, name):
        job_id = queue.enqueue(f"ws{n % 4}", "render", {"n": n})
        client.rpush("rolling:enqueued", job_id)
        n += 1
        time.sleep(0.01)


def old_worker(url: str, name: str, new_schema: bool) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    queue = SimpleQueue(client, new_schema)
    while not stopped(client, name):
        job_id = queue.dequeue()
        if job_id is None:
            time.sleep(0.02)
            continue
        workspace_id = client.hget(f"ai:jobs:{job_id}", "workspace_id")
        if workspace_id is None:  # a job enqueued by jobstore in a phase without the old key
            client.rpush("rolling:unreadable", job_id)
            continue
        queue.update_status(job_id, "running", workspace_id)
        client.rpush("rolling:ran", f"old:{job_id}")
        queue.update_status(job_id, "completed", workspace_id, result={"by": name})


def new_producer(url: str, name: str) -> None:
    import jobstore

    client = redis.Redis.from_url(url, decode_responses=True)
    store = jobstore.open(url, "dual", legacy_queue=QUEUE)
    n = 0
    while not stopped(client, name):
        job = store.enqueue(f"ws{n % 4}", "render", {"n": n})
        client.rpush("rolling:enqueued", job.job_id)
        n += 1
        time.sleep(0.01)


def new_worker(url: str, name: str) -> None:
    import jobstore

    client = redis.Redis.from_url(url, decode_responses=True)
    store = jobstore.open(url, "dual", legacy_queue=QUEUE, lease=30)
    while not stopped(client, name):
        job = store.dequeue(timeout=0.2)
        if job is None:
            continue
        client.rpush("rolling:ran", f"new:{job.job_id}")
        store.update_status(job.job_id, "completed", workspace_id=job.workspace_id,
                            result={"by": name}, claim=job.claim)


ROLES = {"old-producer": old_producer, "old-worker": old_worker,
         "new-producer": new_producer, "new-worker": new_worker}

if __name__ == "__main__":
    role, url, name, *rest = sys.argv[1:]
    kwargs = {"new_schema": rest[0] == "on"} if role.startswith("old") else {}
    ROLES[role](url, name, **kwargs)
