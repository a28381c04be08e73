"""Differential test of jobstore.rules: the Python form and the Lua form
(``jobstore/lua/includes/rules.lua`` as included in ``SYNC_RECORD``, ``CLEANUP_RECORD``;
``MIRROR``'s status guard) get the same cases and must give the same outcomes and leave the same
records.

Standalone Redis decides in Lua, Redis Cluster in Python, so a case on which they disagree is a
job that a migration treats differently depending on the deployment. Every Lua case runs on the
embedded fakeredis (Lua 5.1 through lupa) and on a real redis-server.
"""

from __future__ import annotations

import itertools
import uuid

import fakeredis
import pytest
import redis
from hypothesis import given, settings, strategies as st

from jobstore import rules
from jobstore.scripts import CLEANUP_RECORD, LIBRARY, MIRROR, SYNC_RECORD

WS = "ws"
JOB = "job-1"
MODES = ("copy", "merge")
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
SYNC_OUTCOMES = {"copied", "refreshed", "copied-back", "merged", "same", "exists", "gone"}


# -- backends ----------------------------------------------------------------------------------

class Lua:
    """One Redis (fakeredis or real) with the scripts registered, and fresh keys on demand."""

    def __init__(self, client, examples: int):
        self.client = client
        self.examples = examples
        self.sync_script = client.register_script(SYNC_RECORD.source)
        self.cleanup_script = client.register_script(CLEANUP_RECORD.source)
        self.mirror_script = client.register_script(MIRROR.source)
        self._prefix = f"rules:{uuid.uuid4().hex[:8]}"
        self._count = itertools.count()

    def settings(self, test):
        return settings(max_examples=self.examples, deadline=None)(test)

    def keys(self, *names: str) -> list[str]:
        n = next(self._count)
        return [f"{self._prefix}:{n}:{name}" for name in names]

    def put(self, key: str, record: dict) -> None:
        if record:  # an empty record is an absent key (a hash has at least one field)
            self.client.hset(key, mapping=record)

    def get(self, key: str) -> dict:
        return self.client.hgetall(key)

    def sync(self, mode: str, source: dict, target: dict, dry_run: bool = False,
             prefer_to: bool = False):
        """Runs SYNC_RECORD on fresh keys holding the records: ``(outcome, from, to)`` after."""
        a, b, index = self.keys("from", "to", "index")
        self.put(a, source)
        self.put(b, target)
        outcome = self.sync_script(keys=[a, b, index], args=[WS, JOB, mode, "1" if dry_run else "0",
                                                             "1" if prefer_to else "0"])
        return outcome, self.get(a), self.get(b)

    def cleanup(self, source: dict, target: dict, dry_run: bool = False):
        a, b = self.keys("source", "target")
        self.put(a, source)
        self.put(b, target)
        outcome = self.cleanup_script(keys=[a, b], args=[WS, "1" if dry_run else "0"])
        return outcome, self.get(a), self.get(b)

    def mirror(self, record: dict, fields: dict):
        marker, key = self.keys("marker", "record")
        self.put(key, record)
        flat = [part for item in fields.items() for part in item]
        outcome = self.mirror_script(keys=[marker, key], args=[WS, 60, "", *flat])
        return outcome, self.get(key), self.client.exists(marker) == 1


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def lua(request):
    """The Lua form on an embedded fakeredis (200 examples) and on a real redis-server (100)."""
    if request.param == "fakeredis":
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        examples = 200
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        examples = 100
    yield Lua(client, examples)
    client.close()


# -- generated records -------------------------------------------------------------------------

# Write counts: small ones (ties are common), any count a Lua number (a double) holds exactly,
# leading zeros, and values that are not counts (they count 0 in both forms).
REVS = st.one_of(
    st.integers(0, 4).map(str),
    st.integers(0, 2**53).map(str),
    st.integers(0, 999).map(lambda n: f"{n:05d}"),
    st.sampled_from(["x", "-1", "1.5", "", " 1", "1 ", "+1", "1\n", "0x10", "1e3", "inf", "nan",
                     "-0", "1_000"]),
)
TEXT = st.sampled_from(["", "a", "b", "0", "é"]) | st.text(max_size=3)
STAMPS = st.sampled_from(["1700000000.5", "1700000001.25", "1", "0", "", "abc", "inf", "-2"])
FIELDS = {
    "job_id": st.sampled_from([JOB, "job-2"]),
    "status": st.sampled_from(STATUSES),
    "result": TEXT,
    "error": TEXT,
    "updated_at": STAMPS,
    "created_at": STAMPS,
    "extra": TEXT,  # a field jobstore does not know (another tool's, or a later version's)
    rules.REV: REVS,
}
NAMES = sorted(FIELDS)


@st.composite
def records(draw) -> dict:
    """A record of the workspace: ``workspace_id`` and any of the other fields."""
    present = draw(st.lists(st.sampled_from(NAMES), unique=True))
    return {"workspace_id": WS, **{name: draw(FIELDS[name]) for name in present}}


@st.composite
def pairs(draw) -> tuple[dict, dict]:
    """``(from, to)`` of one job, either possibly absent ({}); often related: the same content
    under other counts, or one edited (fields changed, dropped, added) from the other."""
    source = draw(records())
    relation = draw(st.sampled_from(["independent", "same", "edited", "edited"]))
    if relation == "independent":
        target = draw(records())
    else:
        target = dict(source)
        if relation == "edited":
            for name in draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=3)):
                if draw(st.booleans()):
                    target[name] = draw(FIELDS[name])
                else:
                    target.pop(name, None)
        choice = draw(st.sampled_from(["keep", "redraw", "drop"]))
        if choice == "redraw":
            target[rules.REV] = draw(REVS)
        elif choice == "drop":
            target.pop(rules.REV, None)
    if draw(st.booleans()):
        source, target = target, source
    absent = draw(st.sampled_from(["none"] * 5 + ["from", "to", "both"]))
    if absent in ("from", "both"):
        source = {}
    if absent in ("to", "both"):
        target = {}
    return source, target


@st.composite
def foreign(draw, record: dict) -> dict:
    """``record`` made another workspace's: its owner changed, emptied or dropped."""
    how = draw(st.sampled_from(["other", "empty", "drop"]))
    out = dict(record)
    if how == "drop" and len(out) > 1:
        del out["workspace_id"]
    else:
        out["workspace_id"] = "" if how == "empty" else "other"
    return out


# -- SYNC_RECORD vs decide_sync ----------------------------------------------------------------

def check_sync(lua: Lua, mode: str, source: dict, target: dict, prefer_to: bool = False):
    """Both forms on one case; they must agree. Returns ``(outcome, from, to)`` after the write."""
    expected, new_from, new_to = rules.decide_sync(mode, dict(source), dict(target), prefer_to)
    assert expected in SYNC_OUTCOMES

    # A dry run answers the same and writes nothing.
    outcome, from_after, to_after = lua.sync(mode, source, target, dry_run=True, prefer_to=prefer_to)
    assert (outcome, from_after, to_after) == (expected, source, target)

    outcome, from_after, to_after = lua.sync(mode, source, target, prefer_to=prefer_to)
    assert outcome == expected
    assert from_after == (source if new_from is None else new_from)
    assert to_after == (target if new_to is None else new_to)
    return outcome, from_after, to_after


def test_sync_record_matches_decide_sync(lua):
    @lua.settings
    @given(mode=st.sampled_from(MODES), pair=pairs(), prefer_to=st.booleans())
    def check(mode, pair, prefer_to):
        check_sync(lua, mode, *pair, prefer_to)

    check()


def test_sync_record_leaves_other_workspaces_records_alone(lua):
    @lua.settings
    @given(data=st.data(), mode=st.sampled_from(MODES), pair=pairs(),
           side=st.sampled_from(["from", "to", "both"]))
    def check(data, mode, pair, side):
        source, target = pair
        if not source and not target:
            source = {"workspace_id": WS}
        # Make a present side foreign (the side asked for if present, else the other one).
        if (side in ("from", "both") and source) or not target:
            source = data.draw(foreign(source))
        if (side in ("to", "both") and target) or not source:
            target = data.draw(foreign(target))
        for dry_run in (True, False):
            assert lua.sync(mode, source, target, dry_run=dry_run) == ("foreign", source, target)

    check()


# -- CLEANUP_RECORD vs same_record -------------------------------------------------------------

def test_cleanup_record_matches_same_record(lua):
    @lua.settings
    @given(data=st.data(), pair=pairs(), owners=st.sampled_from(["ws", "ws", "ws", "foreign-source",
                                                                 "foreign-target"]))
    def check(data, pair, owners):
        source, target = pair
        if owners == "foreign-source" and source:
            source = data.draw(foreign(source))
        if owners == "foreign-target" and target:
            target = data.draw(foreign(target))
        if not source:
            expected = "gone"
        elif source.get("workspace_id") != WS:
            expected = "foreign"
        elif not target or target.get("workspace_id") != WS:
            expected = "kept"
        else:
            # The rule: both copies owned by the workspace, the source present.
            expected = "deleted" if rules.same_record(dict(source), dict(target)) else "kept"

        assert lua.cleanup(source, target, dry_run=True) == (expected, source, target)
        assert lua.cleanup(source, target) == (
            expected, {} if expected == "deleted" else source, target)

    check()


def test_cleanup_deletes_a_source_whose_target_moved_on(lua):
    source = {"workspace_id": WS, "job_id": JOB, "status": "pending", "created_at": "1", "_rev": "1"}
    target = {**source, "status": "completed", "result": "r", "updated_at": "2", "_rev": "3"}
    assert rules.same_record(source, target)
    assert lua.cleanup(source, target) == ("deleted", {}, target)
    # ... but not one whose identity differs, nor one newer than the target.
    for other in ({**target, "created_at": "9"}, {**target, "_rev": "0"}):
        assert not rules.same_record(source, other)
        assert lua.cleanup(source, other) == ("kept", source, other)


# -- MIRROR's status guard vs moved_past -------------------------------------------------------

CURRENT = [*STATUSES, None, "", "unknown"]  # None: the record has no status field
MOVES = [*STATUSES, None, "unknown"]  # None: the mirrored fields carry no status


@pytest.mark.parametrize("current", CURRENT)
@pytest.mark.parametrize("new", MOVES)
def test_mirror_guard_matches_moved_past(lua, current, new):
    record = {"workspace_id": WS, "job_id": JOB, "result": "old", "_rev": "3"}
    if current is not None:
        record["status"] = current
    fields = {"result": "new", "updated_at": "5"}
    if new is not None:
        fields["status"] = new
    late = rules.moved_past(current, new)

    outcome, after, marked = lua.mirror(record, fields)

    if late:
        assert (outcome, after, marked) == ("newer", record, False)
    else:
        assert (outcome, after, marked) == ("done", {**record, **fields, "_rev": "4"}, True)


def test_mirror_guard_covers_every_status_order():
    # The rule itself, as the docs state it: pending < running < any terminal status.
    for current, new in itertools.product(STATUSES, STATUSES):
        assert rules.moved_past(current, new) == (
            rules.STATUS_RANK[current] >= rules.STATUS_RANK[new])
    assert not rules.moved_past(None, "pending")  # a copy without a status takes any move
    assert not rules.moved_past("completed", None)  # a move without a status is never late


def test_mirror_bumps_the_copys_own_count(lua):
    # Python has no form of this (only the scripts write), but the rule's count is the same:
    # one more than rules.rev() of the copy, for every count a Lua number holds exactly.
    @lua.settings
    @given(rev=REVS.filter(lambda rev: rules.rev({rules.REV: rev}) < 2**53))
    def check(rev):
        record = {"workspace_id": WS, "status": "pending", rules.REV: rev}
        outcome, after, _ = lua.mirror(record, {"status": "running"})
        assert (outcome, after[rules.REV]) == ("done", str(rules.rev(record) + 1))

    check()


def test_mirror_ignores_a_missing_or_foreign_record(lua):
    assert lua.mirror({}, {"status": "running"}) == ("missing", {}, False)
    other = {"workspace_id": "other", "status": "pending"}
    assert lua.mirror(other, {"status": "running"}) == ("missing", other, False)


# -- the rule, by example ----------------------------------------------------------------------

def test_copy_never_overwrites_a_newer_target(lua):
    source = {"workspace_id": WS, "job_id": JOB, "status": "running", "updated_at": "9", "_rev": "2"}
    target = {"workspace_id": WS, "job_id": JOB, "status": "completed", "result": "r",
              "updated_at": "1", "_rev": "5"}  # an older clock, a later history: still newer
    assert check_sync(lua, "copy", source, target) == ("exists", source, target)
    # Equal counts: the status further along wins (completed over running), whoever the
    # authority; with equal statuses, the copy the phase reads first.
    assert check_sync(lua, "copy", source, {**target, "_rev": "2"})[0] == "exists"
    same_status = {**target, "status": "running", "_rev": "2"}
    assert check_sync(lua, "copy", source, same_status, prefer_to=True)[0] == "exists"
    assert check_sync(lua, "copy", source, same_status)[0] == "refreshed"


def test_copy_refreshes_a_stale_target(lua):
    source = {"workspace_id": WS, "job_id": JOB, "status": "completed", "result": "r",
              "updated_at": "5", "_rev": "4"}
    target = {"workspace_id": WS, "job_id": JOB, "status": "running", "updated_at": "3",
              "extra": "only in the target", "_rev": "2"}
    outcome, from_after, to_after = check_sync(lua, "copy", source, target)
    assert outcome == "refreshed"
    assert from_after == source
    assert to_after == {**source, "extra": "only in the target"}


def test_copy_of_the_same_content_is_left_alone(lua):
    source = {"workspace_id": WS, "job_id": JOB, "status": "running", "_rev": "7"}
    target = {**source, "_rev": "2"}  # the same record, fewer writes counted: nothing to bring
    assert check_sync(lua, "copy", source, target) == ("exists", source, target)


@pytest.mark.parametrize(
    "from_rev, to_rev, winner",
    [("3", "1", "from"), ("1", "3", "to"), ("2", "2", "to"), (None, "1", "to"),
     ("1", None, "from"), (None, None, "to"), ("x", "0", "to"), ("0", "x", "to"),
     ("10", "9", "from"), ("9", "10", "to")],  # counts, not strings: '10' > '9'
)
def test_merge_takes_the_newer_side_and_ties_go_to_the_later_status(lua, from_rev, to_rev, winner):
    """Equal counts: 'to' is completed, 'from' running, so 'to' wins whatever the authority."""
    source = {"workspace_id": WS, "job_id": JOB, "status": "running", "result": "from's",
              "from_only": "f"}
    target = {"workspace_id": WS, "job_id": JOB, "status": "completed", "result": "to's",
              "to_only": "t"}
    if from_rev is not None:
        source[rules.REV] = from_rev
    if to_rev is not None:
        target[rules.REV] = to_rev
    won, lost = (source, target) if winner == "from" else (target, source)
    merged = {**lost, **won}

    assert check_sync(lua, "merge", source, target) == ("merged", merged, merged)
    assert merged["result"] == f"{winner}'s"
    assert merged["from_only"] == "f" and merged["to_only"] == "t"


@pytest.mark.parametrize("garbage", [None, "x", "-1", "1.5", ""])
def test_a_record_without_a_count_counts_zero(lua, garbage):
    source = {"workspace_id": WS, "job_id": JOB, "status": "running"}
    if garbage is not None:
        source[rules.REV] = garbage
    assert rules.rev(source) == 0
    target = {"workspace_id": WS, "job_id": JOB, "status": "completed"}  # no count: 0 too
    # 0 against 0: a tie, won by the status further along (the target's completed).
    assert check_sync(lua, "copy", source, target) == ("exists", source, target)
    assert check_sync(lua, "merge", source, target)[0] == "merged"
    assert check_sync(lua, "merge", source, target)[2]["status"] == "completed"
    # Equal statuses too: the side the phase reads first.
    mine, twin = {**source, "result": "s"}, {**target, "status": "running", "result": "t"}
    assert check_sync(lua, "merge", mine, twin, prefer_to=True)[2]["result"] == "t"
    assert check_sync(lua, "merge", mine, twin)[2]["result"] == "s"
    # Any count beats it, on either side.
    assert check_sync(lua, "copy", source, {**target, "_rev": "1"})[0] == "exists"
    assert check_sync(lua, "copy", {**source, "_rev": "1"}, target)[2]["status"] == "running"
    assert check_sync(lua, "merge", source, {**target, "_rev": "1"})[1]["status"] == "completed"


def test_missing_copies(lua):
    record = {"workspace_id": WS, "job_id": JOB, "status": "pending", "_rev": "1"}
    for mode in MODES:
        assert check_sync(lua, mode, record, {}) == ("copied", record, record)
        assert check_sync(lua, mode, {}, {}) == ("gone", {}, {})
    assert check_sync(lua, "copy", {}, record) == ("gone", {}, record)  # a copy never revives
    assert check_sync(lua, "merge", {}, record) == ("copied-back", record, record)


# -- counts as both forms read them: ASCII digits, at most 15 of them (exact as a Lua double) --

@pytest.mark.parametrize("newer_rev, older_rev", [
    ("9007199254740993", "9007199254740992"),  # too long to be a count: 0 in both forms
    ("100000000000000000001", "100000000000000000000"),
    ("\u0663", "1"),  # ARABIC-INDIC DIGIT THREE: not a count in either form
    ("\uff12", "1"),  # FULLWIDTH DIGIT TWO
    ("\u00b2", "1"),  # SUPERSCRIPT TWO (int() would fail on it)
    ("999999999999999", "999999999999998"),  # the largest counts taken: exact in both
])
def test_count_parsing_agrees(lua, newer_rev, older_rev):
    source = {"workspace_id": WS, "job_id": JOB, "status": "completed", "_rev": newer_rev}
    target = {"workspace_id": WS, "job_id": JOB, "status": "running", "_rev": older_rev}
    check_sync(lua, "copy", source, target)
    check_sync(lua, "merge", source, target)
    check_sync(lua, "merge", target, source)
    assert lua.cleanup(target, source)[0] == (
        "deleted" if rules.same_record(target, source) else "kept")


@pytest.mark.parametrize("rev, after", [(str(2**53), "1"), ("99999999999999999", "1"),
                                        ("999999999999998", "999999999999999")])
def test_mirror_bumps_a_large_count(lua, rev, after):
    """A value too long to be a count counts 0 (both forms), so the next write makes it 1."""
    record = {"workspace_id": WS, "status": "pending", rules.REV: rev}
    outcome, stored, _ = lua.mirror(record, {"status": "running"})
    assert (outcome, stored[rules.REV]) == ("done", after)
    assert rules.rev({rules.REV: stored[rules.REV]}) == rules.rev({rules.REV: rev}) + 1


def test_copy_of_a_record_whose_created_at_is_nan(lua):
    """The index score falls back to 0 (a NaN score made ZADD fail after the record was written)."""
    record = {"workspace_id": WS, "job_id": JOB, "created_at": "nan", "_rev": "1"}
    assert check_sync(lua, "copy", record, {}) == ("copied", record, record)


@pytest.mark.parametrize("current", ["pending", "running", "completed", None])
@pytest.mark.parametrize("new", ["running", "completed"])
@pytest.mark.parametrize("current_attempts", [None, "0", "1", "2", "x"])
@pytest.mark.parametrize("new_attempts", [None, "1", "2", "3"])
def test_mirror_guard_matches_moved_past_with_attempts(lua, current, new, current_attempts,
                                                       new_attempts):
    # A running job handed out again (its lease taken over) stays running: the later hand-out
    # is told by its higher attempt count, in both forms.
    record = {"workspace_id": WS, "job_id": JOB, "_rev": "3"}
    if current is not None:
        record["status"] = current
    if current_attempts is not None:
        record["attempts"] = current_attempts
    fields = {"status": new, "updated_at": "5"}
    if new_attempts is not None:
        fields["attempts"] = new_attempts
    from jobstore.job import count
    late = rules.moved_past(current, new, count(current_attempts),
                            None if new_attempts is None else count(new_attempts))

    outcome, after, marked = lua.mirror(record, fields)

    assert outcome == ("newer" if late else "done")
    if current == new == "running":
        assert late == (count(new_attempts) <= count(current_attempts))


# -- verify's comparison: rules.compared vs the Lua form PASS_BATCH uses ------------------------

COMPARED = LIBRARY.include("rules") + (
    "return {compared(load(KEYS[1]), load(KEYS[2])), stored_count(ARGV[1])}\n")


def test_verify_comparison_matches_compared(lua):
    """The comparison a standalone verify makes in Lua (rules.lua's ``compared``, and the count
    reader every script shares) gives what Redis Cluster's verify decides in Python."""
    script = lua.client.register_script(COMPARED)

    @lua.settings
    @given(pairs(), REVS)
    def check(pair, text):
        source, target = pair
        if not source or not target:
            return  # verify compares two present copies of the workspace
        a, b = lua.keys("source", "target")
        lua.put(a, source)
        lua.put(b, target)
        assert script(keys=[a, b], args=[text]) == [rules.compared(source, target),
                                                    rules.count(text)]

    check()


def test_compared_tells_a_target_that_moved_on_from_a_differing_one():
    base = {"workspace_id": WS, "job_id": JOB, "status": "pending", rules.REV: "1"}
    moved = {**base, "status": "running", rules.REV: "2"}
    assert rules.compared(base, dict(base)) == "same"
    assert rules.compared(base, moved) == "target_newer"
    assert rules.compared(moved, base) == "differing"  # the source is the newer one
    assert rules.compared(base, {**moved, "job_id": "job-2"}) == "differing"


# -- copies that expire apart: rules.expire_apart vs rules.lua's, which PASS_BATCH uses ---------

EXPIRE_APART = LIBRARY.include("rules") + (
    "return expire_apart(tonumber(ARGV[1]), tonumber(ARGV[2])) and 1 or 0\n")
GRACE = rules.EXPIRY_GRACE_MS
TTLS = [-2, -1, 0, 1, 1000, GRACE, GRACE + 1, GRACE + 1000, 2 * GRACE + 2, 86_400_000]


def test_expire_apart_matches_its_lua_form(lua):
    """Standalone verify decides in Lua whether two copies expire apart, Redis Cluster's (and a
    sampled verify) in Python: the same answer for every pair of PTTL replies."""
    script = lua.client.register_script(EXPIRE_APART)
    for a in TTLS:
        for b in TTLS:
            assert bool(script(keys=[], args=[a, b])) == rules.expire_apart(a, b), (a, b)
    assert rules.expire_apart(-1, 3000) and not rules.expire_apart(-1, -1)
    assert not rules.expire_apart(-2, -1) and not rules.expire_apart(1000, GRACE)
    assert rules.expire_apart(1000, GRACE + 1001)
