"""A claimed job reaches the client as the op marker's JSON text (Lua's cjson, read by Python's
json): whatever text a job holds comes back from dequeue and finish exactly as it was enqueued."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.aio import FLAVOURS

# Every character JSON has to escape or may leave raw: controls, NUL, quotes, backslashes, '/',
# U+2028/2029 (line separators to JavaScript), non-BMP characters, and the ASCII around them.
AWKWARD = st.text(st.characters(codec="utf-8") | st.sampled_from(
    ["\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "\u2029", "\U0001f600", "\ufeff"]),
    max_size=30)


@pytest.mark.parametrize("flavour", FLAVOURS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(AWKWARD, min_size=2, max_size=2),
       action=AWKWARD.filter(lambda a: a.isprintable() and a.strip()))
def test_dequeue_and_finish_hand_out_text_as_it_was_enqueued(backend, make_store, texts, action):
    if backend.startswith("redis+cluster://"):
        pytest.skip("a Cluster dequeue reads the record with HGETALL, not through the marker")
    store = make_store("legacy")
    store.client.flushdb()
    first = store.enqueue("ws", action, {"t": texts[0], texts[0]: [texts[1]]})
    second = store.enqueue("ws", action, {"t": texts[1]})
    taken = store.dequeue(timeout=0)
    assert (taken.job_id, taken.action, taken.params) == (first.job_id, action, first.params)
    following = store.finish(taken, result={"r": texts[1]})
    assert (following.job_id, following.action, following.params) == (
        second.job_id, action, second.params)
    assert store.get(taken.job_id, workspace_id="ws").result == {"r": texts[1]}
