"""The Python examples of the docs run as written (against an embedded store, or the private
redis-server of the suite where the example names a Redis URL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks(path: str) -> list[str]:
    return BLOCK.findall((ROOT / path).read_text())


API = [b for b in blocks("docs/api.md") if "memory://" in b]


@pytest.mark.parametrize("code", API, ids=[f"api-{i}" for i in range(len(API))])
def test_api_examples_run(code):
    exec(compile(code, "docs/api.md", "exec"), {})


SCHEMAS = [b for b in blocks("docs/schemas.md") if "memory://" in b]


@pytest.mark.parametrize("code", SCHEMAS, ids=[f"schemas-{i}" for i in range(len(SCHEMAS))])
def test_schemas_examples_run(code):
    """docs/schemas.md shows the keys and records a store writes: they must be what it writes."""
    exec(compile(code, "docs/schemas.md", "exec"), {})


def test_the_readme_use_example_runs(redis_url):
    (code,) = [b for b in blocks("README.md") if "jobstore.open(" in b and "dequeue" in b]
    code = code.replace("redis://localhost:6379/0", redis_url)
    exec(compile(code, "README.md", "exec"), {})


RETENTION = [b for b in blocks("docs/retention.md") if "memory://" in b]


@pytest.mark.parametrize("code", RETENTION, ids=[f"retention-{i}" for i in range(len(RETENTION))])
def test_retention_examples_run(code):
    exec(compile(code, "docs/retention.md", "exec"), {})


def test_there_are_examples():
    assert len(API) >= 5


ASYNC = blocks("docs/async.md")


@pytest.mark.parametrize("code", [b for b in ASYNC if "FastAPI" not in b],
                         ids=lambda code: "async")
def test_async_examples_run(code):
    exec(compile(code, "docs/async.md", "exec"), {})


def test_the_async_web_example_serves(tmp_path):
    pytest.importorskip("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")
    (code,) = [b for b in ASYNC if "FastAPI" in b]
    space: dict = {}
    exec(compile(code, "docs/async.md", "exec"), space)
    with testclient.TestClient(space["make_app"]()) as client:
        made = client.post("/workspaces/acme/jobs", params={"action": "a"}).json()
        assert made["status"] == "pending"
        read = client.get(f"/workspaces/acme/jobs/{made['job_id']}").json()
        assert read == made
