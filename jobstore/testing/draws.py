"""What the state machines draw: each run's pools of ids and the values of its operations.

Every run draws its pools from the whole identifier alphabet (:data:`ID_CHARS`, 1 to
:data:`MAX_ID` characters), always with two ids that differ only by case and two long ids that
differ only in their last character, so that a schema that folds case or truncates ids gives two
jobs one key.
"""

from __future__ import annotations

from hypothesis import strategies as st

from .. import validation
from ..job import JobStatus

ID_CHARS = validation.ID_CHARS
MAX_ID = validation.MAX_ID_LENGTH

# Until a run draws its own pools (its first step), and for machines that skip that step.
WORKSPACES = ("ws-a", "ws-b", "ws-c")
JOB_IDS = ("j0", "j1", "j2", "j3")


@st.composite
def _word(draw: st.DrawFn, max_size: int = 12) -> str:
    """A short id with at least one letter, so that its case twin differs from it."""
    letter = draw(st.sampled_from(ID_CHARS[:52]))
    before = draw(st.text(ID_CHARS, max_size=max_size // 2))
    return (before + letter + draw(st.text(ID_CHARS, max_size=max_size // 2)))[:max_size]


@st.composite
def _long_pair(draw: st.DrawFn) -> tuple[str, str]:
    """Two ids of ``MAX_ID`` characters that differ only in the last one: a schema that cuts
    ids anywhere short of ``MAX_ID`` gives both one key."""
    stem = (draw(_word(3)) * MAX_ID)[: MAX_ID - 1]
    first = draw(st.sampled_from(ID_CHARS))
    second = draw(st.sampled_from(ID_CHARS).filter(lambda c: c != first))
    return stem + first, stem + second


@st.composite
def workspace_pools(draw: st.DrawFn) -> tuple[str, str, str]:
    """Three workspaces: a word, the same word in the other case, and a third id; or, in about
    half the runs, a long id, its case twin, and a long id that differs from the first only in
    its last character."""
    if draw(st.booleans()):
        first, third = draw(_long_pair())
    else:
        first = draw(_word())
        third = draw(st.text(ID_CHARS, min_size=1, max_size=12))
    twin = first.swapcase()
    return first, twin, third if third not in (first, twin) else third + "_"


@st.composite
def job_id_pools(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """Four job ids: a word, its case twin, and two long ids that differ only in their last
    character."""
    word = draw(_word())
    return (word, word.swapcase(), *draw(_long_pair()))


# A run's own pools, drawn in its first step (``_Harness.draw_ids``).
workspaces = st.runner().flatmap(lambda machine: st.sampled_from(machine.workspaces))
pool_ids = st.runner().flatmap(lambda machine: st.sampled_from(machine.job_ids))
statuses = st.sampled_from(tuple(JobStatus))
actions = st.sampled_from(("summarise", "embed", "résumé ✓", "a" * 256))
_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text("aé☃ \"\\{}:*", max_size=4)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text("ab", max_size=2), inner, max_size=2),
    max_leaves=4,
)
params_values = st.none() | st.dictionaries(st.text("abk{:", max_size=3), json_values, max_size=2)
results = st.none() | json_values  # None: leave the result unchanged
errors = st.none() | st.sampled_from(("", "boom", "timed out after 30 s", "ünïcode ✗"))
limits = st.sampled_from((1, 2, 3, 100))
