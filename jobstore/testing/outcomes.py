"""The stores under test (:class:`Subject`, :class:`Migrating`), the outcome of an operation,
and the one failure the machines raise, :class:`Divergence`, with the helpers that word it."""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ..errors import JobExists, JobStoreError
from ..job import Job
from ..migration import Migration
from ..store import JobStore
from ..validation import ID_CLASS
from .draws import MAX_ID
from .flavours import Blocking
from .model import ModelJob, job_view

if TYPE_CHECKING:
    from ..aio import AsyncJobStore
    from ..migration.aio import AsyncMigration

# A store under test: a synchronous one, or an asyncio one driven through a loop.
Store = Union[JobStore, "Blocking[AsyncJobStore]"]
# The migration of a migrating store, of the same flavour.
StoreMigration = Union[Migration, "Blocking[AsyncMigration]"]


@dataclass
class Subject:
    """One store under test, and the creation time it gave each of its jobs."""

    name: str
    store: Store
    created: dict[tuple[str, str], float] = field(default_factory=dict)


# ``(kind, value)``: ``("ok", what the call returned)`` or ``("raised", the error)``.
Outcome = tuple[str, Any]
# A rule's own comparison of the model's result with a store's: ``(subject, the model's result,
# the store's, operation)``; it stops the run (:meth:`_Harness._diverged`) where they differ.
Check = Callable[[Subject, Any, Any, str], None]
# An item of a batch enqueue: ``(workspace_id, action, params, job_id)``.
Item = tuple[str, str, dict[str, Any] | None, str]


@dataclass
class Migrating(Subject):
    """A ``dual`` store whose phase the machine moves through :data:`MIGRATION_CYCLE`."""

    migration: StoreMigration = field(kw_only=True)
    prefix: str = ""
    source: str = "legacy"
    target: str = "workspace"
    phase: str = "off"
    step: int = 0
    laps: int = 0
    # Updates made in ``off`` after the target held records leave stale target copies, which
    # only ``verify --repair`` brings back in line (a backfill never overwrites).
    target_stale: bool = False
    reached: set[str] = field(default_factory=set)  # the cycle's steps this store went through


class Divergence(AssertionError):
    """A store did something other than what the model of the contract says, or a migration
    step did not do its job. Its message names the step, the store, the operation, what the
    model expected and what the store did.

    Every check of the machines raises it from one place, so Hypothesis takes every divergence
    for one failure and reports the shortest run it found, not each follow-on failure apart.
    """


def _outcome(call: Callable[[], Any], *, anything: bool = False) -> Outcome:
    """``("ok", result)`` or ``("raised", error)``: jobstore's errors, or with ``anything``
    every exception (a store that crashes is a store that differs from the model)."""
    try:
        return "ok", call()
    except JobStoreError as exc:
        return "raised", exc
    except Divergence:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the store's outcome
        if not anything:
            raise
        return "raised", exc


def _describe(outcome: Outcome) -> str:
    kind, value = outcome
    if kind == "raised":
        return f"raised {type(value).__name__}({value})"
    return f"returned {_views(value)!r}"


def _views(value: Any) -> Any:
    if isinstance(value, (Job, ModelJob)):
        return job_view(value)
    if isinstance(value, list):
        return [_views(v) for v in value]
    return value


def _error_details(exc: Exception) -> tuple[object, ...]:
    if isinstance(exc, JobExists):
        return (exc.job_ids, [job_view(j) for j in exc.created])
    for attrs in (("current", "requested"), ("argument",), ("job_id", "workspace_id")):
        if all(hasattr(exc, a) for a in attrs):
            return tuple(getattr(exc, a) for a in attrs)
    return ()


_LONG = re.compile(rf"[{ID_CLASS}]{{33,}}")


def _abbreviate(text: str) -> str:
    """``text`` with every run of id characters longer than 32 cut to its ends and its length:
    ids go up to 128 characters, and two of a run's ids differ only in their last one. The
    steps Hypothesis prints keep every value whole."""
    return _LONG.sub(lambda m: f"{m[0][:12]}…[{len(m[0])} chars]…{m[0][-6:]}", text)


def _unique_prefix() -> str:
    return f"jst{uuid.uuid4().hex[:10]}"


def _other_id(job_id: str, tag: str) -> str:
    """An id of one workspace's own for ``job_id`` (``tag`` tells workspaces apart), within
    ``MAX_ID`` characters: long ids keep a checksum of what was cut."""
    suffix = f".{tag}"
    if len(job_id) + len(suffix) > MAX_ID:
        job_id = f"{job_id[: MAX_ID - len(suffix) - 9]}.{zlib.crc32(job_id.encode()):08x}"
    return job_id + suffix
