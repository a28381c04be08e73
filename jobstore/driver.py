"""The one place that talks to Redis synchronously: runs operations (generators of steps).

An asyncio driver would mirror this file and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from .errors import RedisCommandError, StoreUnavailable
from .scripts import ALL as ALL_SCRIPTS
from .connection import is_cluster
from .steps import Command, Pause, Primaries, Refresh, Script

# redis-py raises these when the server cannot serve us; a caller sees StoreUnavailable.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterError,  # cluster down, a primary down
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    OSError,
)


class SyncDriver:
    """Sends each batch an operation yields in one round trip and hands back the replies."""

    def __init__(self, client, strategy, label: str, events=None):
        """``strategy``: whose routing state to keep fresh (None: a driver for admin passes).
        ``events``: told the phase each time the state is read."""
        self.client = client
        self.strategy = strategy
        self.label = label
        self.events = events
        self.cluster = is_cluster(client)
        self._scripts = {lua.name: client.register_script(lua.source) for lua in ALL_SCRIPTS}

    def run(self, op) -> Any:
        try:
            self._refresh_overdue_state()
            step = next(op)
            while True:
                step = op.send(self._do(step))
        except StopIteration as done:
            return done.value
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis at {self.label} is unavailable: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            raise RedisCommandError(f"Redis at {self.label} refused a command: {exc}") from exc

    def _state_request(self, force: bool = False):
        if self.strategy is None:
            return None
        return self.strategy.state_request(time.monotonic(), force)

    def _refresh_overdue_state(self) -> None:
        # Routing is decided when the operation starts, so a state too old to trust is read first.
        request = self._state_request()
        if request is not None and request[1]:
            (reply,) = self._send((request[0],))
            self._apply_state(reply)

    def _do(self, step) -> Any:
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            return None
        if isinstance(step, Primaries):
            if not self.cluster:
                return [None]
            return sorted(node.name for node in self.client.get_primaries())
        if isinstance(step, Refresh):
            request = self._state_request(force=True)
            if request is not None:
                (reply,) = self._send((request[0],))
                self._apply_state(reply)
            return None
        calls = step.calls
        # A state refresh that is due (but not overdue) rides along with this batch.
        request = self._state_request()
        if request is not None:
            replies = self._send((request[0], *calls))
            self._apply_state(replies[0])
            return replies[1:]
        return self._send(calls)

    def _apply_state(self, reply) -> None:
        self.strategy.apply_state(reply, time.monotonic())
        phase = self.strategy.describe().get("phase")
        if self.events is not None and phase:
            self.events.phase(getattr(self.strategy, "migration", self.strategy.name), phase)

    def _send(self, calls: tuple) -> list:
        if len(calls) == 1:
            return [_text(self._one(calls[0]))]
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for call in calls:
                if isinstance(call, Script):
                    # EVALSHA directly: a Script object would make redis-py send SCRIPT EXISTS
                    # first, a second round trip. A NOSCRIPT reply means nothing ran.
                    script = self._scripts[call.lua.name]
                    pipe.execute_command("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args)
                else:
                    pipe.execute_command(*call.args)
            replies = pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                self._load_scripts()
                # Re-sending is safe: reads repeat harmlessly and every write recognises itself.
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return [_text(r) for r in replies]
        raise AssertionError("unreachable")

    def _one(self, call: Command | Script) -> Any:
        if isinstance(call, Script):
            return self._scripts[call.lua.name](keys=call.keys, args=call.args, client=self.client)
        if call.node is not None and self.cluster:
            node = self.client.get_node(node_name=call.node)
            reply = self.client.execute_command(*call.args, target_nodes=node)
            if call.args[0] == "SCAN":  # the cluster client wraps the cursor as {node: cursor}
                cursors, keys = reply
                return [next(iter(cursors.values())), keys]
            return reply
        return self.client.execute_command(*call.args)

    def _load_scripts(self) -> None:
        for script in self._scripts.values():
            script.sha = self.client.script_load(script.script)


def _text(reply: Any) -> Any:
    """Replies as str whatever the client's ``decode_responses``."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [_text(r) for r in reply]
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    return reply
