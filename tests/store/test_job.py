"""The job record: statuses, allowed moves, and its stored hash form."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobstore import Job, JobStatus
from jobstore.job import ALLOWED_MOVES, statuses_allowed_before


def test_allowed_moves_match_the_contract():
    moves = {(a.value, b.value) for a, targets in ALLOWED_MOVES.items() for b in targets}
    assert moves == {
        ("pending", "running"),
        ("pending", "cancelled"),
        ("running", "completed"),
        ("running", "failed"),
        ("running", "cancelled"),
    }
    assert all(s.is_terminal for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED))
    assert statuses_allowed_before(JobStatus.CANCELLED) == [JobStatus.PENDING, JobStatus.RUNNING]


def test_status_is_a_str_enum():
    assert JobStatus("running") is JobStatus.RUNNING
    assert JobStatus.RUNNING == "running"


def test_hash_form_is_strings_with_none_as_empty():
    job = Job("j1", "ws", "act", JobStatus.PENDING, {"b": [1, 2], "a": None}, None, None, 1.5, 2.25)
    stored = job.to_hash()
    assert all(isinstance(v, str) for v in stored.values())
    assert stored["result"] == "" and stored["error"] == ""
    assert stored["params"] == '{"a":null,"b":[1,2]}'
    assert stored["created_at"] == "1.5" and stored["updated_at"] == "2.25"
    assert Job.from_hash(stored) == job


@pytest.mark.parametrize("result", ["", 0, False, [], {"x": 1}, "text"])
def test_falsy_and_string_results_round_trip(result):
    job = Job("j1", "ws", "act", JobStatus.COMPLETED, {}, result, "boom", 1.0, 2.0)
    assert Job.from_hash(job.to_hash()).result == result


def test_job_is_immutable():
    job = Job("j1", "ws", "act", JobStatus.PENDING)
    with pytest.raises(AttributeError):
        job.status = JobStatus.RUNNING  # type: ignore[misc]


def test_records_from_older_code_decode():
    legacy = {"job_id": "j", "workspace_id": "w", "action": "a", "status": "completed",
              "params": "", "result": "plain text, not JSON", "error": "", "created_at": "3",
              "updated_at": "4", "priority": "high"}
    job = Job.from_hash(legacy)
    assert job.params == {} and job.result == "plain text, not JSON" and job.error is None


@given(st.dictionaries(
    st.one_of(st.text(), st.integers(), st.booleans()),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(st.characters(blacklist_categories=("Cs",))),
              st.lists(st.integers(), max_size=2), st.tuples(st.integers())),
    max_size=6))
def test_the_enqueue_shortcut_gives_exactly_what_the_stored_json_reads_back_as(params):
    """jobstore.job.plain_params skips decoding the JSON enqueue just wrote: where it
    answers, its answer is what a get() returns, key order included."""
    from jobstore.job import encode_json, plain_params
    try:
        decoded = json.loads(encode_json(params))
    except TypeError:  # keys of mixed types cannot be sorted: enqueue refuses these
        return
    plain = plain_params(params)
    if plain is not None:
        assert plain == decoded and list(plain) == list(decoded)
        assert [type(v) for v in plain.values()] == [type(v) for v in decoded.values()]
    if any(type(k) is not str for k in params) or any(isinstance(v, (list, tuple)) for v in params.values()):
        assert plain is None


@given(st.text(), st.text(), st.sampled_from(list(JobStatus)), st.integers(0, 9),
       st.one_of(st.none(), st.text()))
def test_the_fast_constructor_builds_what_the_dataclass_builds(job_id, ws, status, attempts, claim):
    """Job._of (enqueue and every read) sets each field Job(...) sets, no more and no less: a
    field added to Job and not to _of fails here."""
    import dataclasses
    import pickle

    values = (job_id, ws, "act", status, {"a": 1}, [1], "err", 1.5, 2.5, attempts, claim)
    made, built = Job(*values), Job._of(*values)
    assert built == made and repr(built) == repr(made)
    assert vars(built) == vars(made)
    assert [f.name for f in dataclasses.fields(Job)] == list(vars(built))
    assert pickle.loads(pickle.dumps(built)) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = JobStatus.FAILED  # type: ignore[misc]


def test_jobs_built_for_reads_are_as_small_as_those_built_by_init():
    """Job._of keeps the instances' __dict__s sharing their keys, as __init__ does: every read
    builds Jobs, and a page of them should not take twice the memory."""
    import sys

    values = ("j", "ws", "act", JobStatus.PENDING, {}, None, None, 1.0, 1.0, 0, None)
    made = [Job(*values) for _ in range(3)]
    built = [Job._of(*values) for _ in range(3)]
    assert sys.getsizeof(vars(built[-1])) <= sys.getsizeof(vars(made[-1]))


def test_a_subclass_of_job_is_built_by_its_own_init():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Tagged(Job):
        tags: list = dataclasses.field(default_factory=list)

        def __post_init__(self) -> None:
            object.__setattr__(self, "tags", [*self.tags, "seen"])

    job = Job("j1", "ws", "act", JobStatus.RUNNING, {"a": 1}, None, None, 1.5, 2.5, 1, "c")
    read = Tagged.from_hash(job.to_hash())
    assert type(read) is Tagged and read.tags == ["seen"] and read.job_id == "j1"
    assert read.claim == "c" and read.attempts == 1
